"""Triton kernels for one decoding step of the causal conv1d (see update.py).

The step: one program owns BLOCK_D channels of one batch row; it loads their
(BLOCK_D, width) window and taps, writes the shifted window back with x appended, and
the activated dot product as the output. Everything is read through strides. A caller
that knows the kernel before writes only x can have the rest read before the wait
(``early_loads``, kernels/dependent_launch.py).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import dependent_launch
from ..sizes import cdiv, next_power_of_2
from .kernel import _acc_dtype

BLOCK_D = 128


@triton.jit
def _update_kernel(
    x_ptr, state_ptr, w_ptr, bias_ptr, out_ptr,
    D, WIDTH,
    s_xb, s_xd, s_sb, s_sd, s_sk, s_wd, s_wk, s_ob, s_od,
    BLOCK_D: tl.constexpr, BLOCK_W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
    ACC: tl.constexpr, PDL: tl.constexpr, PREFETCH: tl.constexpr, LINES_W: tl.constexpr, EARLY: tl.constexpr,
):
    b = tl.program_id(1).to(tl.int64)
    offs_d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    k = tl.arange(0, BLOCK_W)
    mask = mask_d[:, None] & (k < WIDTH)[None, :]
    state_base = state_ptr + b * s_sb + offs_d[:, None] * s_sd
    if PDL and not EARLY:  # a dependent launch (kernels/dependent_launch.py): wait before any load
        if PREFETCH:  # ... but the windows and taps can be on their way to L2 meanwhile
            dependent_launch.prefetch_l2(state_ptr + b * s_sb + offs_d * s_sd, mask_d, WIDTH, s_sk, LINES_W)
            dependent_launch.prefetch_l2(w_ptr + offs_d * s_wd, mask_d, WIDTH, s_wk, LINES_W)
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    # With EARLY (the kernel just before writes only x) the window, taps and bias are read
    # before the wait; .cg: from L2, where earlier kernels' writes are.
    # The new window: columns 1 .. width-1 of the old one, then x.
    shifted = tl.load(state_base + (k[None, :] + 1) * s_sk, mask=mask & (k < WIDTH - 1)[None, :], other=0.0,
                      cache_modifier=".cg")
    taps = tl.load(w_ptr + offs_d[:, None] * s_wd + k[None, :] * s_wk, mask=mask, other=0.0).to(ACC)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(ACC)
    if PDL and EARLY:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    x = tl.load(x_ptr + b * s_xb + offs_d * s_xd, mask=mask_d, other=0.0)
    window = tl.where((k == WIDTH - 1)[None, :], x[:, None].to(shifted.dtype), shifted)
    # A thread may store a column another thread has still to read: all reads first.
    tl.debug_barrier()
    tl.store(state_base + k[None, :] * s_sk, window, mask=mask)
    out = tl.sum(window.to(ACC) * taps, axis=1)
    if HAS_BIAS:
        out += bias
    if SILU:
        out = out / (1.0 + tl.exp(-out))
    # Rounded to the window's dtype first, as the step's result is, then to out's.
    out = out.to(state_ptr.dtype.element_ty).to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + b * s_ob + offs_d * s_od, out, mask=mask_d)


def causal_conv1d_update_triton(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    silu: bool,
    out: torch.Tensor | None = None,
    early_loads: bool = False,
) -> torch.Tensor:
    """Launches the step kernel; updates conv_state in place, returns out (batch, D), in
    x's dtype unless an ``out`` buffer is given. ``out`` may be x itself: each program
    reads its x before it writes the same elements of out. ``early_loads``: a promise
    that the kernel launched just before writes nothing but x and waits for its own
    predecessor before it signals (a dependent launch of this package); the windows,
    taps and bias are then read before this kernel waits for it."""
    batch, dim = x.shape
    width = weight.shape[1]
    if out is None:
        out = torch.empty((batch, dim), dtype=x.dtype, device=x.device)
    grid = (cdiv(dim, BLOCK_D), batch)
    pdl = dependent_launch.enabled_for(x.device)
    _update_kernel[grid](
        x, conv_state, weight, bias if bias is not None else weight, out,
        dim, width,
        *x.stride(), *conv_state.stride(), *weight.stride(), *out.stride(),
        BLOCK_D=BLOCK_D, BLOCK_W=next_power_of_2(width), HAS_BIAS=bias is not None, SILU=silu,
        ACC=_acc_dtype(x.dtype), PDL=pdl, launch_pdl=pdl, PREFETCH=dependent_launch.prefetch_for(x.device),
        LINES_W=dependent_launch.prefetch_lines(width, conv_state.dtype, weight.dtype),
        EARLY=dependent_launch.early_loads_for(x.device, early_loads),
    )
    return out
