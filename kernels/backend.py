"""The one place that decides how a kernel op runs.

Every public op takes ``backend=None | "triton" | "reference" | ...``. ``None`` picks by
device: the Triton kernel for CUDA tensors, the plain-PyTorch reference elsewhere. A
requested backend that cannot run raises; nothing ever falls back silently.

Tests (and users comparing implementations) can change the default for a block of code
with :func:`use_backend`, so model code never has to know which backend runs it.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator, Sequence

import torch

# Looked up once: a lookup per call would break torch.compile graphs at every op.
_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None

# The default that use_backend sets: a module global, not a ContextVar, because
# torch.compile cannot trace ContextVar.get (every op would break the graph), while it
# reads a global and guards on its value (a compiled model recompiles when it changes).
# So it is process-wide: threads share it.
_default_backend: str | None = None


def triton_interpreter_enabled() -> bool:
    """True when Triton kernels run on the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@contextlib.contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """Run every op inside the block on ``name`` unless a call names its own backend.

    Process-wide (every thread sees it while the block runs); a model compiled with
    torch.compile recompiles when the setting differs from the one it was traced with.

    >>> with use_backend("reference"):
    ...     logits = model(tokens)
    """
    global _default_backend
    previous, _default_backend = _default_backend, name
    try:
        yield
    finally:
        _default_backend = previous


def resolve_backend(op: str, requested: str | None, device: torch.device, available: Sequence[str]) -> str:
    """Return the backend ``op`` runs on for tensors on ``device``.

    Args:
        op: the op's public name, used in error messages.
        requested: the caller's ``backend=`` argument (``None`` for automatic).
        device: where the op's inputs live.
        available: the backends this op implements, e.g. ``("triton", "reference")``.

    Raises:
        ValueError: for an unknown backend name, or for ``"triton"`` where no Triton
            kernel can run (CPU tensors without ``TRITON_INTERPRET=1``, or no Triton).
    """
    name = requested if requested is not None else _default_backend
    if name is None:
        if device.type == "cuda" and "triton" in available:
            _check_triton(op, device)
            return "triton"
        return "reference"
    if name not in available:
        raise ValueError(f"{op}: unknown backend {name!r}; choose one of {sorted(available)} or None (automatic)")
    if name == "triton":
        _check_triton(op, device)
    return name


def _check_triton(op: str, device: torch.device) -> None:
    if not _TRITON_INSTALLED:
        raise ValueError(f"{op}: backend 'triton' needs the triton package, which is not installed")
    if device.type == "cpu" and not triton_interpreter_enabled():
        raise ValueError(
            f"{op}: backend 'triton' got CPU tensors; move them to a CUDA device, set TRITON_INTERPRET=1 "
            "before importing seqmamba to run the kernel on the CPU interpreter, or use backend='reference'"
        )
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{op}: backend 'triton' runs on CUDA devices only, got tensors on {device}")
