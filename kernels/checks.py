"""Input checks shared by the public ops: clear ``ValueError``s that name the argument."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(
    op: str,
    name: str,
    x: object,
    shape: Sequence[int | None],
    *,
    dims: str,
    dtypes: Sequence[torch.dtype] = FLOAT_DTYPES,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Check that ``x`` is a tensor of ``shape`` (``None`` matches any size).

    ``dims`` names the expected axes for the message, e.g. ``"(batch, D, L)"``.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{op}: {name} must be a torch.Tensor of shape {dims}, got {type(x).__name__}")
    expected = tuple(shape)
    if x.dim() != len(expected) or any(e is not None and e != s for e, s in zip(expected, x.shape)):
        want = ", ".join("*" if e is None else str(e) for e in expected)
        raise ValueError(f"{op}: {name} must have shape {dims} = ({want}), got {tuple(x.shape)}")
    if x.dtype not in dtypes:
        raise ValueError(f"{op}: {name} has dtype {x.dtype}; supported: {', '.join(str(d) for d in dtypes)}")
    if device is not None and x.device != device:
        raise ValueError(f"{op}: {name} is on {x.device} but the other inputs are on {device}")
    return x


def check_sizes(op: str, name: str, x: torch.Tensor, axes: Sequence[str]) -> None:
    """Every axis of ``x`` (named by ``axes``, e.g. ("M", "K")) holds at least one element."""
    if min(x.shape) < 1:
        listed = ", ".join(axes[:-1]) + f" and {axes[-1]}" if len(axes) > 1 else axes[0]
        raise ValueError(f"{op}: {name} must have {listed} of at least 1, got shape {tuple(x.shape)}")


def first_id_outside(ids: torch.Tensor, limit: int, *, allowed: int | None = None) -> tuple[int, int] | None:
    """``(flat position, value)`` of the first entry of ``ids`` outside [0, limit) that is
    not ``allowed``, or None if there is none. Reads a result back to the host: on a GPU
    tensor it waits for the kernels queued before it."""
    bad = (ids < 0) | (ids >= limit)
    if allowed is not None:
        bad &= ids != allowed
    if not bool(bad.any()):
        return None
    index = int(bad.reshape(-1).nonzero()[0, 0])
    return index, int(ids.reshape(-1)[index])


def elements_overlap(t: torch.Tensor) -> bool:
    """True if two indices of ``t`` may share memory (e.g. an ``expand``ed view).

    Checks that, with axes sorted by stride, each stride reaches past the span of the
    smaller ones; every dense or sliced layout passes. Ops that write a tensor in place
    refuse overlapping ones.
    """
    span = 1
    for stride, size in sorted((t.stride(i), t.size(i)) for i in range(t.dim()) if t.size(i) > 1):
        if stride < span:
            return True
        span = stride * size
    return False


def check_eps(op: str, eps: object) -> None:
    """A norm's eps: a positive finite number (not a bool)."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"{op}: eps must be a positive finite number, got {eps!r}")
