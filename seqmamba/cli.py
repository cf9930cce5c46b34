"""The ``seqmamba`` command line: ``seqmamba <command> ...``.

Each command lives in its own module of :mod:`seqmamba.commands` and is registered
in :data:`COMMANDS`. A command module provides ``SUMMARY`` (one line for the command
list), ``DESCRIPTION`` and ``EXAMPLES`` (for ``--help``), ``add_arguments(parser)`` and
``run(args) -> int``; it imports torch and Lightning inside ``run`` only, so ``--help``
stays fast.

User errors (a bad config, a missing file, an override without ``=``) print one line
``error: ...`` and exit with status 2; ``--traceback`` shows the full traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

# command name -> module implementing it. Add new commands here.
COMMANDS: dict[str, str] = {
    "train": "seqmamba.commands.train",
    "compare": "seqmamba.commands.compare",
    "evaluate": "seqmamba.commands.evaluate",
    "generate": "seqmamba.commands.generate",
    "config": "seqmamba.commands.config",
    "data": "seqmamba.commands.data",
    "embed": "seqmamba.commands.embed",
}

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="seqmamba",
        description="Sequence modeling (text, DNA, raw audio) on one Mamba backbone.",
        epilog="Run 'seqmamba <command> --help' for a command's options and examples.",
    )
    parser.add_argument("--traceback", action="store_true", help="on an error, show the full Python traceback")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(
            name,
            help=module.SUMMARY,
            description=module.DESCRIPTION,
            epilog=module.EXAMPLES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``seqmamba`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    module: ModuleType = args.module
    try:
        return int(module.run(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        if args.traceback:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
