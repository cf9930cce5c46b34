"""Output buffers laid out in memory like an input."""
from __future__ import annotations

from collections.abc import Sequence

import torch


def empty_like_layout(x: torch.Tensor) -> torch.Tensor:
    """An uninitialised dense tensor of x's shape whose axes lie in memory in the order of
    x's strides (largest first), also when x is a slice that ``torch.empty_like`` would
    replace by a contiguous tensor.

    Why: a Mamba block's x, z and delta are (batch, D, L) views of (D, batch * L) matrix
    products, i.e. laid out (D, batch, L). Outputs in that layout keep the reshapes to
    and from the next projections' (batch * L, D) operands views instead of copies.
    """
    return empty_in_stride_order(x.shape, x.stride(), dtype=x.dtype, device=x.device)


def empty_in_stride_order(
    shape: Sequence[int], strides: Sequence[int], *, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """An uninitialised dense tensor of ``shape``, its axes in memory ordered as ``strides``
    order them (largest first; ties keep the axes' order)."""
    order = sorted(range(len(shape)), key=lambda i: (-strides[i], i))  # outermost axis first
    buffer = torch.empty([shape[i] for i in order], dtype=dtype, device=device)
    return buffer.permute([order.index(i) for i in range(len(shape))])
