"""Plain-PyTorch reference of ``decode_linear``: ``F.linear``, the product it replaces."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def decode_linear_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (M, K), weight (N, K), bias (N,) or None; returns (M, N) in x's dtype."""
    return F.linear(x, weight, bias)
