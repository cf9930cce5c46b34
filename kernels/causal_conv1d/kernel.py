"""Triton kernels for the depthwise causal conv1d, forward and backward.

The kernels index the length axis in "extended" coordinates ``e`` over
``xp = [initial_state, x]`` (``KEEP = width - 1`` state columns first), where
``out[l] = act(bias + sum_k w[k] * xp[l + k])``. Each program owns a
[BLOCK_D, BLOCK_L] tile of one batch row and reads the columns it needs around it as
shifted tile loads (``width`` of them): the overlap comes from cache, so global memory
sees each input about once. Inputs are read through their strides, so a channel-last
view (stride 1 over D, as ``x.transpose`` of a projection gives) needs no copy; out and
dx are laid out in memory like x (:func:`~seqmamba.kernels.layout.empty_like_layout`).

Backward, with ``g = d out * act'(pre)`` (pre recomputed from x, not stored by the
forward), in two kernels: the first writes g once per output into an fp32 buffer, with
the weight and bias gradients; the second forms d xp from g at the ``width`` shifts:

    d xp[e]   = sum_k w[k] * g[e - k]          (e < KEEP: d initial_state, else d x)
    d w[k]    = sum_{b, l} g[l] * xp[l + k]
    d bias    = sum_{b, l} g[l]

Weight and bias gradients are summed per program into a (batch, L-blocks, D, ...)
fp32 buffer and reduced afterwards, which keeps them deterministic (no atomics).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..backend import triton_interpreter_enabled
from ..layout import empty_in_stride_order, empty_like_layout
from ..sizes import cdiv, next_power_of_2
from ..triton_math import fast_math, sigmoid

# (BLOCK_D, BLOCK_L) by memory layout (is L the contiguous axis?), the contiguous axis
# long so loads coalesce. Every kernel holds a few tiles per element (width shifted
# input tiles at most), 8 elements per thread with 4 warps.
GPU_TILES = {True: (16, 64), False: (64, 16)}
# The Triton interpreter (TRITON_INTERPRET=1) executes programs one after another and
# pays per program, not per element: larger tiles, same index arithmetic.
INTERPRETER_TILES = {True: (32, 128), False: (128, 32)}
# Length tiles per program of the backward's first kernel: its weight and bias sums are
# reduced once per program. (The interpreter: 2, so that tests walk several.)
GPU_BWD_TILES = 8
INTERPRETER_BWD_TILES = 2
_NUM_WARPS = 4


@triton.jit
def _load_xp(x_ptr, init_ptr, b, offs_d, mask_d, e, L, near_start,
             s_xb, s_xd, s_xl, s_ib, s_id, s_ik,
             KEEP: tl.constexpr, HAS_INIT: tl.constexpr, ACC: tl.constexpr):
    """xp[b, offs_d, e] as an ACC [BLOCK_D, BLOCK_L] tile; zero outside [0, KEEP + L).

    ``near_start``: whether this program's tile can reach the state columns; the other
    programs skip those loads (a branch, so their registers are not held everywhere).
    """
    in_x = (e >= KEEP) & (e < L + KEEP)
    ptrs = x_ptr + b * s_xb + offs_d[:, None] * s_xd + (e - KEEP)[None, :] * s_xl
    xp = tl.load(ptrs, mask=mask_d[:, None] & in_x[None, :], other=0.0).to(ACC)
    if HAS_INIT:
        if near_start:
            in_init = (e >= 0) & (e < KEEP)
            ptrs = init_ptr + b * s_ib + offs_d[:, None] * s_id + e[None, :] * s_ik
            xp += tl.load(ptrs, mask=mask_d[:, None] & in_init[None, :], other=0.0).to(ACC)
    return xp


@triton.jit
def _taps(w_ptr, bias_ptr, offs_d, mask_d, s_wd, s_wk,
          WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, ACC: tl.constexpr):
    """(taps, bias): a tuple of the WIDTH weight columns and the bias, each [BLOCK_D, 1]."""
    taps = ()
    for k in tl.static_range(WIDTH):
        taps = taps + (tl.load(w_ptr + offs_d * s_wd + k * s_wk, mask=mask_d, other=0.0).to(ACC)[:, None],)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(ACC)[:, None]
    else:
        bias = tl.zeros_like(taps[0])
    return taps, bias


@triton.jit
def _program_rows(D, BLOCK_D: tl.constexpr):
    """(length-tile index, batch row, channel offsets, channel mask) of this program;
    grid: (length tiles, channel blocks, batch)."""
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    return tl.program_id(0), tl.program_id(2).to(tl.int64), offs_d, offs_d < D


@triton.jit
def _causal_conv1d_fwd_kernel(
    x_ptr, w_ptr, bias_ptr, init_ptr, out_ptr, D, L,
    s_xb, s_xd, s_xl, s_wd, s_wk, s_ib, s_id, s_ik, s_ob, s_od, s_ol,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, SILU: tl.constexpr,
    ACC: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, FAST_MATH: tl.constexpr,
):
    pid_l, b, offs_d, mask_d = _program_rows(D, BLOCK_D)
    offs_l = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    near_start = pid_l * BLOCK_L < WIDTH - 1  # output l reads xp[l .. l + WIDTH - 1]
    taps, acc = _taps(w_ptr, bias_ptr, offs_d, mask_d, s_wd, s_wk, WIDTH, HAS_BIAS, ACC)
    for k in tl.static_range(WIDTH):
        acc += taps[k] * _load_xp(x_ptr, init_ptr, b, offs_d, mask_d, offs_l + k, L, near_start,
                                  s_xb, s_xd, s_xl, s_ib, s_id, s_ik, WIDTH - 1, HAS_INIT, ACC)
    if SILU:
        if FAST_MATH:
            acc = acc * sigmoid(acc, True)
        else:
            acc = acc / (1.0 + tl.exp(-acc))
    out_ptrs = out_ptr + b * s_ob + offs_d[:, None] * s_od + offs_l[None, :] * s_ol
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask_d[:, None] & (offs_l < L)[None, :])


@triton.jit
def _causal_conv1d_bwd_g_kernel(
    x_ptr, w_ptr, bias_ptr, init_ptr, dout_ptr, g_ptr, dw_part_ptr, db_part_ptr, D, L,
    s_xb, s_xd, s_xl, s_wd, s_wk, s_ib, s_id, s_ik, s_gb, s_gd, s_gl, s_ob, s_od, s_ol,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, SILU: tl.constexpr,
    ACC: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, TILES: tl.constexpr,
    FAST_MATH: tl.constexpr,
):
    """g[l] = d out[l] * act'(pre[l]) over TILES consecutive (BLOCK_D, BLOCK_L) tiles of
    outputs, and their share of d bias = sum g and d w[j] = sum g[l] * xp[l + j]. The
    sums are kept per element across the tiles and reduced over L once at the end: the
    reduction crosses warps, which costs more than a tile's own work."""
    pid_l, b, offs_d, mask_d = _program_rows(D, BLOCK_D)
    taps, bias = _taps(w_ptr, bias_ptr, offs_d, mask_d, s_wd, s_wk, WIDTH, HAS_BIAS, ACC)
    db = tl.zeros((BLOCK_D, BLOCK_L), dtype=ACC)
    dws = ()
    for j in tl.static_range(WIDTH):
        dws = dws + (tl.zeros((BLOCK_D, BLOCK_L), dtype=ACC),)
    tile = 0
    while tile < TILES:
        l0 = (pid_l * TILES + tile) * BLOCK_L
        tile += 1
        offs_l = l0 + tl.arange(0, BLOCK_L)
        mask = mask_d[:, None] & (offs_l < L)[None, :]
        near_start = l0 < WIDTH - 1  # output l reads xp[l .. l + WIDTH - 1]
        xps = ()
        pre = bias
        for j in tl.static_range(WIDTH):
            xp = _load_xp(x_ptr, init_ptr, b, offs_d, mask_d, offs_l + j, L, near_start,
                          s_xb, s_xd, s_xl, s_ib, s_id, s_ik, WIDTH - 1, HAS_INIT, ACC)
            pre += taps[j] * xp
            xps = xps + (xp,)
        g = tl.load(dout_ptr + b * s_gb + offs_d[:, None] * s_gd + offs_l[None, :] * s_gl, mask=mask,
                    other=0.0).to(ACC)
        if SILU:
            sig = sigmoid(pre, FAST_MATH)
            g = g * sig * (1.0 + pre * (1.0 - sig))
        tl.store(g_ptr + b * s_ob + offs_d[:, None] * s_od + offs_l[None, :] * s_ol, g, mask=mask)
        db += g
        summed = ()
        for j in tl.static_range(WIDTH):
            summed = summed + (dws[j] + g * xps[j],)
        dws = summed
    part = (b * tl.num_programs(0) + pid_l) * D + offs_d
    tl.store(db_part_ptr + part, tl.sum(db, axis=1), mask=mask_d)
    for j in tl.static_range(WIDTH):
        tl.store(dw_part_ptr + part * WIDTH + j, tl.sum(dws[j], axis=1), mask=mask_d)


@triton.jit
def _causal_conv1d_bwd_dx_kernel(
    g_ptr, w_ptr, dx_ptr, dinit_ptr, D, L,
    s_gb, s_gd, s_gl, s_wd, s_wk, s_dxb, s_dxd, s_dxl,
    WIDTH: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
):
    """d xp[e] = sum_k w[k] * g[e - k] over one (BLOCK_D, BLOCK_L) tile of extended
    positions e: d x for e >= KEEP, d initial_state below."""
    KEEP: tl.constexpr = WIDTH - 1
    pid_l, b, offs_d, mask_d = _program_rows(D, BLOCK_D)
    e = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    g_rows = g_ptr + b * s_gb + offs_d[:, None] * s_gd
    dxp = tl.zeros((BLOCK_D, BLOCK_L), dtype=ACC)
    for k in tl.static_range(WIDTH):
        w_k = tl.load(w_ptr + offs_d * s_wd + k * s_wk, mask=mask_d, other=0.0).to(ACC)[:, None]
        l = e - k
        g_k = tl.load(g_rows + l[None, :] * s_gl, mask=mask_d[:, None] & ((l >= 0) & (l < L))[None, :], other=0.0)
        dxp += w_k * g_k
    in_x = (e >= KEEP) & (e < L + KEEP)
    dx_ptrs = dx_ptr + b * s_dxb + offs_d[:, None] * s_dxd + (e - KEEP)[None, :] * s_dxl
    tl.store(dx_ptrs, dxp.to(dx_ptr.dtype.element_ty), mask=mask_d[:, None] & in_x[None, :])
    if pid_l * BLOCK_L < KEEP:
        dinit_ptrs = dinit_ptr + b * D * KEEP + offs_d[:, None] * KEEP + e[None, :]
        tl.store(dinit_ptrs, dxp.to(dinit_ptr.dtype.element_ty), mask=mask_d[:, None] & (e < KEEP)[None, :])


def _acc_dtype(dtype: torch.dtype) -> tl.dtype:
    return tl.float64 if dtype == torch.float64 else tl.float32


def _tile(x: torch.Tensor, length: int) -> tuple[int, int]:
    l_contiguous = x.stride(2) == 1 or x.shape[1] == 1
    tiles = INTERPRETER_TILES if triton_interpreter_enabled() else GPU_TILES
    block_d, block_l = tiles[l_contiguous]
    return min(block_d, next_power_of_2(x.shape[1])), min(block_l, next_power_of_2(length))


def _init_strides(initial_state: torch.Tensor | None) -> tuple[int, int, int]:
    return (0, 0, 0) if initial_state is None else initial_state.stride()


def causal_conv1d_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    initial_state: torch.Tensor | None,
    silu: bool,
) -> torch.Tensor:
    """out (batch, D, L) in x's dtype and memory layout. Shapes as in ``causal_conv1d``."""
    batch, dim, length = x.shape
    width = weight.shape[1]
    out = empty_like_layout(x)
    block_d, block_l = _tile(x, length)
    grid = (cdiv(length, block_l), cdiv(dim, block_d), batch)
    _causal_conv1d_fwd_kernel[grid](
        x, weight, bias if bias is not None else weight, initial_state if initial_state is not None else x, out,
        dim, length, *x.stride(), *weight.stride(), *_init_strides(initial_state), *out.stride(),
        WIDTH=width, HAS_BIAS=bias is not None, HAS_INIT=initial_state is not None, SILU=silu,
        ACC=_acc_dtype(x.dtype), BLOCK_D=block_d, BLOCK_L=block_l, FAST_MATH=fast_math(x), num_warps=_NUM_WARPS,
    )
    return out


def causal_conv1d_backward(
    dout: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    initial_state: torch.Tensor | None,
    silu: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients ``(dx, dweight, dbias, dinitial_state)`` for d out (batch, D, L).

    dx (batch, D, L) in x's dtype and memory layout, dinitial_state (batch, D, width-1)
    contiguous in x's dtype; dweight (D, width) in weight's dtype; dbias (D,) in bias's
    dtype (weight's when bias is None). All four are always computed; the caller drops
    those of absent inputs.

    Two kernels: the first computes g = d out * act'(pre) once per output (with d weight
    and d bias), into an fp32 buffer laid out like x; the second reads g at the width
    shifts each d x needs. (One kernel would have to recompute g at every shift: width
    times the activation's work, which made the backward compute-bound.)
    """
    batch, dim, length = x.shape
    width = weight.shape[1]
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    g = empty_in_stride_order(x.shape, x.stride(), dtype=acc, device=x.device)
    block_d, block_l = _tile(x, length)
    tiles = min(INTERPRETER_BWD_TILES if triton_interpreter_enabled() else GPU_BWD_TILES, cdiv(length, block_l))
    n_lblocks = cdiv(length, block_l * tiles)
    dw_part = torch.empty((batch, n_lblocks, dim, width), dtype=acc, device=x.device)
    db_part = torch.empty((batch, n_lblocks, dim), dtype=acc, device=x.device)
    _causal_conv1d_bwd_g_kernel[(n_lblocks, cdiv(dim, block_d), batch)](
        x, weight, bias if bias is not None else weight, initial_state if initial_state is not None else x,
        dout, g, dw_part, db_part, dim, length,
        *x.stride(), *weight.stride(), *_init_strides(initial_state), *dout.stride(), *g.stride(),
        WIDTH=width, HAS_BIAS=bias is not None, HAS_INIT=initial_state is not None, SILU=silu,
        ACC=_acc_dtype(x.dtype), BLOCK_D=block_d, BLOCK_L=block_l, TILES=tiles, FAST_MATH=fast_math(x),
        num_warps=_NUM_WARPS,
    )
    dx = empty_like_layout(x)
    dinit = torch.empty((batch, dim, width - 1), dtype=x.dtype, device=x.device)
    block_d, block_l = _tile(x, length + width - 1)
    _causal_conv1d_bwd_dx_kernel[(cdiv(length + width - 1, block_l), cdiv(dim, block_d), batch)](
        g, weight, dx, dinit, dim, length, *g.stride(), *weight.stride(), *dx.stride(),
        WIDTH=width, ACC=_acc_dtype(x.dtype), BLOCK_D=block_d, BLOCK_L=block_l, num_warps=_NUM_WARPS,
    )
    dweight = dw_part.sum(dim=(0, 1)).to(weight.dtype)
    dbias = db_part.sum(dim=(0, 1)).to(bias.dtype if bias is not None else weight.dtype)
    return dx, dweight, dbias, dinit
