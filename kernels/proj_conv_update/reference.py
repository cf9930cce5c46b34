"""Plain-PyTorch references of ``proj_conv_update`` (the product, then the conv step) and
``norm_proj_conv_update`` (the residual add and RMSNorm before them).

The same arithmetic as the unfused decode step: ``F.linear`` in the inputs' dtype (its
result rounded to that dtype), the x half cast to the window's dtype, then
:func:`causal_conv1d_update_reference`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..causal_conv1d.reference import causal_conv1d_update_reference
from ..rmsnorm.reference import rms_norm_reference


def proj_conv_update_reference(
    hidden: torch.Tensor,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor | None,
    conv_state: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor | None,
    silu: bool,
) -> torch.Tensor:
    """hidden (batch, K), proj_weight (2 D, K), conv_state (batch, D, width), updated in
    place; returns (batch, 2 D) in hidden's dtype: the conv step's output, then z."""
    xz = F.linear(hidden, proj_weight, proj_bias)
    dim = conv_state.shape[1]
    x, z = xz[:, :dim], xz[:, dim:]
    x_conv = causal_conv1d_update_reference(x.to(conv_state.dtype), conv_state, conv_weight, conv_bias, silu)
    return torch.cat([x_conv.to(xz.dtype), z], dim=1)


def norm_proj_conv_update_reference(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    norm_weight: torch.Tensor,
    eps: float,
    residual_in_fp32: bool,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor | None,
    conv_state: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor | None,
    silu: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`rms_norm_reference` (the residual add and the norm), then
    :func:`proj_conv_update_reference` on the normed token. x, residual (batch, K);
    returns ((batch, 2 D), the new residual (batch, K))."""
    normed, new_residual = rms_norm_reference(x, norm_weight, residual, eps=eps, residual_in_fp32=residual_in_fp32)
    xz = proj_conv_update_reference(normed, proj_weight, proj_bias, conv_state, conv_weight, conv_bias, silu)
    return xz, new_residual
