"""Plain-PyTorch reference of ``proj_conv_update``: the product, then the conv step.

The same arithmetic as the unfused decode step: ``F.linear`` in the inputs' dtype (its
result rounded to that dtype), the x half cast to the window's dtype, then
:func:`causal_conv1d_update_reference`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..causal_conv1d.reference import causal_conv1d_update_reference
from ..decode_linear.reference import linear_deferred_norm_reference


def proj_conv_update_reference(
    hidden: torch.Tensor,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor | None,
    conv_state: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor | None,
    silu: bool,
    row_sumsq: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """hidden (batch, K), proj_weight (2 D, K), conv_state (batch, D, width), updated in
    place; returns (batch, 2 D) in hidden's dtype: the conv step's output, then z. With
    row_sumsq (batch, P), hidden holds a deferred RMSNorm's rows (decode_linear's
    NormedRows) and the product is that of the normed rows."""
    if row_sumsq is None:
        xz = F.linear(hidden, proj_weight, proj_bias)
    else:
        xz = linear_deferred_norm_reference(hidden, proj_weight, proj_bias, row_sumsq, eps)
    dim = conv_state.shape[1]
    x, z = xz[:, :dim], xz[:, dim:]
    x_conv = causal_conv1d_update_reference(x.to(conv_state.dtype), conv_state, conv_weight, conv_bias, silu)
    return torch.cat([x_conv.to(xz.dtype), z], dim=1)
