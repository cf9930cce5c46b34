"""Small Triton helpers shared by the forward and backward selective-scan kernels."""
from __future__ import annotations

import triton
import triton.language as tl

from ..sizes import cdiv
from ..triton_math import exp2_fma


@triton.jit
def scan_combine(a_left, b_left, a_right, b_right):
    """Composes two steps of h -> a * h + b: first (a_left, b_left), then (a_right, b_right)."""
    return a_left * a_right, b_left * a_right + b_right


@triton.jit
def fma_steps(steps, n, COUNT: tl.constexpr, HALF_STATES: tl.constexpr):
    """Which (step, state) pairs of a chunk's (CHUNK, BLOCK_N, 1) tile take their decays
    off the multi-function unit: those of the last COUNT steps (with HALF_STATES, only
    their first BLOCK_N / 2 states); None for none. Kernels bound by that unit (one exp2
    per (step, state, channel) against a dozen other instructions) hand a share of their
    exponentials to the FMA pipe, which has room. The steps and the high bit of the state
    index lie in each thread's registers in the kernels' layouts (a thread's states are
    strided over the lanes that share a channel), so the selection is resolved at compile
    time and each element is computed one way only."""
    if COUNT > 0:
        r = (steps >= steps.shape[0] - COUNT)[:, None, None] & (n >= 0)[None, :, None]
        if HALF_STATES:
            r = r & (n < n.shape[0] // 2)[None, :, None]
    else:
        r = None
    return r


@triton.jit
def decays(dt, A2, on_fma):
    """exp2(dt * A2) on the (CHUNK, BLOCK_N, BLOCK_D) tile from dt (CHUNK, BLOCK_D) and A2
    (BLOCK_N, BLOCK_D), the elements marked in on_fma (from fma_steps) by exp2_fma."""
    x = dt[:, None, :] * A2[None, :, :]
    decay = tl.exp2(x)
    if on_fma is not None:
        decay = tl.where(on_fma, exp2_fma(x), decay)
    return decay


@triton.jit
def in_step_layout(x, steps):
    """x (BLOCK_N, BLOCK_D), unchanged, in the register layout of one step of the
    (CHUNK, BLOCK_N, BLOCK_D) tiles. A state loaded from memory comes in the layout of
    its coalesced load; a step loop carrying it would otherwise convert every step's
    decay and input to that layout and the state back (round trips through shared
    memory or shuffles at every step)."""
    return tl.sum(tl.where(steps[:, None, None] == 0, x[None, :, :], 0.0), axis=0)


@triton.jit
def program_position(DG, BLOCK_D: tl.constexpr, n_seg, SEGMENTS_LAST_AXIS: tl.constexpr):
    """This program's (channel block, segment in the grid's order, batch row (int64),
    batch rows) in either grid of the scan kernels: (channel blocks x n_seg, groups,
    batch), segment-major; or, with SEGMENTS_LAST_AXIS, (channel blocks, groups, n_seg x
    batch), where the programs of the grid's first segment have the lowest linear indices
    (the GPU starts programs in that order)."""
    if SEGMENTS_LAST_AXIS:
        n_batch = tl.num_programs(2) // n_seg
        pid_d = tl.program_id(0)
        place = tl.program_id(2) // n_batch
        batch = (tl.program_id(2) % n_batch).to(tl.int64)
    else:
        n_batch = tl.num_programs(2)
        n_dblk = tl.cdiv(DG, BLOCK_D)
        pid_d = tl.program_id(0) % n_dblk
        place = tl.program_id(0) // n_dblk
        batch = tl.program_id(2).to(tl.int64)
    return pid_d, place, batch, n_batch


@triton.jit
def channel_block(pid_d, group, DG, N, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """The channels and states of the program owning channel block pid_d of group
    ``group`` (DG channels a group): (d: (BLOCK_D,) int64 channel indices, d_mask, n:
    (BLOCK_N,), n_mask, nd_mask: (BLOCK_N, BLOCK_D))."""
    d_in_group = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = d_in_group < DG
    n = tl.arange(0, BLOCK_N)
    n_mask = n < N
    return (group * DG + d_in_group).to(tl.int64), d_mask, n, n_mask, n_mask[:, None] & d_mask[None, :]


@triton.jit
def load_state_tile(ptr, n, d, s_n, s_d, nd_mask):
    """A (BLOCK_N, BLOCK_D) fp32 tile of a per-(state, channel) tensor (A, a time-invariant
    B or C, a state) at ptr with strides s_n, s_d; 0 outside nd_mask."""
    return tl.load(ptr + n[:, None] * s_n + d[None, :] * s_d, mask=nd_mask, other=0.0).to(tl.float32)


@triton.jit
def load(ptr, mask):
    """tl.load in the stored dtype; ``mask=None`` loads unmasked, which lets full tiles vectorize."""
    if mask is None:
        x = tl.load(ptr)
    else:
        x = tl.load(ptr, mask=mask, other=0.0)
    return x


@triton.jit
def load_f32(ptr, mask):
    """:func:`load` as fp32."""
    return load(ptr, mask).to(tl.float32)


def split_length(programs: int, length: int, align: int, *, target: int, min_len: int) -> int | None:
    """Steps per segment when L is split across programs; None for a single segment.

    programs: programs launched without a split; the segments bring them to about
    ``target``, each segment at least ``min_len`` steps and a multiple of ``align``.
    """
    seg_len = max(min_len, cdiv(length, cdiv(target, programs)))
    seg_len = cdiv(seg_len, align) * align
    return seg_len if seg_len < length else None
