"""The Triton norm as ``torch.library`` custom ops, so autograd and torch.compile see one op.

``seqmamba::rms_norm_fwd`` and ``seqmamba::rms_norm_bwd`` wrap the kernels; fake (meta)
implementations give torch.compile their output shapes, so a compiled model keeps the
norm inside its graph. The kernel module is imported on first use: Triton decides at
import time whether it interprets kernels (``TRITON_INTERPRET=1``).
"""
from __future__ import annotations

from typing import Any

import torch

from ..kernel_op import kernel_op
from .reference import residual_dtype


@kernel_op("seqmamba::rms_norm_fwd")
def rms_norm_fwd(
    x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None, eps: float, residual_in_fp32: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(normed, new_residual)`` for x, residual (..., hidden) and weight (hidden,)."""
    from .kernel import rms_norm_forward

    return rms_norm_forward(x, weight, residual, eps, residual_dtype(x.dtype, residual_in_fp32))


@rms_norm_fwd.register_fake
def _(x, weight, residual, eps, residual_in_fp32):
    return x.new_empty(x.shape), x.new_empty(x.shape, dtype=residual_dtype(x.dtype, residual_in_fp32))


@kernel_op("seqmamba::rms_norm_bwd")
def rms_norm_bwd(
    dnormed: torch.Tensor,
    dnew_residual: torch.Tensor | None,
    new_residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    x_dtype: torch.dtype,
    residual_dtype: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dx, dresidual, dweight)``; see ``kernel.rms_norm_backward``."""
    from .kernel import rms_norm_backward

    return rms_norm_backward(dnormed, dnew_residual, new_residual, weight, eps, x_dtype, residual_dtype)


@rms_norm_bwd.register_fake
def _(dnormed, dnew_residual, new_residual, weight, eps, x_dtype, residual_dtype):
    shape = new_residual.shape
    dr_shape, dr_dtype = (shape, residual_dtype) if residual_dtype is not None else ((0,), x_dtype)
    return (
        new_residual.new_empty(shape, dtype=x_dtype),
        new_residual.new_empty(dr_shape, dtype=dr_dtype),
        weight.new_empty(weight.shape),
    )


def _setup_context(ctx: Any, inputs: tuple, output: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, weight, residual, eps, _ = inputs
    ctx.save_for_backward(output[1], weight)
    ctx.eps = eps
    ctx.x_dtype = x.dtype
    ctx.residual_dtype = residual.dtype if residual is not None else None
    # An unused output's gradient arrives as None rather than a zero tensor to read.
    ctx.set_materialize_grads(False)


def _backward(ctx: Any, dnormed: torch.Tensor | None, dnew_residual: torch.Tensor | None) -> tuple:
    new_residual, weight = ctx.saved_tensors
    if dnormed is None:
        dnormed = torch.zeros_like(new_residual, dtype=ctx.x_dtype)
    dx, dresidual, dweight = rms_norm_bwd(
        dnormed, dnew_residual, new_residual, weight, ctx.eps, ctx.x_dtype, ctx.residual_dtype
    )
    return dx, dweight, dresidual if ctx.residual_dtype is not None else None, None, None


rms_norm_fwd.register_autograd(_backward, setup_context=_setup_context)
