"""The Triton conv as ``torch.library`` custom ops, so autograd and torch.compile see one op.

``seqmamba::causal_conv1d_fwd`` and ``seqmamba::causal_conv1d_bwd`` wrap the kernels;
fake (meta) implementations give torch.compile their output shapes without running
them, so a compiled model keeps the conv inside its graph. The kernel module is
imported on first use: Triton decides at import time whether it interprets kernels
(``TRITON_INTERPRET=1``), so importing it here would fix that choice too early.
"""
from __future__ import annotations

from typing import Any

import torch

from ..kernel_op import kernel_op
from ..layout import empty_like_layout


@kernel_op("seqmamba::causal_conv1d_fwd")
def causal_conv1d_fwd(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    initial_state: torch.Tensor | None,
    silu: bool,
) -> torch.Tensor:
    """out (batch, D, L) for x (batch, D, L), weight (D, width), bias (D,), initial_state (batch, D, width-1)."""
    from .kernel import causal_conv1d_forward

    return causal_conv1d_forward(x, weight, bias, initial_state, silu)


@causal_conv1d_fwd.register_fake
def _(x, weight, bias, initial_state, silu):
    return empty_like_layout(x)


@kernel_op("seqmamba::causal_conv1d_bwd", mutates_args=("dx_out",))
def causal_conv1d_bwd(
    dout: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    initial_state: torch.Tensor | None,
    silu: bool,
    dout2: torch.Tensor | None,
    dx_out: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dx, dweight, dbias, dinitial_state)``; see ``kernel.causal_conv1d_backward``.
    With ``dx_out`` dx is written there and an empty (0,) tensor takes its slot (an op's
    outputs must not alias its inputs)."""
    from .kernel import causal_conv1d_backward

    dx, dweight, dbias, dinit = causal_conv1d_backward(dout, x, weight, bias, initial_state, silu, dout2, dx_out)
    return (dx if dx_out is None else x.new_empty((0,))), dweight, dbias, dinit


@causal_conv1d_bwd.register_fake
def _(dout, x, weight, bias, initial_state, silu, dout2, dx_out):
    batch, dim, _ = x.shape
    width = weight.shape[1]
    bias_dtype = bias.dtype if bias is not None else weight.dtype
    return (
        empty_like_layout(x) if dx_out is None else x.new_empty((0,)),
        weight.new_empty(weight.shape),
        weight.new_empty((dim,), dtype=bias_dtype),
        x.new_empty((batch, dim, width - 1)),
    )


def _setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
    x, weight, bias, initial_state, silu = inputs
    ctx.save_for_backward(x, weight, bias, initial_state)
    ctx.silu = silu


def _backward(ctx: Any, dout: torch.Tensor) -> tuple:
    x, weight, bias, initial_state = ctx.saved_tensors
    # Every argument passed: the dispatcher finds the mutable one by its position.
    dx, dweight, dbias, dinit = causal_conv1d_bwd(dout, x, weight, bias, initial_state, ctx.silu, None, None)
    return (
        dx,
        dweight,
        dbias if bias is not None else None,
        dinit if initial_state is not None else None,
        None,
    )


causal_conv1d_fwd.register_autograd(_backward, setup_context=_setup_context)
