"""Plain-PyTorch depthwise causal conv1d: the ground truth the Triton kernels are tested against.

For batch b, channel d and step l, with ``xp = [initial_state, x]`` along the length axis
(``width - 1`` state columns, zeros when no state is given):

    out[b, d, l] = act(bias[d] + sum_k weight[d, k] * xp[b, d, l + k])     k = 0 .. width-1

so tap ``width - 1`` multiplies the current input and tap 0 the oldest one. Without an
initial state this is exactly ``F.conv1d(x, weight[:, None, :], bias, padding=width - 1,
groups=D)[..., :L]``, the causal convolution of Mamba's block.

The final state is the last ``width - 1`` columns of ``xp``: passing it as the next call's
``initial_state`` makes two chained calls equal one call on the concatenated input.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the convolution accumulates in for inputs of ``dtype``."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def causal_conv1d_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    silu: bool = False,
    initial_state: torch.Tensor | None = None,
) -> torch.Tensor:
    """The convolution via ``F.conv1d`` in float32 (float64 for float64 inputs).

    Shapes: x (batch, D, L); weight (D, width); bias (D,); initial_state (batch, D, width-1).
    Returns out (batch, D, L) in x's dtype; differentiable in every tensor argument.
    """
    dtype = compute_dtype(x.dtype)
    dim, width = weight.shape
    x_c = x.to(dtype)
    if initial_state is None:
        # The layer's own formulation: pad both sides, keep the first L outputs.
        out = F.conv1d(x_c, weight.to(dtype)[:, None, :], _cast(bias, dtype), padding=width - 1, groups=dim)
        out = out[..., : x.shape[-1]]
    else:
        xp = torch.cat([initial_state.to(dtype), x_c], dim=-1)
        out = F.conv1d(xp, weight.to(dtype)[:, None, :], _cast(bias, dtype), groups=dim)
    if silu:
        out = F.silu(out)
    return out.to(x.dtype)


def final_conv_state(x: torch.Tensor, initial_state: torch.Tensor | None, width: int) -> torch.Tensor:
    """The last ``width - 1`` columns of ``[initial_state, x]``, in x's dtype.

    x: (batch, D, L); initial_state: (batch, D, width-1) or None (zeros).
    Returns a fresh contiguous (batch, D, width-1) tensor, differentiable in x and
    initial_state. Shared by every backend: it only moves inputs, so plain PyTorch is
    as fast as a kernel, and autograd routes its gradient into x and the state.
    """
    keep = width - 1
    length = x.shape[-1]
    if length >= keep:
        state = x[..., length - keep :]
    else:
        if initial_state is None:
            initial_state = x.new_zeros(*x.shape[:-1], keep)
        state = torch.cat([initial_state[..., length:], x], dim=-1)
    # A copy, never a view: a decoding cache must not keep the whole input alive.
    return state.to(x.dtype).clone(memory_format=torch.contiguous_format)


def _cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None else t.to(dtype)


def causal_conv1d_update_reference(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    silu: bool = False,
) -> torch.Tensor:
    """One decoding step: shift ``conv_state`` (batch, D, width) left, append x (batch, D),
    return ``act(bias + sum_k weight[:, k] * conv_state[..., k])`` (batch, D) in x's dtype."""
    conv_state.copy_(torch.cat([conv_state[..., 1:], x.unsqueeze(-1).to(conv_state.dtype)], dim=-1))
    acc = compute_dtype(x.dtype)
    out = (conv_state.to(acc) * weight.to(acc)).sum(dim=-1)
    if bias is not None:
        out = out + bias.to(acc)
    if silu:
        out = F.silu(out)
    return out.to(x.dtype)
