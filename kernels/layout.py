"""Output buffers laid out in memory like an input."""
from __future__ import annotations

import torch


def empty_like_layout(x: torch.Tensor, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An uninitialised dense tensor of x's shape whose axes lie in memory in the order of
    x's strides (largest first), also when x is a slice that ``torch.empty_like`` would
    replace by a contiguous tensor.

    Why: a Mamba block's x, z and delta are (batch, D, L) views of (D, batch * L) matrix
    products, i.e. laid out (D, batch, L). Outputs in that layout keep the reshapes to
    and from the next projections' (batch * L, D) operands views instead of copies.
    """
    order = sorted(range(x.dim()), key=lambda i: (-x.stride(i), i))  # outermost axis first
    buffer = torch.empty([x.shape[i] for i in order], dtype=x.dtype if dtype is None else dtype, device=x.device)
    return buffer.permute([order.index(i) for i in range(x.dim())])
