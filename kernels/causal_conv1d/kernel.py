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
forward), in one kernel that walks along L in chunks of a few positions, carrying the
last inputs and the last g across chunks in registers (so g is formed once per position
and never stored):

    d xp[e]   = sum_k w[k] * g[e - k]          (e < KEEP: d initial_state, else d x)
    d w[k]    = sum_{b, l} g[l] * xp[l + k]
    d bias    = sum_{b, l} g[l]

Weight and bias gradients are summed per program into a (batch, programs, D, width + 1)
fp32 buffer and reduced afterwards, which keeps them deterministic (no atomics).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..backend import triton_interpreter_enabled
from ..layout import empty_like_layout
from ..sizes import cdiv, next_power_of_2
from ..triton_math import fast_math, sigmoid

# (BLOCK_D, BLOCK_L) by memory layout (is L the contiguous axis?), the contiguous axis
# long so loads coalesce. Every kernel holds a few tiles per element (width shifted
# input tiles at most), 8 elements per thread with 4 warps.
GPU_TILES = {True: (16, 64), False: (64, 16)}
# The Triton interpreter (TRITON_INTERPRET=1) executes programs one after another and
# pays per program, not per element: larger tiles, same index arithmetic.
INTERPRETER_TILES = {True: (32, 128), False: (128, 32)}
# The backward by memory layout (is L the contiguous axis?): (BLOCK_D channels, chunk
# of positions a step, positions a program, warps). With L contiguous each thread owns
# one channel and loads a chunk as two vectors (16 x 16 bits: 32 bytes); channel-last,
# a chunk is that many rows of contiguous channels, 4 a thread. A chunk must be at least
# width - 1 positions long. Chosen by benchmarks/conv_tuning.py on an H200 (notes_conv.md):
# 16-position chunks halved the contiguous backward's time against 8. The interpreter:
# fewer positions a program, so that tests walk several programs and the chunk
# boundaries inside them.
GPU_BWD_LAUNCH = {True: (128, 16, 512, 4), False: (512, 4, 256, 4)}
INTERPRETER_BWD_LAUNCH = {True: (32, 8, 32, 4), False: (32, 4, 32, 4)}
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
def _rows(ptr, b, offs_d, s_b, s_d):
    """[BLOCK_D, 1] pointers to the first element of this program's channel rows."""
    return (ptr + b * s_b + offs_d * s_d)[:, None]


@triton.jit
def _columns(tile, BLOCK_D: tl.constexpr, V: tl.constexpr, LOG_V: tl.constexpr):
    """The V columns of a [BLOCK_D, V] tile, in order, each [BLOCK_D, 1].

    Halving splits (even and odd columns) keep each thread's elements in its registers:
    after ``t`` halvings, tensor ``i`` holds the columns ``c`` with ``c % 2**t == i``.
    """
    cols = (tile,)
    for level in tl.static_range(LOG_V):
        evens = ()
        odds = ()
        for i in tl.static_range(1 << level):
            even, odd = tl.split(tl.reshape(cols[i], [BLOCK_D, (V >> level) // 2, 2]))
            evens = evens + (even,)
            odds = odds + (odd,)
        cols = evens + odds
    return cols


@triton.jit
def _joined_columns(cols, BLOCK_D: tl.constexpr, V: tl.constexpr, LOG_V: tl.constexpr):
    """The [BLOCK_D, V] tile of V columns (each [BLOCK_D, 1]): the inverse of ``_columns``."""
    for level in tl.static_range(LOG_V):
        joined = ()
        for i in tl.static_range(V >> (level + 1)):
            pair = tl.join(cols[i], cols[i + (V >> (level + 1))])
            joined = joined + (tl.reshape(pair, [BLOCK_D, 2 << level]),)
        cols = joined
    return cols[0]


@triton.jit
def _load_chunk(rows, mask_d, pos, lo, hi, s_l, V: tl.constexpr, L_CONTIGUOUS: tl.constexpr):
    """Positions pos .. pos + V - 1 of the rows (pointers to position 0), zero outside
    [lo, hi), in the rows' dtype: with L contiguous a [BLOCK_D, V] tile (one vector load
    per thread), else a tuple of V [BLOCK_D, 1] columns (loads of contiguous channels)."""
    if L_CONTIGUOUS:
        offs = pos + tl.arange(0, V)[None, :]
        chunk = tl.load(rows + offs * s_l, mask=mask_d[:, None] & (offs >= lo) & (offs < hi), other=0.0)
    else:
        chunk = ()
        for i in tl.static_range(V):
            offs = pos + i + tl.arange(0, 1)[None, :]
            chunk = chunk + (tl.load(rows + offs * s_l, mask=mask_d[:, None] & (offs >= lo) & (offs < hi), other=0.0),)
    return chunk


@triton.jit
def _chunk_columns(chunk, ACC: tl.constexpr, BLOCK_D: tl.constexpr, V: tl.constexpr, LOG_V: tl.constexpr,
                   L_CONTIGUOUS: tl.constexpr):
    """A loaded chunk as V [BLOCK_D, 1] columns in ACC."""
    if L_CONTIGUOUS:
        cols = _columns(chunk.to(ACC), BLOCK_D, V, LOG_V)
    else:
        cols = ()
        for i in tl.static_range(V):
            cols = cols + (chunk[i].to(ACC),)
    return cols


@triton.jit
def _x_columns(x_rows, init_rows, mask_d, pos, L, s_xl, s_ik,
               KEEP: tl.constexpr, HAS_INIT: tl.constexpr, ACC: tl.constexpr,
               BLOCK_D: tl.constexpr, V: tl.constexpr, LOG_V: tl.constexpr, L_CONTIGUOUS: tl.constexpr):
    """x at positions pos .. pos + V - 1 as columns; positions -KEEP .. -1 are the initial
    state's columns when HAS_INIT (init_rows point at its column KEEP), others outside
    [0, L) zero."""
    cols = _chunk_columns(_load_chunk(x_rows, mask_d, pos, 0, L, s_xl, V, L_CONTIGUOUS),
                          ACC, BLOCK_D, V, LOG_V, L_CONTIGUOUS)
    if HAS_INIT:
        if pos < 0:
            init = _chunk_columns(_load_chunk(init_rows, mask_d, pos, -KEEP, 0, s_ik, V, L_CONTIGUOUS),
                                  ACC, BLOCK_D, V, LOG_V, L_CONTIGUOUS)
            summed = ()
            for i in tl.static_range(V):
                summed = summed + (cols[i] + init[i],)
            cols = summed
    return cols


@triton.jit
def _store_chunk(rows, cols, mask_d, pos, lo, hi, s_l,
                 BLOCK_D: tl.constexpr, V: tl.constexpr, LOG_V: tl.constexpr, L_CONTIGUOUS: tl.constexpr):
    """Stores V columns (each [BLOCK_D, 1]) at positions pos .. pos + V - 1 of the rows
    (pointers to position 0), those in [lo, hi) only."""
    if L_CONTIGUOUS:
        offs = pos + tl.arange(0, V)[None, :]
        tile = _joined_columns(cols, BLOCK_D, V, LOG_V)
        tl.store(rows + offs * s_l, tile.to(rows.dtype.element_ty), mask=mask_d[:, None] & (offs >= lo) & (offs < hi))
    else:
        for i in tl.static_range(V):
            offs = pos + i + tl.arange(0, 1)[None, :]
            tl.store(rows + offs * s_l, cols[i].to(rows.dtype.element_ty),
                     mask=mask_d[:, None] & (offs >= lo) & (offs < hi))


@triton.jit
def _load_douts(dout_rows, dout2_rows, mask_d, pos, L, s_gl, s_g2l,
                V: tl.constexpr, L_CONTIGUOUS: tl.constexpr, HAS_DOUT2: tl.constexpr):
    """d out at positions pos .. pos + V - 1 as loaded: (its chunk, the second addend's
    chunk), the first twice without a second addend."""
    first = _load_chunk(dout_rows, mask_d, pos, 0, L, s_gl, V, L_CONTIGUOUS)
    if HAS_DOUT2:
        second = _load_chunk(dout2_rows, mask_d, pos, 0, L, s_g2l, V, L_CONTIGUOUS)
    else:
        second = first
    return first, second


@triton.jit
def _dout_columns(loaded, ACC: tl.constexpr, BLOCK_D: tl.constexpr, V: tl.constexpr, LOG_V: tl.constexpr,
                  L_CONTIGUOUS: tl.constexpr, HAS_DOUT2: tl.constexpr):
    """The columns of d out from ``_load_douts``, summed with the second addend's in ACC."""
    cols = _chunk_columns(loaded[0], ACC, BLOCK_D, V, LOG_V, L_CONTIGUOUS)
    if HAS_DOUT2:
        more = _chunk_columns(loaded[1], ACC, BLOCK_D, V, LOG_V, L_CONTIGUOUS)
        summed = ()
        for i in tl.static_range(V):
            summed = summed + (cols[i] + more[i],)
        cols = summed
    return cols


@triton.jit
def _g_columns(xs, douts, taps, bias, KEEP: tl.constexpr, V: tl.constexpr, SILU: tl.constexpr,
               FAST_MATH: tl.constexpr):
    """g = d out * act'(pre) at V positions, from xs: x at KEEP + V positions ending with
    theirs, and douts: d out at theirs (columns)."""
    gs = ()
    for i in tl.static_range(V):
        pre = bias
        for j in tl.static_range(KEEP + 1):
            pre += taps[j] * xs[i + j]
        g = douts[i]
        if SILU:
            sig = sigmoid(pre, FAST_MATH)
            g = g * sig * (1.0 + pre * (1.0 - sig))
        gs = gs + (g,)
    return gs


@triton.jit
def _last(cols, N: tl.constexpr, V: tl.constexpr):
    """The last N of V columns."""
    tail = ()
    for i in tl.static_range(V - N, V):
        tail = tail + (cols[i],)
    return tail


@triton.jit
def _causal_conv1d_bwd_kernel(
    x_ptr, w_ptr, bias_ptr, init_ptr, dout_ptr, dout2_ptr, dx_ptr, dinit_ptr, part_ptr, D, L,
    s_xb, s_xd, s_xl, s_wd, s_wk, s_ib, s_id, s_ik, s_gb, s_gd, s_gl, s_g2b, s_g2d, s_g2l, s_dxb, s_dxd, s_dxl,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, SILU: tl.constexpr,
    ACC: tl.constexpr, BLOCK_D: tl.constexpr, V: tl.constexpr, LOG_V: tl.constexpr, CHUNKS: tl.constexpr,
    L_CONTIGUOUS: tl.constexpr, FAST_MATH: tl.constexpr, HAS_DOUT2: tl.constexpr,
):
    """The whole backward in one pass along L over chunks of V positions.

    A program owns d x at CHUNKS * V positions from t0 = pid * CHUNKS * V - V (the first
    program's first chunk, positions -V .. -1, holds d initial_state) and g at the same
    number of positions one chunk later. Each step loads x and d out one chunk ahead,
    forms g there from the last KEEP x columns carried over, and emits d x of the current
    chunk from its g and the next chunk's first KEEP:

        d x[l] = sum_k w[k] * g[l + KEEP - k]

    So g is computed once per position (once more per program for the chunk before its
    first) and never leaves registers. The program's d weight and d bias sums go to
    ``part`` (batch, programs, D, WIDTH + 1), reduced afterwards (no atomics). With
    HAS_DOUT2, d out is the sum of two tensors (two branches' gradients), added here.
    """
    KEEP: tl.constexpr = WIDTH - 1
    pid_l, b, offs_d, mask_d = _program_rows(D, BLOCK_D)
    taps, bias = _taps(w_ptr, bias_ptr, offs_d, mask_d, s_wd, s_wk, WIDTH, HAS_BIAS, ACC)
    x_rows = _rows(x_ptr, b, offs_d, s_xb, s_xd)
    init_rows = _rows(init_ptr, b, offs_d, s_ib, s_id) + KEEP * s_ik
    dout_rows = _rows(dout_ptr, b, offs_d, s_gb, s_gd)
    dout2_rows = _rows(dout2_ptr, b, offs_d, s_g2b, s_g2d)
    dx_rows = _rows(dx_ptr, b, offs_d, s_dxb, s_dxd)
    t0 = pid_l * (CHUNKS * V) - V
    before = _x_columns(x_rows, init_rows, mask_d, t0 - V, L, s_xl, s_ik, KEEP, HAS_INIT, ACC,
                        BLOCK_D, V, LOG_V, L_CONTIGUOUS)
    xs = _x_columns(x_rows, init_rows, mask_d, t0, L, s_xl, s_ik, KEEP, HAS_INIT, ACC, BLOCK_D, V, LOG_V,
                    L_CONTIGUOUS)
    douts = _dout_columns(_load_douts(dout_rows, dout2_rows, mask_d, t0, L, s_gl, s_g2l, V, L_CONTIGUOUS, HAS_DOUT2),
                          ACC, BLOCK_D, V, LOG_V, L_CONTIGUOUS, HAS_DOUT2)
    gs = _g_columns(_last(before, KEEP, V) + xs, douts, taps, bias, KEEP, V, SILU, FAST_MATH)
    x_tail = _last(xs, KEEP, V)
    db = tl.zeros_like(bias)
    dws = ()
    for j in tl.static_range(WIDTH):
        dws = dws + (tl.zeros_like(bias),)
    # Positions from t0 + V on are >= 0: no initial state below. Each step's loads are
    # issued a step ahead, so that they are in flight while the step before computes.
    x_ahead = _load_chunk(x_rows, mask_d, t0 + V, 0, L, s_xl, V, L_CONTIGUOUS)
    d_ahead = _load_douts(dout_rows, dout2_rows, mask_d, t0 + V, L, s_gl, s_g2l, V, L_CONTIGUOUS, HAS_DOUT2)
    for q in range(CHUNKS):
        c = t0 + q * V
        x_next = _chunk_columns(x_ahead, ACC, BLOCK_D, V, LOG_V, L_CONTIGUOUS)
        d_next = _dout_columns(d_ahead, ACC, BLOCK_D, V, LOG_V, L_CONTIGUOUS, HAS_DOUT2)
        x_ahead = _load_chunk(x_rows, mask_d, c + 2 * V, 0, L, s_xl, V, L_CONTIGUOUS)
        d_ahead = _load_douts(dout_rows, dout2_rows, mask_d, c + 2 * V, L, s_gl, s_g2l, V, L_CONTIGUOUS, HAS_DOUT2)
        window = x_tail + x_next  # x at c + V - KEEP .. c + 2V - 1
        g_next = _g_columns(window, d_next, taps, bias, KEEP, V, SILU, FAST_MATH)
        both = gs + g_next  # g at c .. c + 2V - 1
        dxs = ()
        for i in tl.static_range(V):
            dx = taps[KEEP] * both[i]
            for k in tl.static_range(KEEP):
                dx += taps[k] * both[i + KEEP - k]
            dxs = dxs + (dx,)
        _store_chunk(dx_rows, dxs, mask_d, c, 0, L, s_dxl, BLOCK_D, V, LOG_V, L_CONTIGUOUS)
        if c < 0:  # the first program's first chunk: d initial_state at positions -KEEP .. -1
            dinit_rows = (dinit_ptr + (b * D + offs_d) * KEEP + KEEP)[:, None]
            _store_chunk(dinit_rows, dxs, mask_d, c, -KEEP, 0, 1, BLOCK_D, V, LOG_V, False)
        # d bias and d weight from g at c + V .. c + 2V - 1: g[l] * x[l - KEEP + j].
        summed = ()
        for j in tl.static_range(WIDTH):
            acc = dws[j]
            for i in tl.static_range(V):
                acc += g_next[i] * window[i + j]
            summed = summed + (acc,)
        dws = summed
        for i in tl.static_range(V):
            db += g_next[i]
        gs = g_next
        x_tail = _last(x_next, KEEP, V)
    part = ((b * tl.num_programs(0) + pid_l) * D + offs_d) * (WIDTH + 1)
    for j in tl.static_range(WIDTH):
        tl.store(part_ptr + part + j, tl.sum(dws[j], axis=1), mask=mask_d)
    tl.store(part_ptr + part + WIDTH, tl.sum(db, axis=1), mask=mask_d)


def _acc_dtype(dtype: torch.dtype) -> tl.dtype:
    return tl.float64 if dtype == torch.float64 else tl.float32


def _l_contiguous(x: torch.Tensor) -> bool:
    return x.stride(2) == 1 or x.shape[1] == 1


def _tile(x: torch.Tensor, length: int) -> tuple[int, int]:
    tiles = INTERPRETER_TILES if triton_interpreter_enabled() else GPU_TILES
    block_d, block_l = tiles[_l_contiguous(x)]
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
    dout2: torch.Tensor | None = None,
    dx_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients ``(dx, dweight, dbias, dinitial_state)`` for d out (batch, D, L), plus
    ``dout2`` (batch, D, L) if given (the output feeds two branches: their gradients are
    summed as they are read, not beforehand); dx is written into ``dx_out`` if given (a
    (batch, D, L) tensor of x's dtype, any strides: a slice of a larger gradient buffer).

    dx (batch, D, L) in x's dtype and memory layout, dinitial_state (batch, D, width-1)
    contiguous in x's dtype; dweight (D, width) in weight's dtype; dbias (D,) in bias's
    dtype (weight's when bias is None). All four are always computed; the caller drops
    those of absent inputs.

    One kernel streams along L (``_causal_conv1d_bwd_kernel``): x and d out are read
    once, dx written once, g never stored.
    """
    batch, dim, length = x.shape
    width = weight.shape[1]
    l_contiguous = _l_contiguous(x)
    launches = INTERPRETER_BWD_LAUNCH if triton_interpreter_enabled() else GPU_BWD_LAUNCH
    block_d, chunk, rows, num_warps = launches[l_contiguous]
    chunks = min(rows // chunk, cdiv(length + chunk, chunk))
    n_programs = cdiv(length + chunk, chunks * chunk)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    part = torch.empty((batch, n_programs, dim, width + 1), dtype=acc, device=x.device)
    dx = dx_out if dx_out is not None else empty_like_layout(x)
    dinit = torch.empty((batch, dim, width - 1), dtype=x.dtype, device=x.device)
    block_d = min(block_d, next_power_of_2(dim))
    second = dout2 if dout2 is not None else dout  # a placeholder pointer when absent (HAS_DOUT2 off)
    _causal_conv1d_bwd_kernel[(n_programs, cdiv(dim, block_d), batch)](
        x, weight, bias if bias is not None else weight, initial_state if initial_state is not None else x,
        dout, second, dx, dinit, part, dim, length,
        *x.stride(), *weight.stride(), *_init_strides(initial_state), *dout.stride(), *second.stride(), *dx.stride(),
        WIDTH=width, HAS_BIAS=bias is not None, HAS_INIT=initial_state is not None, SILU=silu,
        ACC=_acc_dtype(x.dtype), BLOCK_D=block_d, V=chunk, LOG_V=chunk.bit_length() - 1, CHUNKS=chunks,
        L_CONTIGUOUS=l_contiguous, FAST_MATH=fast_math(x), HAS_DOUT2=dout2 is not None, num_warps=num_warps,
    )
    sums = part.sum(dim=(0, 1))
    # Contiguous in every dtype, as the op's fake implementation says (a bare slice of
    # the fp32 sums would keep their row stride of width + 1).
    dweight = sums[:, :width].to(weight.dtype).contiguous()
    # A copy: outputs of a custom op must not share storage.
    dbias = sums[:, width].to(bias.dtype if bias is not None else weight.dtype, copy=True)
    return dx, dweight, dbias, dinit
