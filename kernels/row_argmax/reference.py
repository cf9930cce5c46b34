"""Plain-PyTorch reference of ``row_argmax``: ``torch.argmax`` over the last axis."""
from __future__ import annotations

import torch


def row_argmax_reference(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """x (rows, V) -> (rows,) int64: each row's first maximum (a NaN counts as the maximum)."""
    if out is None:
        return torch.argmax(x, dim=-1)
    return torch.argmax(x, dim=-1, out=out)
