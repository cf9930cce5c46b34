"""Plain-PyTorch references of ``decode_linear`` (``F.linear``, the product it replaces)
and of its two RMSNorm forms: a product whose input is a deferred RMSNorm's, and a
product followed by the residual add and a deferred RMSNorm."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def decode_linear_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (M, K), weight (N, K), bias (N,) or None; returns (M, N) in x's dtype."""
    return F.linear(x, weight, bias)


def deferred_rstd_reference(row_sumsq: torch.Tensor, dim: int, eps: float) -> torch.Tensor:
    """(M,) 1 / sqrt(mean square + eps) from (M, P) partial sums of squares over rows of
    ``dim`` elements, in row_sumsq's dtype (float32, or float64 for a float64 model)."""
    return torch.rsqrt(row_sumsq.sum(-1) / dim + eps)


def linear_deferred_norm_reference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, row_sumsq: torch.Tensor, eps: float
) -> torch.Tensor:
    """``F.linear`` of the normed rows ``x * rstd``, computed as ``(x @ weight.T) * rstd +
    bias`` in float32 (float64 for float64 x), rounded to x's dtype. x (M, K) are the
    norm's input times its weight, row_sumsq (M, P) the partial sums of squares of the
    norm's input rows."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = F.linear(x.to(acc), weight.to(acc)) * deferred_rstd_reference(row_sumsq, x.shape[-1], eps).to(acc)[:, None]
    if bias is not None:
        out = out + bias.to(acc)
    return out.to(x.dtype)


def linear_add_norm_reference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor,
    norm_weight: torch.Tensor, residual_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``out = F.linear(x, weight, bias)`` (rounded to x's dtype), ``new_residual =
    residual + out`` stored in residual_dtype, and the RMSNorm of new_residual with its
    1 / rms deferred: returns ``(new_residual * norm_weight`` in x's dtype, the sums of
    squares of new_residual's rows (M, 1) in float32 (float64 for float64 x),
    ``new_residual)``."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = F.linear(x, weight, bias)
    new_residual = (residual.to(acc) + out.to(acc)).to(residual_dtype)
    h = new_residual.to(acc)
    scaled = (h * norm_weight.to(acc)).to(x.dtype)
    return scaled, h.pow(2).sum(-1, keepdim=True), new_residual
