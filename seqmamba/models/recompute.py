"""The mixer's region after in_proj as one autograd Function, with its gradients chained
by hand, and its memory-saving form (``ModelConfig.mixer_recompute``).

The region maps the in_proj output xz (batch, 2 * d_inner, L) to the gated scan output
y (batch, d_inner, L) and the final conv and SSM states: convolution and SiLU, x_proj
(Δ's low-rank input, B, C), dt_proj (Δ), selective scan. On the Triton kernels
(:class:`_FusedRegion`) the forward stores xz, x_proj's output x_dbl
(batch * L, dt_rank + 2 * d_state), the scan's chunk states (about d_state / 16 bytes
per channel and step), the weights, the initial states and, unless it recomputes, the
convolution output and Δ (each (batch, d_inner, L)). The backward reruns the
convolution and dt_proj if their outputs were not stored, takes B and C from x_dbl,
calls the scan's backward on the stored chunk states (the scan forward runs once), and
chains the gradients through dt_proj, x_proj and the convolution by hand, with the same
matrix products, in the same dtypes, that autograd runs for the region op by op.
Written by hand, the backward also saves what autograd cannot: the scan writes dz and
the convolution dx straight into the two halves of xz's gradient (no copies joining
them), and the convolution's backward adds the gradient reaching its output through
x_proj as it reads the scan's (no separate add).

On any other backend (the plain-PyTorch reference, a CPU without the Triton
interpreter) the scan is ordinary autograd ops with no chunk states to reuse: the
region runs op by op under autograd, or, recomputing, as :class:`_RecomputedRegion`,
which stores xz, the weights and the initial states and reruns the whole region under
autograd in its backward (activation checkpointing of the region). Both Functions record
the backend and autocast state of their forward and use them in the backward, wherever
the backward runs.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from seqmamba.kernels import causal_conv1d, use_backend
from seqmamba.kernels.backend import resolve_backend
from seqmamba.kernels.causal_conv1d.autograd import causal_conv1d_bwd, causal_conv1d_fwd
from seqmamba.kernels.layout import empty_like_layout
from seqmamba.kernels.selective_scan.custom_op import check_kernel_dtypes, selective_scan_bwd, selective_scan_fwd

from .region import RegionWeights, scan_inputs

# The backends seqmamba.kernels.selective_scan implements: only "triton" has the fused path.
_SCAN_BACKENDS = ("triton", "reference", "sequential")


Region = Callable[[Tensor, Tensor | None, Tensor | None, RegionWeights], tuple[Tensor, Tensor, Tensor]]


def mixer_region(
    region: Region,
    xz: Tensor,
    conv_state: Tensor | None,
    ssm_state: Tensor | None,
    weights: RegionWeights,
    *,
    recompute: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """``region(xz, conv_state, ssm_state, weights)``, differentiated as the module
    docstring says; ``recompute`` stores less and reruns more in the backward.

    region: the mixer's own region, run as it is where there is nothing to
        differentiate or no fused backward, and rerun under autograd by the non-Triton
        recomputing backward.
    xz: (batch, 2 * d_inner, L), the in_proj output (x then z along the channels).
    conv_state: (batch, d_inner, d_conv - 1) or None; ssm_state: (batch, d_inner,
        d_state) or None (the start of a sequence).
    Returns (y (batch, d_inner, L), final conv state, final ssm state), as ``region``
    does; differentiable in xz, both states and every weight.
    """
    inputs = (xz, conv_state, ssm_state, *weights)
    if not torch.is_grad_enabled() or not any(t is not None and t.requires_grad for t in inputs):
        return region(xz, conv_state, ssm_state, weights)
    backend = resolve_backend("selective_scan", None, xz.device, _SCAN_BACKENDS)
    if backend == "triton":
        return _FusedRegion.apply(recompute, *inputs)
    if recompute:
        return _RecomputedRegion.apply(region, backend, *inputs)
    return region(xz, conv_state, ssm_state, weights)


class _FusedRegion(torch.autograd.Function):
    """The region on the Triton ops, its gradients chained by hand (module docstring)."""

    @staticmethod
    def forward(
        ctx: Any,
        recompute: bool,
        xz: Tensor,
        conv_state: Tensor | None,
        ssm_state: Tensor | None,
        *weights: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        w = RegionWeights(*weights)
        d_inner = w.A_log.shape[0]
        x, z = xz[:, :d_inner], xz[:, d_inner:]
        # Autocast off, casts explicit: the product operands in xz's dtype, as autocast
        # gives them to the plain mixer, so that the backward (which runs without
        # autocast) rebuilds the same values.
        with torch.autocast(xz.device.type, enabled=False):
            u, conv_final = causal_conv1d(
                x, w.conv_weight[:, 0, :], w.conv_bias, activation="silu",
                initial_state=_conv_init(conv_state, xz.dtype), return_final_state=True, backend="triton",
            )
            x_dbl = F.linear(rearrange(u, "b d l -> (b l) d"), w.x_proj_weight.to(xz.dtype))
            scan = scan_inputs(x_dbl, w, xz.shape[-1])
            check_kernel_dtypes(u, scan.delta, scan.A, scan.B, scan.C, scan.D, z, scan.delta_bias, ssm_state)
            y, ssm_final, states = selective_scan_fwd(
                u, scan.delta, scan.A, scan.B, scan.C, scan.D, z, scan.delta_bias, ssm_state, True, True
            )
        kept = (None, None) if recompute else (u, scan.delta)
        ctx.save_for_backward(xz, x_dbl, states, *kept, conv_state, ssm_state, *weights)
        ctx.set_materialize_grads(False)
        return y, conv_final, ssm_final

    @staticmethod
    def backward(ctx: Any, dy: Tensor | None, dconv_final: Tensor | None, dssm_final: Tensor | None) -> tuple:
        xz, x_dbl, states, u, delta, conv_state, ssm_state, *weights = ctx.saved_tensors
        w = RegionWeights(*weights)
        d_inner, dt_rank = w.dt_proj_weight.shape
        length = xz.shape[-1]
        x, z = xz[:, :d_inner], xz[:, d_inner:]
        conv_weight = w.conv_weight[:, 0, :]  # (d_inner, d_conv)
        conv_init = _conv_init(conv_state, xz.dtype)

        # Autocast off as in the forward (a CPU backward runs on the caller's thread, in its autocast state).
        with torch.autocast(xz.device.type, enabled=False):
            if u is None:  # recomputed: the convolution output (batch, d_inner, L)
                u = causal_conv1d_fwd(x, conv_weight, w.conv_bias, conv_init, True)
            scan = scan_inputs(x_dbl, w, xz.shape[-1], delta)  # Δ recomputed unless kept
            if dy is None:
                dy = torch.zeros_like(u)
            # One gradient for xz, laid out like xz (in_proj's product), whose backward
            # then reads it in place; the scan writes its z half, the convolution its x half.
            dxz = empty_like_layout(xz)
            du, ddelta, dA, dB, dC, dD, _, ddelta_bias, dssm_init = selective_scan_bwd(
                u, scan.delta, scan.A, scan.B, scan.C, scan.D, z, scan.delta_bias, states, dy, dssm_final, True,
                dxz[:, d_inner:],
            )

            # Δ = W_dt @ dt^T with dt = x_dbl[:, :dt_rank]; the products as autograd's mm backward forms them.
            ddelta = rearrange(ddelta, "b d l -> d (b l)")  # a view: ddelta is laid out like Δ
            d_dt_proj_weight = ddelta.mm(x_dbl[:, :dt_rank])  # (d_inner, dt_rank)
            d_dt = scan.dt_proj_weight.t().mm(ddelta).t()  # (batch * L, dt_rank)
            dB, dC = (rearrange(g, "b n l -> (b l) n") for g in (dB, dC))
            dx_dbl = torch.cat([d_dt, dB, dC], dim=1)  # (batch * L, dt_rank + 2 * d_state)

            # x_dbl = u2 @ W_x^T with u2 = u as (batch * L, d_inner), laid out like u: (d_inner, batch * L).
            u2 = rearrange(u, "b d l -> (b l) d")
            x_proj_weight = w.x_proj_weight.to(xz.dtype)
            d_x_proj_weight = dx_dbl.t().mm(u2)  # (dt_rank + 2 * d_state, d_inner)
            du_through_x_proj = rearrange(x_proj_weight.t().mm(dx_dbl.t()).t(), "(b l) d -> b d l", l=length)

            _, d_conv_weight, d_conv_bias, dconv_init = causal_conv1d_bwd(
                du, x, conv_weight, w.conv_bias, conv_init, True, du_through_x_proj, dxz[:, :d_inner]
            )
            if dconv_final is not None:
                # The final conv state is the last d_conv - 1 columns of [conv_init, x].
                keep = dconv_final.shape[-1]
                from_x = min(keep, length)
                dxz[:, :d_inner, length - from_x :] += dconv_final[..., keep - from_x :]
                if conv_init is not None and from_x < keep:
                    dconv_init[..., length:] += dconv_final[..., : keep - from_x]

        return (
            None,
            dxz,
            None if conv_state is None else dconv_init.to(conv_state.dtype),
            None if ssm_state is None else dssm_init.to(ssm_state.dtype),
            d_conv_weight.unsqueeze(1),
            None if w.conv_bias is None else d_conv_bias,
            d_x_proj_weight.to(w.x_proj_weight.dtype),
            d_dt_proj_weight.to(w.dt_proj_weight.dtype),
            ddelta_bias.to(w.dt_proj_bias.dtype),
            (dA * scan.A).to(w.A_log.dtype),  # A = -exp(A_log): dA_log = dA * A
            dD.to(w.D.dtype),
        )


class _RecomputedRegion(torch.autograd.Function):
    """Any backend: the region runs without autograd, its backward reruns it with."""

    @staticmethod
    def forward(
        ctx: Any,
        region: Region,
        backend: str,
        xz: Tensor,
        conv_state: Tensor | None,
        ssm_state: Tensor | None,
        *weights: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        ctx.region, ctx.backend = region, backend
        device = xz.device.type
        ctx.autocast = (device, torch.get_autocast_dtype(device), torch.is_autocast_enabled(device))
        ctx.save_for_backward(xz, conv_state, ssm_state, *weights)
        ctx.set_materialize_grads(False)
        with use_backend(backend):
            return region(xz, conv_state, ssm_state, RegionWeights(*weights))

    @staticmethod
    def backward(ctx: Any, *grad_outputs: Tensor | None) -> tuple:
        needs = ctx.needs_input_grad[2:]
        leaves = [None if t is None else t.detach().requires_grad_(n) for t, n in zip(ctx.saved_tensors, needs)]
        device, dtype, enabled = ctx.autocast
        with torch.enable_grad(), use_backend(ctx.backend), torch.autocast(device, dtype=dtype, enabled=enabled):
            outputs = ctx.region(*leaves[:3], RegionWeights(*leaves[3:]))
        pairs = [(out, g) for out, g in zip(outputs, grad_outputs) if g is not None and out.requires_grad]
        if not pairs:
            return (None,) * (2 + len(needs))
        wanted = [t for t, n in zip(leaves, needs) if n]
        grads = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs], allow_unused=True))
        return (None, None, *(next(grads) if n else None for n in needs))


def _conv_init(conv_state: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if conv_state is None else conv_state.to(dtype)

