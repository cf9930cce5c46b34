"""``row_argmax``: the index of each row's maximum, as ``torch.argmax(x, dim=-1)``.

Greedy decoding takes it over a (batch, vocab) block of logits every token; on the
Triton path each row is split over many programs (kernel.py), where torch's reduction
walks a row with few. The Triton path is the custom op ``seqmamba::row_argmax``, which
writes into a given ``out`` (declared as mutated), so a recorded decode step can put
the tokens straight into the buffer the next step reads.
"""
from __future__ import annotations

import torch

from ..backend import resolve_backend
from ..checks import check_sizes, check_tensor
from .reference import row_argmax_reference

OP = "row_argmax"
BACKENDS = ("triton", "reference")
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def row_argmax(x: torch.Tensor, out: torch.Tensor | None = None, backend: str | None = None) -> torch.Tensor:
    """Each row's first maximum: ``torch.argmax(x, dim=-1)`` (a NaN counts as the maximum).

    Args:
        x: (rows, V) floating point, any strides (a slice of wider logits is fine).
        out: (rows,) int64 to write into; a new tensor when None.
        backend: None (Triton on CUDA, the reference elsewhere), "triton" or "reference".

    Returns:
        (rows,) int64: ``out`` when given.

    Raises:
        ValueError: naming the argument whose shape, dtype or device is wrong, or for a
            backend that cannot run here.
    """
    check_tensor(OP, "x", x, (None, None), dims="(rows, V)")
    check_sizes(OP, "x", x, ("rows", "V"))
    rows = x.shape[0]
    if out is None:
        out = torch.empty(rows, dtype=torch.long, device=x.device)
    else:
        check_tensor(OP, "out", out, (rows,), dims="(rows,)", dtypes=(torch.long,), device=x.device)
    name = resolve_backend(OP, backend, x.device, BACKENDS)
    if name == "triton":
        if x.dtype not in TRITON_DTYPES:
            raise ValueError(f"{OP}: the Triton kernel takes x in float16, bfloat16 or float32, got {x.dtype}; "
                             f"use backend='reference'")
        row_argmax_op(x, out)
        return out
    return row_argmax_reference(x, out)


@torch.library.custom_op("seqmamba::row_argmax", mutates_args=("out",))
def row_argmax_op(x: torch.Tensor, out: torch.Tensor) -> None:
    """The Triton kernel as one op: writes each row's argmax into ``out``."""
    from .kernel import row_argmax_triton

    row_argmax_triton(x, out)


@row_argmax_op.register_fake
def _(x, out):
    return None
