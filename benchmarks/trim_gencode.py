"""Keep one GPU architecture in the setup.py of mamba_ssm or causal_conv1d.

Their setup.py files append a ``-gencode`` pair for every architecture from sm_75 to
sm_121; building all of them takes far longer than the one a benchmark machine has.
``benchmarks/build_anchor.sh`` runs this before building:

    python3 benchmarks/trim_gencode.py 90 causal_conv1d-1.7.0/setup.py mamba_ssm-2.3.2.post1/setup.py
"""
from __future__ import annotations

import re
import sys

PAIR = re.compile(
    r'^([ \t]*)cc_flag\.append\("-gencode"\)\n[ \t]*cc_flag\.append\("arch=compute_(\d+),code=sm_\d+"\)\n', re.M
)


def keep_arch(text: str, arch: str, *, name: str = "setup.py") -> str:
    """``text`` with every other architecture's pair replaced by ``pass`` (the if-blocks
    around them stay valid Python). Raises ValueError unless exactly ``arch`` remains."""
    trimmed = PAIR.sub(lambda m: m.group(0) if m.group(2) == arch else m.group(1) + "pass\n", text)
    compile(trimmed, name, "exec")
    left = re.findall(r"arch=compute_\d+,code=sm_\d+", trimmed)
    if left != [f"arch=compute_{arch},code=sm_{arch}"]:
        raise ValueError(f"{name}: expected exactly sm_{arch} to remain, found {left}")
    return trimmed


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python3 benchmarks/trim_gencode.py ARCH SETUP_PY...", file=sys.stderr)
        return 2
    arch, paths = argv[0], argv[1:]
    for path in paths:
        with open(path) as f:
            text = keep_arch(f.read(), arch, name=path)
        with open(path, "w") as f:
            f.write(text)
        print(f"{path}: building for sm_{arch} only")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
