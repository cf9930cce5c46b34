"""Triton kernel: the decode step's input projection with the conv step as its epilogue.

Grid (2 cdiv(D, BLOCK_N), cdiv(batch, BLOCK_M)). A program computes a [BLOCK_M, BLOCK_N]
tile of ``hidden @ proj_weight.T`` (its rows' whole K loop, float32 accumulation). Tiles
of the first D columns (x) go on through the conv step: the program shifts its rows'
and channels' windows left, appends the new x, and writes act(bias + taps . window);
tiles of the last D columns (z) are written as they are. Every window element belongs
to one program, so programs need no synchronisation.

At decoding batch sizes the product is a matrix-vector product: bound by reading the
weight once, and by launch latency. Fusing the conv step removes one kernel per layer
(its launch, its gap and its re-read of x) from every decoded token. Where the batch
is larger than FUSED_MAX_BATCH the op runs the product alone (kernels/decode_linear,
whose rule picks its Triton kernel or cuBLAS's) and then the conv step kernel (writing
its output over the x half of the product's result).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import dependent_launch
from ..causal_conv1d.kernel import _acc_dtype
from ..causal_conv1d.update_kernel import causal_conv1d_update_triton
from ..decode_linear.kernel import (
    decode_linear_triton,
    deferred_rstd,
    dot_precision,
    row_tile_product,
    runs_as_dependent_launch,
)
from ..sizes import cdiv, next_power_of_2

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages[, RELOAD]): RELOAD 1 runs the conv step
# on the x tile read back from memory, in a layout of its own (default 0).
Launch = tuple[int, ...]


@triton.jit
def _conv_inputs(base, s_sk, mask_w, j, cw_ptr, cb_ptr, chan, mask_c, s_cd, s_ck, x_half,
                 WIDTH: tl.constexpr, HAS_CONV_BIAS: tl.constexpr, ACC: tl.constexpr):
    """The conv step's inputs for a tile: the window without its oldest input
    (BLOCK_M, BLOCK_N, BLOCK_W; .cg: from L2, where earlier kernels' writes are), the taps
    (BLOCK_N, BLOCK_W) and the bias (BLOCK_N,; 0 without one), in ACC; all masked off
    unless ``x_half``."""
    shifted = tl.load(base + s_sk, mask=mask_w & (j < WIDTH - 1)[None, None, :], other=0.0, cache_modifier=".cg")
    taps = tl.load(cw_ptr + chan[:, None] * s_cd + j[None, :] * s_ck,
                   mask=mask_c[:, None] & (j < WIDTH)[None, :] & x_half, other=0.0).to(ACC)
    conv_bias = 0.0
    if HAS_CONV_BIAS:
        conv_bias = tl.load(cb_ptr + chan, mask=mask_c & x_half, other=0.0).to(ACC)
    return shifted, taps, conv_bias


@triton.jit
def _proj_conv_kernel(
    h_ptr, w_ptr, pb_ptr, state_ptr, cw_ptr, cb_ptr, out_ptr, sumsq_ptr,
    BATCH, D, K, P, inv_k, eps,
    s_hb, s_hk, s_wn, s_wk, s_sb, s_sd, s_sk, s_cd, s_ck, s_ob, s_on, s_qb,
    WIDTH: tl.constexpr, BLOCK_W: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, K_CHUNKS: tl.constexpr,
    HAS_PROJ_BIAS: tl.constexpr, HAS_CONV_BIAS: tl.constexpr, SILU: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr, ACC: tl.constexpr, PDL: tl.constexpr,
    PREFETCH: tl.constexpr, LINES_K: tl.constexpr, LINES_W: tl.constexpr, EARLY: tl.constexpr,
    ROW_NORM: tl.constexpr, BLOCK_P: tl.constexpr, RELOAD: tl.constexpr,
):
    blocks_per_half = tl.cdiv(D, BLOCK_N)
    pid_n = tl.program_id(0)
    half = pid_n // blocks_per_half  # 0: x columns, 1: z columns
    chan = (pid_n % blocks_per_half) * BLOCK_N + tl.arange(0, BLOCK_N)  # channel within the half
    mask_c = chan < D
    cols = half * D + chan
    rows = tl.program_id(1).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_r = rows < BATCH
    mask = mask_r[:, None] & mask_c[None, :]
    # The conv step's window (BLOCK_M, BLOCK_N, BLOCK_W), oldest input first, and taps;
    # read by the x columns' programs only (masked off in the z columns').
    j = tl.arange(0, BLOCK_W)
    mask_w = mask[:, :, None] & (j < WIDTH)[None, None, :] & (half == 0)
    base = state_ptr + rows[:, None, None] * s_sb + chan[None, :, None] * s_sd + j[None, None, :] * s_sk
    if PDL:  # a dependent launch (kernels/dependent_launch.py): wait before any load
        if PREFETCH:  # ... but the weight and the windows can be on their way to L2 meanwhile
            dependent_launch.prefetch_l2(w_ptr + cols * s_wn, mask_c, K, s_wk, LINES_K)
            if half == 0 and (RELOAD or not EARLY):
                dependent_launch.prefetch_l2(state_ptr + rows[:, None] * s_sb + chan[None, :] * s_sd,
                                             mask, WIDTH, s_sk, LINES_W)
                dependent_launch.prefetch_l2(cw_ptr + chan * s_cd, mask_c, WIDTH, s_ck, LINES_W)
        if RELOAD or not EARLY:
            tl.extra.cuda.gdc_wait()
            tl.extra.cuda.gdc_launch_dependents()
    if not RELOAD:
        # With EARLY (the caller's promise that the kernel before writes no window) the
        # windows and taps are read before the wait, else after it.
        shifted, taps, conv_bias = _conv_inputs(base, s_sk, mask_w, j, cw_ptr, cb_ptr, chan, mask_c, s_cd, s_ck,
                                                half == 0, WIDTH, HAS_CONV_BIAS, ACC)
        if PDL and EARLY:
            tl.extra.cuda.gdc_wait()
            tl.extra.cuda.gdc_launch_dependents()

    rstd = 1.0
    if ROW_NORM:  # hidden holds a deferred RMSNorm's rows: their 1 / rms scales the product's
        rstd = deferred_rstd(sumsq_ptr, rows, mask_r, s_qb, P, inv_k, eps, BLOCK_P)
    acc = row_tile_product(h_ptr, w_ptr, pb_ptr, rows, cols, mask_r, mask_c, K, s_hb, s_hk, s_wn, s_wk,
                           HAS_PROJ_BIAS, BLOCK_M, BLOCK_N, BLOCK_K, K_CHUNKS, PRECISION, UPCAST, ROW_NORM, rstd)
    # Rounded to the model's dtype, as the unfused product's output is.
    xz = acc.to(out_ptr.dtype.element_ty)
    out_ptrs = out_ptr + rows[:, None] * s_ob + cols[None, :] * s_on
    if half == 1:
        tl.store(out_ptrs, xz, mask=mask)
    else:
        if RELOAD:
            # The conv step in a register layout of its own rather than the dot's (which
            # at 64-row tiles holds dozens of window values a thread): the x tile goes
            # through memory, written and read back by this program's own threads
            # after a barrier (which orders their global accesses), and the windows and
            # taps are read only now, not held through the product.
            tl.store(out_ptrs, xz, mask=mask)
            tl.debug_barrier()
            xz = tl.load(out_ptrs, mask=mask, other=0.0)
            shifted, taps, conv_bias = _conv_inputs(base, s_sk, mask_w, j, cw_ptr, cb_ptr, chan, mask_c, s_cd, s_ck,
                                                    True, WIDTH, HAS_CONV_BIAS, ACC)
        # The conv step on the tile: the window shifted left, the new x last.
        x = xz.to(state_ptr.dtype.element_ty)
        window = tl.where((j == WIDTH - 1)[None, None, :], x[:, :, None], shifted)
        # A thread may store a column another thread has still to read: all reads first.
        tl.debug_barrier()
        tl.store(base, window, mask=mask_w)
        conv = tl.sum(window.to(ACC) * taps[None, :, :], axis=2)
        if HAS_CONV_BIAS:
            conv += conv_bias[None, :]
        if SILU:
            conv = conv / (1.0 + tl.exp(-conv))
        # As the unfused step: the conv output in the window's dtype, then the model's.
        conv = conv.to(state_ptr.dtype.element_ty).to(out_ptr.dtype.element_ty)
        tl.store(out_ptrs, conv, mask=mask)

# Up to this many rows the fused kernel is faster than cuBLAS's product plus the conv
# step kernel; beyond it (64 rows on an H100, proj_conv_tuning.py) the product's tiles
# need more registers and stages than the epilogue leaves, and the op runs the two.
FUSED_MAX_BATCH = 16


def default_launch(batch: int, dim: int) -> Launch | None:
    """Block sizes for ``batch`` rows and ``dim`` channels a half, or None where the
    product and the conv step run as two kernels (see FUSED_MAX_BATCH)."""
    if batch > FUSED_MAX_BATCH:
        return None
    # 16 columns a program: 192 programs at the Mamba-130M shape, every SM streaming
    # weight rows (an H100 sweep preferred it to 32 and 64 at batch 1 and 16).
    return 16, 16, 256, 4, 3


def proj_conv_update_triton(
    hidden: torch.Tensor,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor | None,
    conv_state: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor | None,
    silu: bool,
    launch: Launch | None = None,
    early_loads: bool = False,
    row_sumsq: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Launches the kernel; updates conv_state in place, returns (batch, 2 D) in hidden's
    dtype: the conv step's output, then z. ``early_loads``, ``row_sumsq``, ``eps``: see
    the public op."""
    batch, k = hidden.shape
    dim, width = conv_weight.shape
    launch = launch or default_launch(batch, dim)
    if launch is None:
        xz = decode_linear_triton(hidden, proj_weight, proj_bias, row_sumsq=row_sumsq, eps=eps)
        # Where the product ran as this package's dependent launch (it waits, then signals),
        # the conv step may read its windows and taps while the product still runs.
        causal_conv1d_update_triton(xz[:, :dim], conv_state, conv_weight, conv_bias, silu, out=xz[:, :dim],
                                    early_loads=runs_as_dependent_launch(hidden, proj_weight))
        return xz
    block_m, block_n, block_k, warps, stages, *reload = launch
    precision, upcast = dot_precision(hidden.dtype)
    out = torch.empty((batch, 2 * dim), dtype=hidden.dtype, device=hidden.device)
    grid = (2 * cdiv(dim, block_n), cdiv(batch, block_m))
    pdl = dependent_launch.enabled_for(hidden.device)
    sumsq = row_sumsq if row_sumsq is not None else out  # never read without ROW_NORM
    parts = row_sumsq.shape[1] if row_sumsq is not None else 1
    _proj_conv_kernel[grid](
        hidden, proj_weight, proj_bias if proj_bias is not None else proj_weight, conv_state, conv_weight,
        conv_bias if conv_bias is not None else conv_weight, out, sumsq,
        batch, dim, k, parts, 1.0 / k, eps,
        *hidden.stride(), *proj_weight.stride(), *conv_state.stride(), *conv_weight.stride(), *out.stride(),
        sumsq.stride(0),
        WIDTH=width, BLOCK_W=next_power_of_2(width),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, K_CHUNKS=cdiv(k, block_k),
        HAS_PROJ_BIAS=proj_bias is not None, HAS_CONV_BIAS=conv_bias is not None, SILU=silu,
        PRECISION=precision, UPCAST=upcast,
        ACC=_acc_dtype(conv_state.dtype),
        PDL=pdl, launch_pdl=pdl, num_warps=warps, num_stages=stages,
        PREFETCH=dependent_launch.prefetch_for(hidden.device),
        LINES_K=dependent_launch.prefetch_lines(k, proj_weight.dtype),
        LINES_W=dependent_launch.prefetch_lines(width, conv_state.dtype, conv_weight.dtype),
        EARLY=dependent_launch.early_loads_for(hidden.device, early_loads),
        ROW_NORM=row_sumsq is not None, BLOCK_P=next_power_of_2(parts), RELOAD=bool(reload and reload[0]),
    )
    return out
