"""Backward selective-scan kernel (Triton).

One program owns the same (batch, group, BLOCK_D channels) slice as in the forward and
walks the sequence backwards, one saved interval of ``SUBCHUNKS * CHUNK`` steps at a
time. For each interval it starts from the state the forward saved, advances it chunk
by chunk to find each chunk's start state (kept in a small per-program scratch buffer),
then visits the chunks in reverse: it recomputes the chunk's states step by step, and
runs the adjoint recurrence backwards from the gradient carried in from later steps.

Per-channel results (du, ddelta, dz) are written directly. Sums over channels (dB, dC
for input-dependent B/C) are reduced inside the program over its channels, then added
into one fp32 buffer with atomics; under ``torch.use_deterministic_algorithms`` each
program writes its own partial sum instead, and the caller adds them up in a fixed
order (the atomics' order varies between runs, and with it the last bits of dB, dC).
Sums over time and batch (dA, dD, ddelta_bias, time-invariant dB/dC) are accumulated in
registers, then added atomically into one zeroed (D, N) or (D,) sum each (so that no
reduction runs after the kernel), or, deterministically, written per (segment, batch,
channel) and added up by the caller. The atomic totals are views of one workspace,
zeroed by one fill and finished (cast, copies added) by one kernel (triton_sums).
README.md has the math.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import triton
import triton.language as tl

from .. import dependent_launch
from ..layout import empty_like_layout
from ..sizes import cdiv, next_power_of_2
from ..triton_math import LOG2E, fast_math, sigmoid, softplus
from .triton_common import (
    channel_block, decays, fma_steps, in_step_layout, load, load_f32, load_state_tile, program_position, split_length,
)
from .triton_fwd import bc_strides, group_ratio, n_groups
from .triton_sums import atomic_sums, finish_sums


@triton.jit
def _load_delta(t0, L, steps, d_mask, dt_base, s_dt_l):
    """The chunk from t0's delta tile (CHUNK, BLOCK_D) as fp32, 0 past L and past the channels."""
    t = t0 + steps
    return load_f32(dt_base + t[:, None] * s_dt_l, (t < L)[:, None] & d_mask[None, :])


@triton.jit
def _make_delta(dt_raw, t0, L, steps, d_mask, bias,
                HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, FAST_MATH: tl.constexpr):
    """(delta after bias and softplus, sigmoid of its argument) from _load_delta's tile."""
    t = t0 + steps
    m2 = (t < L)[:, None] & d_mask[None, :]
    if HAS_BIAS:
        dt_raw = dt_raw + bias[None, :]
    if SOFTPLUS:
        dt = softplus(dt_raw, FAST_MATH)
        dsoftplus = sigmoid(dt_raw, FAST_MATH)
    else:
        dt = dt_raw
        dsoftplus = dt_raw
    # Padded steps and channels get delta = 0: decay 1 and input 0 leave h unchanged.
    return tl.where(m2, dt, 0.0), dsoftplus


@triton.jit
def _delta_at(t0, L, steps, d_mask, bias, dt_base, s_dt_l,
              HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, FAST_MATH: tl.constexpr):
    """_make_delta of the chunk from t0, loaded here."""
    return _make_delta(_load_delta(t0, L, steps, d_mask, dt_base, s_dt_l), t0, L, steps, d_mask, bias,
                       HAS_BIAS, SOFTPLUS, FAST_MATH)


@triton.jit
def _chunk_delta(dt_next, dsp_next, t0, t_next, L, steps, d_mask, bias, dt_base, s_dt_l,
                 DELTA_AHEAD: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, FAST_MATH: tl.constexpr):
    """(delta, sigmoid) of the chunk from t0 and the raw delta tile of the chunk from t_next:
    with DELTA_AHEAD the pair carried from the iteration before, the tile loaded now to be
    made at the end of this one; else the pair made here (and the tile unused)."""
    if DELTA_AHEAD:
        dt, dsp = dt_next, dsp_next
        raw_next = _load_delta(t_next, L, steps, d_mask, dt_base, s_dt_l)
    else:
        dt, dsp = _delta_at(t0, L, steps, d_mask, bias, dt_base, s_dt_l, HAS_BIAS, SOFTPLUS, FAST_MATH)
        raw_next = dt
    return dt, dsp, raw_next


@triton.jit
def _load_dy(t0, L, steps, d_mask, do_base, z_base, s_do_l, s_z_l, HAS_Z: tl.constexpr):
    """The chunk from t0's dout and z tiles (CHUNK, BLOCK_D) as fp32 (z: dout without HAS_Z)."""
    t = t0 + steps
    m2 = (t < L)[:, None] & d_mask[None, :]
    dout = load_f32(do_base + t[:, None] * s_do_l, m2)
    zt = load_f32(z_base + t[:, None] * s_z_l, m2) if HAS_Z else dout
    return dout, zt


@triton.jit
def _seg_dy(dout, zt, HAS_Z: tl.constexpr, FAST_MATH: tl.constexpr):
    """The gradient reaching y before the gate: dout * z * sigmoid(z) (dout without HAS_Z)."""
    if HAS_Z:
        dout = dout * zt * sigmoid(zt, FAST_MATH)
    return dout


@triton.jit
def _load_uB(t0, L, steps, d_mask, n, n_mask, u_base, B_base, s_u_l, s_B_l, s_B_n, B_VARYING: tl.constexpr):
    """The chunk from t0's u tile (CHUNK, BLOCK_D) and B tile (CHUNK, BLOCK_N) as stored
    (B: u when time-invariant), 0 past L."""
    t = t0 + steps
    u = load(u_base + t[:, None] * s_u_l, (t < L)[:, None] & d_mask[None, :])
    Bt = u
    if B_VARYING:
        Bt = load(B_base + t[:, None] * s_B_l + n[None, :] * s_B_n, (t < L)[:, None] & n_mask[None, :])
    return u, Bt


@triton.jit
def _load_C_dy(t0, L, steps, d_mask, n, n_mask, C_base, do_base, z_base, s_C_l, s_C_n, s_do_l, s_z_l,
               C_VARYING: tl.constexpr, HAS_Z: tl.constexpr):
    """The chunk from t0's C tile (CHUNK, BLOCK_N) and dout and z tiles (CHUNK, BLOCK_D) as
    stored (C: dout when time-invariant, z: dout without HAS_Z), 0 past L."""
    t = t0 + steps
    m2 = (t < L)[:, None] & d_mask[None, :]
    dout = load(do_base + t[:, None] * s_do_l, m2)
    Ct = dout
    if C_VARYING:
        Ct = load(C_base + t[:, None] * s_C_l + n[None, :] * s_C_n, (t < L)[:, None] & n_mask[None, :])
    zt = dout
    if HAS_Z:
        zt = load(z_base + t[:, None] * s_z_l, m2)
    return Ct, dout, zt


@triton.jit
def _chunk_inputs(u, Bt, dt, B_tile, A2, B_VARYING: tl.constexpr):
    """u, decay and input tiles of a chunk from its u and B tiles as _load_uB returns them
    and its delta dt (from _make_delta)."""
    u = u.to(tl.float32)
    decay = tl.exp2(dt[:, None, :] * A2[None, :, :])  # (CHUNK, BLOCK_N, BLOCK_D)
    if B_VARYING:
        Bt = Bt.to(tl.float32)
        inp = (dt * u)[:, None, :] * Bt[:, :, None]
    else:
        Bt = B_tile
        inp = (dt * u)[:, None, :] * B_tile[None, :, :]
    return u, decay, Bt, inp


@triton.jit
def _channel_sums_scattered(x, channels, BLOCK_D: tl.constexpr):
    """Sums of x (CHUNK, BLOCK_N, BLOCK_D) over its channels, spread over the channels.

    Returns (sums, step, owner): sums (max(CHUNK // BLOCK_D, 1), BLOCK_N, BLOCK_D), the
    step (0 .. CHUNK - 1) each sum belongs to, and where it is to be written: every
    (step, state) sum has exactly one owner (owner is all true when CHUNK >= BLOCK_D).

    tl.sum over channels on lanes is a butterfly that leaves every sum in every lane:
    log2(BLOCK_D) exchanges of every value. Here each exchange first halves the steps
    (channel c keeps one half, chosen by one bit of c, and receives the partial sums of
    that half from its partner c ^ bit), so the exchanges move CHUNK/2 + CHUNK/4 + ...
    values per state instead of CHUNK * log2(BLOCK_D). Once one step is left, the last
    exchanges are a butterfly's. Exact whatever the register layout: tl.gather's result
    does not depend on where the channels live.
    """
    c = channels[None, None, :]
    step = tl.zeros_like(c)
    owner = c >= 0
    for level in tl.static_range(8):  # BLOCK_D <= 256
        if (BLOCK_D >> (level + 1)) > 0:
            bit = c & (BLOCK_D >> (level + 1))
            partner = c ^ (BLOCK_D >> (level + 1))
            if x.shape[0] > 1:
                lo, hi = tl.split(tl.permute(tl.reshape(x, (2, x.shape[0] // 2, x.shape[1], x.shape[2])), (1, 2, 3, 0)))
                upper = bit != 0
                send = tl.where(upper, lo, hi)
                x = tl.where(upper, hi, lo) + tl.gather(send, tl.broadcast_to(partner, send.shape), axis=2)
                step += tl.where(upper, x.shape[0], 0)  # x now holds half the steps
            else:
                x = x + tl.gather(x, tl.broadcast_to(partner, x.shape), axis=2)
                owner = owner & (bit == 0)
    return x, tl.arange(0, x.shape[0])[:, None, None] + step, owner


@triton.jit
def _write_channel_sums(ptr, base, x, t0, L, channels, n_mask, BLOCK_D: tl.constexpr,
                        ATOMIC: tl.constexpr, SCATTERED: tl.constexpr, SUM_GROUPS: tl.constexpr):
    """Adds (ATOMIC) or stores the sums of x (CHUNK, BLOCK_N, BLOCK_D) over its channels
    at ptr + base + t0 + step, base (1, BLOCK_N): dB or dC of one chunk.

    SUM_GROUPS > 1 (ATOMIC only): the channels are summed in SUM_GROUPS groups, and each
    group's sums added into memory on their own: log2(SUM_GROUPS) fewer exchange levels
    (each a shuffle and an add per value, a chain of latencies) for as many more atomics.
    """
    if ATOMIC and SUM_GROUPS > 1 and not SCATTERED:
        groups = tl.arange(0, SUM_GROUPS)[None, None, :]
        sums = tl.sum(tl.reshape(x, (x.shape[0], x.shape[1], SUM_GROUPS, BLOCK_D // SUM_GROUPS)), axis=3)
        t = t0 + tl.arange(0, x.shape[0])[:, None, None]
        mask = (t < L) & n_mask[None, :, None] & (groups >= 0)
        offs = base[:, :, None] + t + 0 * groups
    elif SCATTERED:
        sums, step, owner = _channel_sums_scattered(x, channels, BLOCK_D)
        t = t0 + step
        mask = (t < L) & n_mask[None, :, None] & owner
        offs = base[:, :, None] + t
    else:
        sums = tl.sum(x, axis=2)  # (CHUNK, BLOCK_N)
        t = t0 + tl.arange(0, x.shape[0])[:, None]
        mask = (t < L) & n_mask[None, :]
        offs = base + t
    if ATOMIC:
        tl.atomic_add(ptr + offs, sums, mask=mask, sem="relaxed")
    else:
        tl.store(ptr + offs, sums, mask=mask)


@triton.jit
def _bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, states_ptr, dout_ptr, dfinal_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dinit_ptr, scratch_ptr,
    seg_q_ptr, seg_dt_ptr,
    L, N, DG, n_saved, B_ratio, C_ratio, B_groups, C_groups, seg_intervals, n_seg,
    s_u_b, s_u_d, s_u_l,
    s_dt_b, s_dt_d, s_dt_l,
    s_A_d, s_A_n,
    s_B_b, s_B_g, s_B_n, s_B_l,
    s_C_b, s_C_g, s_C_n, s_C_l,
    s_z_b, s_z_d, s_z_l,
    s_do_b, s_do_d, s_do_l,
    s_du_b, s_du_d, s_du_l,
    s_ddt_b, s_ddt_d, s_ddt_l,
    s_dz_b, s_dz_d, s_dz_l,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr, SUBCHUNKS: tl.constexpr,
    B_VARYING: tl.constexpr, C_VARYING: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_DFINAL: tl.constexpr, FOLD: tl.constexpr, ATOMIC: tl.constexpr, SCATTERED_SUMS: tl.constexpr,
    SUM_GROUPS: tl.constexpr, ADD_COPIES: tl.constexpr,
    DELTA_AHEAD: tl.constexpr, PREFETCH: tl.constexpr, FAST_MATH: tl.constexpr,
    LAST_SEGMENT_FIRST: tl.constexpr = False, PDL: tl.constexpr = False,
):
    """Grid: (channel blocks x segments, groups, batch), segment-major as in the forward;
    with LAST_SEGMENT_FIRST (channel blocks, groups, segments x batch), the last segment's
    programs first. PDL: launched as a dependent launch of _bwd_seg_kernel (FOLD only).

    Segment seg covers saved intervals seg * seg_intervals .. (seg + 1) * seg_intervals - 1
    (one segment when L is not split). With FOLD the gradient entering the segment from
    later steps is first folded from the later segments' local adjoints (seg_q_ptr:
    (batch, D, n_seg - 1, N), seg_dt_ptr: (batch, D, n_seg - 1), from _bwd_seg_kernel):
    q <- exp(A sum dt_k) q + q_k for k = n_seg - 1 .. seg + 1, starting from dfinal.
    """
    n_dblk = tl.cdiv(DG, BLOCK_D)
    pid_d, seg, batch, n_batch = program_position(DG, BLOCK_D, n_seg, LAST_SEGMENT_FIRST)
    if LAST_SEGMENT_FIRST:
        # The grid's first segment is the last: its programs, which fold nothing, start
        # first (and, with PDL, while _bwd_seg_kernel still runs).
        seg = n_seg - 1 - seg
    group = tl.program_id(1)
    n_grid_groups = tl.num_programs(1)
    dim = DG * n_grid_groups
    slot = group * n_dblk + pid_d  # this program's row in the per-program partial sums
    # This program's scratch: one per program, whichever the grid's layout.
    program = (tl.program_id(2).to(tl.int64) * n_grid_groups + group) * tl.num_programs(0) + tl.program_id(0)

    channels = tl.arange(0, BLOCK_D)
    d, d_mask, n, n_mask, nd_mask = channel_block(pid_d, group, DG, N, BLOCK_D, BLOCK_N)
    steps = tl.arange(0, CHUNK)

    # Same (step, state, channel) layout as the forward: each thread holds whole channels.
    A = load_state_tile(A_ptr, n, d, s_A_n, s_A_d, nd_mask)
    A2 = A * LOG2E
    bias = tl.load(bias_ptr + d, mask=d_mask, other=0.0).to(tl.float32) if HAS_BIAS else None
    skip = tl.load(D_ptr + d, mask=d_mask, other=0.0).to(tl.float32) if HAS_D else None
    B_tile = None if B_VARYING else load_state_tile(B_ptr, n, d, s_B_n, s_B_b, nd_mask)
    C_tile = None if C_VARYING else load_state_tile(C_ptr, n, d, s_C_n, s_C_b, nd_mask)
    B_base = B_ptr + batch * s_B_b + (group // B_ratio) * s_B_g
    C_base = C_ptr + batch * s_C_b + (group // C_ratio) * s_C_g
    u_base = u_ptr + batch * s_u_b + d[None, :] * s_u_d
    dt_base = delta_ptr + batch * s_dt_b + d[None, :] * s_dt_d
    z_base = z_ptr + batch * s_z_b + d[None, :] * s_z_d
    do_base = dout_ptr + batch * s_do_b + d[None, :] * s_do_d
    # du, ddelta, dz: (batch, D, L) through their strides (laid out like u, delta, z);
    # per-(segment, batch, channel) sums: (n_seg, batch, D[, N]); the initial state's
    # gradient: (batch, D, N).
    du_base = du_ptr + batch * s_du_b + d[None, :] * s_du_d
    ddt_base = ddelta_ptr + batch * s_ddt_b + d[None, :] * s_ddt_d
    dz_base = dz_ptr + batch * s_dz_b + d[None, :] * s_dz_d
    bdn_offs = (batch * dim + d[None, :]) * N + n[:, None]
    sbd = (seg * n_batch + batch) * dim + d  # (BLOCK_D,)
    sbdn_offs = sbd[None, :] * N + n[:, None]
    # Input-dependent dB, dC, summed over channels: with ATOMIC added into an fp32
    # (ADD_COPIES, batch, groups of B or C, N, L) buffer (neighbouring channel blocks into
    # different copies, which the caller adds up), else written per program into
    # (programs per batch, batch, N, L) partial sums that the caller adds up in order.
    if ATOMIC:
        copy = (pid_d % ADD_COPIES).to(tl.int64)
        dB_base = (((copy * n_batch + batch) * B_groups + group // B_ratio) * N + n[None, :]) * L
        dC_base = (((copy * n_batch + batch) * C_groups + group // C_ratio) * N + n[None, :]) * L
    else:
        dB_base = ((slot * tl.num_programs(2) + batch) * N + n[None, :]) * L
        dC_base = dB_base
    state_base = states_ptr + ((batch * dim + d[None, :]) * n_saved) * N + n[:, None]
    # Scratch: (programs, SUBCHUNKS, BLOCK_N, BLOCK_D), channel-fastest: the layout whose
    # coalesced access puts a channel's states on the lanes the (step, state, channel)
    # tiles use, so the states carried from step to step need no layout conversion.
    scratch_base = (
        scratch_ptr + program * (SUBCHUNKS * BLOCK_D * BLOCK_N) + n[:, None] * BLOCK_D + tl.arange(0, BLOCK_D)[None, :]
    )

    if HAS_DFINAL:
        # q: the gradient reaching the state before the current step, through that step.
        q = tl.load(dfinal_ptr + bdn_offs, mask=nd_mask, other=0.0).to(tl.float32)
    else:
        q = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    if FOLD:
        if PDL:
            # A dependent launch: _bwd_seg_kernel, launched just before, may still be
            # running; its local adjoints are complete once this returns. (Programs of
            # the last segment read none of them, and never wait.)
            if seg < n_seg - 1:
                tl.extra.cuda.gdc_wait()
        seg_row = (batch * dim + d) * (n_seg - 1)  # (BLOCK_D,)
        k = n_seg - 1
        while k > seg:
            dt_k = tl.load(seg_dt_ptr + seg_row + k - 1, mask=d_mask, other=0.0)
            q_k = tl.load(seg_q_ptr + (seg_row[None, :] + k - 1) * N + n[:, None], mask=nd_mask, other=0.0)
            q = tl.exp2(A2 * dt_k[None, :]) * q + q_k
            k -= 1
    # Like h below: q is carried from step to step, so it must start in the step layout,
    # or every step's decay and input would be converted to the layout of its load.
    q = in_step_layout(q, steps)
    dA_acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dB_acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dC_acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dD_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dbias_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)

    first_interval = seg * seg_intervals
    interval = tl.minimum(n_saved, first_interval + seg_intervals) - 1
    if PREFETCH:
        # The state saved before each interval and its first delta tile are loaded
        # during the interval after it (walked before it), as the chunks' tiles are.
        h_saved = tl.load(state_base + interval * N, mask=nd_mask, other=0.0)
        dt_first = _load_delta(interval * (SUBCHUNKS * CHUNK), L, steps, d_mask, dt_base, s_dt_l)
    while interval >= first_interval:
        t_start = interval * (SUBCHUNKS * CHUNK)
        n_sub = tl.minimum(SUBCHUNKS, tl.cdiv(L - t_start, CHUNK))
        # Pass 1: each chunk's start state, from the state saved before the interval
        # (nothing to do when states were saved before every chunk: SUBCHUNKS == 1).
        if PREFETCH:
            h = h_saved
        else:
            h = tl.load(state_base + interval * N, mask=nd_mask, other=0.0)
        if SUBCHUNKS > 1:
            tl.store(scratch_base, h, mask=nd_mask)
        h = in_step_layout(h, steps)
        # DELTA_AHEAD: each chunk's delta is loaded an iteration ahead and made (bias,
        # softplus, its sigmoid) at the end of the iteration before, in the load's compact
        # layout, and carried into the next: made next to its use, Triton's layout pass
        # would compute the chain once per thread of the state axis (see triton_fwd).
        # (Without it the pair made before the loop is never read, and compiled away.)
        if PREFETCH:
            dt_next, dsp_next = _make_delta(dt_first, t_start, L, steps, d_mask, bias, HAS_BIAS, SOFTPLUS, FAST_MATH)
            u_n, B_n = _load_uB(t_start, L, steps, d_mask, n, n_mask, u_base, B_base, s_u_l, s_B_l, s_B_n, B_VARYING)
        else:
            dt_next, dsp_next = _delta_at(t_start, L, steps, d_mask, bias, dt_base, s_dt_l,
                                          HAS_BIAS, SOFTPLUS, FAST_MATH)
        j = 1
        while j < n_sub:
            t0 = t_start + (j - 1) * CHUNK
            dt, _, raw_next = _chunk_delta(
                dt_next, dsp_next, t0, t0 + CHUNK, L, steps, d_mask, bias, dt_base, s_dt_l,
                DELTA_AHEAD, HAS_BIAS, SOFTPLUS, FAST_MATH,
            )
            if PREFETCH:
                # The next chunk is in the interval: pass 1 stops a chunk before its end.
                u_raw, B_raw = u_n, B_n
                u_n, B_n = _load_uB(t0 + CHUNK, L, steps, d_mask, n, n_mask, u_base, B_base,
                                    s_u_l, s_B_l, s_B_n, B_VARYING)
            else:
                u_raw, B_raw = _load_uB(t0, L, steps, d_mask, n, n_mask, u_base, B_base,
                                        s_u_l, s_B_l, s_B_n, B_VARYING)
            u, decay, Bt, inp = _chunk_inputs(u_raw, B_raw, dt, B_tile, A2, B_VARYING)
            decay_bits = decay.to(tl.int32, bitcast=True)
            inp_bits = inp.to(tl.int32, bitcast=True)
            for i in tl.static_range(CHUNK):
                sel = steps[:, None, None] == i
                a_i = tl.sum(tl.where(sel, decay_bits, 0), axis=0).to(tl.float32, bitcast=True)
                h = a_i * h + tl.sum(tl.where(sel, inp_bits, 0), axis=0).to(tl.float32, bitcast=True)
            tl.store(scratch_base + j * (BLOCK_D * BLOCK_N), h, mask=nd_mask)
            if DELTA_AHEAD:
                dt_next, dsp_next = _make_delta(raw_next, t0 + CHUNK, L, steps, d_mask, bias,
                                                HAS_BIAS, SOFTPLUS, FAST_MATH)
            j += 1
        if SUBCHUNKS > 1:
            tl.debug_barrier()  # the scratch written above is read back below

        # Pass 2: chunks in reverse.
        j = n_sub - 1
        dt_next, dsp_next = _delta_at(t_start + j * CHUNK, L, steps, d_mask, bias, dt_base, s_dt_l,
                                      HAS_BIAS, SOFTPLUS, FAST_MATH)
        if PREFETCH:
            # The next interval's (this one again at the first, never read).
            before = tl.maximum(interval - 1, first_interval)
            h_saved = tl.load(state_base + before * N, mask=nd_mask, other=0.0)
            dt_first = _load_delta(before * (SUBCHUNKS * CHUNK), L, steps, d_mask, dt_base, s_dt_l)
            # Software pipelining, as in the forward: the tiles of the chunk before are
            # loaded while this one is processed, carried as stored in their loads' layouts.
            u_n, B_n = _load_uB(t_start + j * CHUNK, L, steps, d_mask, n, n_mask, u_base, B_base,
                                s_u_l, s_B_l, s_B_n, B_VARYING)
            C_n, do_n, z_n = _load_C_dy(t_start + j * CHUNK, L, steps, d_mask, n, n_mask, C_base, do_base, z_base,
                                        s_C_l, s_C_n, s_do_l, s_z_l, C_VARYING, HAS_Z)
        while j >= 0:
            t0 = t_start + j * CHUNK
            t = t0 + steps
            m2 = (t < L)[:, None] & d_mask[None, :]
            if SUBCHUNKS > 1:
                h0 = in_step_layout(tl.load(scratch_base + j * (BLOCK_D * BLOCK_N), mask=nd_mask, other=0.0), steps)
            else:
                h0 = h
            # The chunk before (this one again at j = 0, never read).
            t_prev = t_start + tl.maximum(j - 1, 0) * CHUNK
            dt, dsp, raw_next = _chunk_delta(
                dt_next, dsp_next, t0, t_prev, L, steps, d_mask, bias, dt_base, s_dt_l,
                DELTA_AHEAD, HAS_BIAS, SOFTPLUS, FAST_MATH,
            )
            if PREFETCH:
                u_raw, B_raw, C_raw, do_raw, z_raw = u_n, B_n, C_n, do_n, z_n
                u_n, B_n = _load_uB(t_prev, L, steps, d_mask, n, n_mask, u_base, B_base, s_u_l, s_B_l, s_B_n, B_VARYING)
                C_n, do_n, z_n = _load_C_dy(t_prev, L, steps, d_mask, n, n_mask, C_base, do_base, z_base,
                                            s_C_l, s_C_n, s_do_l, s_z_l, C_VARYING, HAS_Z)
            else:
                u_raw, B_raw = _load_uB(t0, L, steps, d_mask, n, n_mask, u_base, B_base, s_u_l, s_B_l, s_B_n, B_VARYING)
                C_raw, do_raw, z_raw = _load_C_dy(t0, L, steps, d_mask, n, n_mask, C_base, do_base, z_base,
                                                  s_C_l, s_C_n, s_do_l, s_z_l, C_VARYING, HAS_Z)
            u, decay, Bt, inp = _chunk_inputs(u_raw, B_raw, dt, B_tile, A2, B_VARYING)
            if C_VARYING:
                C3 = C_raw.to(tl.float32)[:, :, None]
            else:
                C3 = C_tile[None, :, :]
            if B_VARYING:
                B3 = Bt[:, :, None]
            else:
                B3 = B_tile[None, :, :]
            # Recompute the chunk's states: hs holds the state after each step and hp the
            # one before it, both (CHUNK, BLOCK_N, BLOCK_D). Step i of a tile is
            # sum(where(step == i, bits, 0)) over its integer bit patterns: exact, and a
            # register selection (see triton_fwd). Every sum over states or channels is
            # taken once per chunk over whole tiles, after the step loops: per-step sums
            # would land in other register layouts and cost shared-memory round trips.
            decay_bits = decay.to(tl.int32, bitcast=True)
            inp_bits = inp.to(tl.int32, bitcast=True)
            hs = tl.zeros(decay.shape, dtype=tl.int32)
            hp = tl.zeros(decay.shape, dtype=tl.int32)
            h = h0
            for i in tl.static_range(CHUNK):
                sel = steps[:, None, None] == i
                hp = tl.where(sel, h.to(tl.int32, bitcast=True)[None, :, :], hp)
                a_i = tl.sum(tl.where(sel, decay_bits, 0), axis=0).to(tl.float32, bitcast=True)
                h = a_i * h + tl.sum(tl.where(sel, inp_bits, 0), axis=0).to(tl.float32, bitcast=True)
                hs = tl.where(sel, h.to(tl.int32, bitcast=True)[None, :, :], hs)
            hs = hs.to(tl.float32, bitcast=True)
            hp = hp.to(tl.float32, bitcast=True)

            dout = do_raw.to(tl.float32)
            if HAS_Z:
                y = tl.sum(hs * C3, axis=1)
                if HAS_D:
                    y = y + skip[None, :] * u
                zt = z_raw.to(tl.float32)
                sz = sigmoid(zt, FAST_MATH)
                dz = dout * y * sz * (1.0 + zt * (1.0 - sz))
                tl.store(dz_base + t[:, None] * s_dz_l, dz.to(dz_ptr.dtype.element_ty), mask=m2)
                dy = dout * zt * sz
            else:
                dy = dout
            if HAS_D:
                dD_acc += tl.sum(dy * u, axis=0)

            # Adjoint, last step first: g_t = C_t dy_t + exp(dt_{t+1} A) g_{t+1} = C_t dy_t + q.
            cdy_bits = (C3 * dy[:, None, :]).to(tl.int32, bitcast=True)
            gs = tl.zeros(decay.shape, dtype=tl.int32)
            for r in tl.static_range(CHUNK):
                i = CHUNK - 1 - r
                sel = steps[:, None, None] == i
                a_i = tl.sum(tl.where(sel, decay_bits, 0), axis=0).to(tl.float32, bitcast=True)
                g = q + tl.sum(tl.where(sel, cdy_bits, 0), axis=0).to(tl.float32, bitcast=True)
                gs = tl.where(sel, g.to(tl.int32, bitcast=True)[None, :, :], gs)
                q = a_i * g
            gs = gs.to(tl.float32, bitcast=True)

            dtu = dt * u
            gB = tl.sum(gs * B3, axis=1)  # (CHUNK, BLOCK_D)
            w = gs * decay * hp  # g_t exp(dt_t A) h_{t-1}
            gAh = tl.sum(w * A[None, :, :], axis=1)
            dA_acc += tl.sum(w * dt[:, None, :], axis=0)
            if B_VARYING:
                _write_channel_sums(
                    dB_ptr, dB_base, gs * dtu[:, None, :], t0, L, channels, n_mask, BLOCK_D, ATOMIC, SCATTERED_SUMS,
                    SUM_GROUPS,
                )
            else:
                dB_acc += tl.sum(gs * dtu[:, None, :], axis=0)
            if C_VARYING:
                _write_channel_sums(
                    dC_ptr, dC_base, hs * dy[:, None, :], t0, L, channels, n_mask, BLOCK_D, ATOMIC, SCATTERED_SUMS,
                    SUM_GROUPS,
                )
            else:
                dC_acc += tl.sum(hs * dy[:, None, :], axis=0)

            du = dt * gB
            if HAS_D:
                du = du + skip[None, :] * dy
            ddt = u * gB + gAh
            if SOFTPLUS:
                ddt = ddt * dsp
            ddt = tl.where(m2, ddt, 0.0)
            if HAS_BIAS:
                dbias_acc += tl.sum(ddt, axis=0)
            tl.store(du_base + t[:, None] * s_du_l, du.to(du_ptr.dtype.element_ty), mask=m2)
            tl.store(ddt_base + t[:, None] * s_ddt_l, ddt.to(ddelta_ptr.dtype.element_ty), mask=m2)
            if DELTA_AHEAD:
                dt_next, dsp_next = _make_delta(raw_next, t_prev, L, steps, d_mask, bias, HAS_BIAS, SOFTPLUS, FAST_MATH)
            j -= 1
        if SUBCHUNKS > 1:
            tl.debug_barrier()  # the next interval overwrites the scratch read above
        interval -= 1

    tl.store(dinit_ptr + bdn_offs, q, mask=nd_mask & (seg == 0))
    dn_offs = d[None, :] * N + n[:, None]  # in the (D, N) totals
    _write_time_sum(dA_ptr, sbdn_offs, dn_offs, dA_acc, nd_mask, ATOMIC)
    if not B_VARYING:
        _write_time_sum(dB_ptr, sbdn_offs, dn_offs, dB_acc, nd_mask, ATOMIC)
    if not C_VARYING:
        _write_time_sum(dC_ptr, sbdn_offs, dn_offs, dC_acc, nd_mask, ATOMIC)
    if HAS_D:
        _write_time_sum(dD_ptr, sbd, d, dD_acc, d_mask, ATOMIC)
    if HAS_BIAS:
        _write_time_sum(dbias_ptr, sbd, d, dbias_acc, d_mask, ATOMIC)


@triton.jit
def _write_time_sum(ptr, partial_offs, sum_offs, x, mask, ATOMIC: tl.constexpr):
    """One program's sum over its steps: added (ATOMIC) into the total at ptr + sum_offs,
    or stored as its (segment, batch) partial at ptr + partial_offs."""
    if ATOMIC:
        tl.atomic_add(ptr + sum_offs, x, mask=mask, sem="relaxed")
    else:
        tl.store(ptr + partial_offs, x, mask=mask)


@triton.jit
def _bwd_seg_kernel(
    delta_ptr, A_ptr, C_ptr, z_ptr, bias_ptr, dout_ptr, seg_q_ptr, seg_dt_ptr,
    L, N, DG, C_ratio, seg_len, n_seg,
    s_dt_b, s_dt_d, s_dt_l,
    s_A_d, s_A_n,
    s_C_b, s_C_g, s_C_n, s_C_l,
    s_z_b, s_z_d, s_z_l,
    s_do_b, s_do_d, s_do_l,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
    C_VARYING: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    DELTA_AHEAD: tl.constexpr, FAST_MATH: tl.constexpr, LAUNCH_DEPENDENTS: tl.constexpr = False,
    FMA_EXP_STEPS: tl.constexpr = 0, FMA_EXP_HALF: tl.constexpr = False,
):
    """First pass of a split backward. Grid: (channel blocks x (n_seg - 1), groups, batch).

    Segment seg = 1 .. n_seg - 1 runs the adjoint recurrence g_t = q + C_t dy_t,
    q <- exp(dt_t A) g_t backwards over its steps from q = 0, and stores the q reaching
    its first step (seg_q_ptr: (batch, D, n_seg - 1, N) fp32) and its sum of dt
    (seg_dt_ptr: (batch, D, n_seg - 1) fp32). dy needs only dout and z, not the states.
    FMA_EXP_STEPS, FMA_EXP_HALF: which decays are computed on the FMA pipe (fma_steps).
    """
    if LAUNCH_DEPENDENTS:
        # _bwd_kernel may start now; its programs that read what this kernel writes wait
        # for it to finish (see PDL there).
        tl.extra.cuda.gdc_launch_dependents()
    pid_d, seg, batch, n_batch = program_position(DG, BLOCK_D, n_seg - 1, False)
    seg += 1  # segments 1 .. n_seg - 1
    group = tl.program_id(1)
    dim = DG * tl.num_programs(1)

    d, d_mask, n, n_mask, nd_mask = channel_block(pid_d, group, DG, N, BLOCK_D, BLOCK_N)
    steps = tl.arange(0, CHUNK)
    on_fma = fma_steps(steps, n, FMA_EXP_STEPS, FMA_EXP_HALF)

    A2 = load_state_tile(A_ptr, n, d, s_A_n, s_A_d, nd_mask) * LOG2E
    bias = tl.load(bias_ptr + d, mask=d_mask, other=0.0).to(tl.float32) if HAS_BIAS else None
    C_tile = None if C_VARYING else load_state_tile(C_ptr, n, d, s_C_n, s_C_b, nd_mask)
    C_base = C_ptr + batch * s_C_b + (group // C_ratio) * s_C_g
    dt_base = delta_ptr + batch * s_dt_b + d[None, :] * s_dt_d
    z_base = z_ptr + batch * s_z_b + d[None, :] * s_z_d
    do_base = dout_ptr + batch * s_do_b + d[None, :] * s_do_d

    q = in_step_layout(tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32), steps)
    dt_sum = tl.zeros((BLOCK_D,), dtype=tl.float32)
    t_begin = seg * seg_len
    chunk = tl.cdiv(tl.minimum(seg_len, L - t_begin), CHUNK) - 1
    # DELTA_AHEAD: as in _bwd_kernel, a chunk's delta and dy are made at the end of the
    # iteration before (from loads issued at its start), in their loads' layout.
    # (Without it the pair made before the loop is never read, and compiled away.)
    t_last = t_begin + chunk * CHUNK
    dt_next, dsp_next = _delta_at(t_last, L, steps, d_mask, bias, dt_base, s_dt_l, HAS_BIAS, SOFTPLUS, FAST_MATH)
    dy_next = _seg_dy(*_load_dy(t_last, L, steps, d_mask, do_base, z_base, s_do_l, s_z_l, HAS_Z), HAS_Z, FAST_MATH)
    while chunk >= 0:
        t0 = t_begin + chunk * CHUNK
        t = t0 + steps
        t_prev = t_begin + tl.maximum(chunk - 1, 0) * CHUNK  # this chunk again at 0, never read
        # Padded steps get delta 0 (decay 1) and dout 0.
        dt, _, raw_dt = _chunk_delta(
            dt_next, dsp_next, t0, t_prev, L, steps, d_mask, bias, dt_base, s_dt_l,
            DELTA_AHEAD, HAS_BIAS, SOFTPLUS, FAST_MATH,
        )
        if DELTA_AHEAD:
            dy = dy_next
            raw_do, raw_z = _load_dy(t_prev, L, steps, d_mask, do_base, z_base, s_do_l, s_z_l, HAS_Z)
        else:
            dy = _seg_dy(*_load_dy(t0, L, steps, d_mask, do_base, z_base, s_do_l, s_z_l, HAS_Z), HAS_Z, FAST_MATH)
        dt_sum += tl.sum(dt, axis=0)
        decay_bits = decays(dt, A2, on_fma).to(tl.int32, bitcast=True)
        if C_VARYING:
            C3 = load_f32(C_base + t[:, None] * s_C_l + n[None, :] * s_C_n, (t < L)[:, None] & n_mask[None, :])[:, :, None]
        else:
            C3 = C_tile[None, :, :]
        # Whole (CHUNK, BLOCK_N, BLOCK_D) tiles first, then a per-step selection inside
        # each thread, as in _bwd_kernel: per-step (BLOCK_N,) and (BLOCK_D,) slices would
        # land in other layouts than q's and be converted at every step.
        cdy_bits = (C3 * dy[:, None, :]).to(tl.int32, bitcast=True)
        for r in tl.static_range(CHUNK):
            i = CHUNK - 1 - r
            sel = steps[:, None, None] == i
            a_i = tl.sum(tl.where(sel, decay_bits, 0), axis=0).to(tl.float32, bitcast=True)
            q = a_i * (q + tl.sum(tl.where(sel, cdy_bits, 0), axis=0).to(tl.float32, bitcast=True))
        if DELTA_AHEAD:
            dt_next, dsp_next = _make_delta(raw_dt, t_prev, L, steps, d_mask, bias, HAS_BIAS, SOFTPLUS, FAST_MATH)
            dy_next = _seg_dy(raw_do, raw_z, HAS_Z, FAST_MATH)
        chunk -= 1
    seg_row = (batch * dim + d) * (n_seg - 1) + seg - 1  # (BLOCK_D,)
    tl.store(seg_q_ptr + seg_row[None, :] * N + n[:, None], q, mask=nd_mask)
    tl.store(seg_dt_ptr + seg_row, dt_sum, mask=d_mask)


@dataclasses.dataclass(frozen=True)
class BwdConfig:
    """Launch shape: channels per program, steps per chunk, warps per program, the
    steps per segment when L is split across programs (None: one segment), and a cap on
    registers per thread (None: the compiler's choice)."""

    block_d: int
    chunk: int
    num_warps: int
    seg_len: int | None = None
    # dB and dC summed over the channels by exchanges that halve the steps each time
    # (_channel_sums_scattered) rather than by tl.sum's butterfly.
    scattered_sums: bool = False
    # Input-dependent dB and dC: the program's channels summed in this many groups, each
    # group's sums added into memory on their own (1: one sum over all of them); the
    # fixed-order (deterministic) sums keep 1.
    sum_groups: int = 1
    # ... into this many copies of their buffer (fewer additions an address at once;
    # the caller adds the copies up); fixed-order sums keep 1.
    add_copies: int = 1
    maxnreg: int | None = None
    # Each chunk's delta made an iteration ahead, in the load's layout (see the kernel).
    delta_ahead: bool = False
    # Each chunk's tiles loaded an iteration ahead: u and B in the first pass, u, B, C,
    # dout and z in the second, and the state saved before each interval with its first
    # delta tile during the interval walked before it.
    prefetch: bool = False
    # A split L's two kernels overlapped: the main kernel launched as a dependent launch
    # of the first pass (Hopper and later; elsewhere only the order below), its grid
    # ordered so that the last segment's programs, which need nothing from the first
    # pass, start first, while it still runs (bwd_config's default: OVERLAP).
    overlap: bool = False
    # A split L's first pass: the decays of the last this many steps of each chunk (with
    # seg_fma_exp_half the first half of their states only) computed on the FMA pipe (exp2_fma).
    seg_fma_exp_steps: int = 0
    seg_fma_exp_half: bool = False


# Splitting L, as in the forward: segments until about SPLIT_PROGRAMS programs run, each
# at least MIN_SEG_LEN steps, whenever fewer than TARGET_PROGRAMS programs would run. The
# first pass (the local adjoints) costs about a third of the main pass per step. On an
# H100 (programs of 8 channels): 1536 programs 3.1 ms split vs 3.5 ms not, at
# (8, 1536, 2048, 16); 4096 programs 8.1 vs 7.5 ms; 192 programs 25 vs 76 ms at batch 1
# and L = 2^17.
SPLIT_L = True
TARGET_PROGRAMS = 2048
# The default of BwdConfig.scattered_sums: fewer instructions in the sm_90 build (chunk
# loop 1357 -> 1245 at N = 16) but 5-8% slower on an H100 at the benchmark shapes
# (benchmarks/RESULTS.md, 2026-12-05), so off.
SCATTERED_SUMS = False
# The default of BwdConfig.delta_ahead: fewer instructions in the sm_90 build (N = 16, 8
# channels x 8 steps: pass 1 327 -> 269, pass 2 1357 -> 1278, the split's first pass
# 359 -> 279), and 5-7% faster at every benchmark shape on an H200 (2026-12-07: 1.419
# against 1.499 ms at (8, 1536, 2048, 16), 3.417 / 3.621, 5.709 / 6.102, 11.49 / 12.27).
DELTA_AHEAD = True
SPLIT_PROGRAMS = 8192
MIN_SEG_LEN = 1024
# The default of BwdConfig.prefetch: 1.5-1.9% faster at the four benchmark shapes on an
# H100 (2026-12-07: 1.337 against 1.359 ms at (8, 1536, 2048, 16), 3.231 / 3.281, 5.347 /
# 5.443, 10.77 / 10.98), 255 registers without spilling.
PREFETCH = True
# The default of BwdConfig.sum_groups (None: chosen by the launch). Two groups take one
# level of shuffles and adds off the dB and dC butterflies, whose latency chains hold a
# third of the backward's stall samples, and double the atomics, each address of dB and
# dC then taking 2 * (channel blocks of its group) additions. With prefetch on an H100
# (2026-12-07): 1.285 against 1.337 ms at (8, 1536, 2048, 16) and 5.193 / 5.347, 10.39 /
# 10.77 at the long shapes (192 blocks, 384 additions an address), but 3.500 against
# 3.231 at (8, 4096, 2048, 16) (512 blocks, 1024 additions); 4 groups were slower
# everywhere. So: 2 groups where an address takes at most MAX_ADDS ...
SUM_GROUPS: int | None = None
MAX_ADDS = 512
# ... or, with BwdConfig.add_copies, where 2 copies of the buffer bring it there: on an
# H200 (2026-12-07) two groups into two copies ran 3.032 against 3.162 ms (one group, one
# copy) at (8, 4096, 2048, 16), and copies changed nothing where the additions were few
# already (1.291 / 1.282 ms at (8, 1536, 2048, 16), 5.170 / 5.175 and 10.42 / 10.42 at the
# long shapes); on an H100 the adopted launch then ran forward + backward in 3.619 ms
# against 3.849 (1.64x mamba_ssm, side by side). Beyond 2 * MAX_ADDS an address: one
# group, one copy (not timed).
MAX_COPIES = 2
# The default of BwdConfig.overlap: on an H100 (2026-12-07) the backward kernel ran
# 5.115 against 5.170 ms at (4, 1536, 16384, 16) and 1.283 / 1.290 at (8, 1536, 2048, 16),
# unchanged at batch 1 (10.42 / 10.40, 64 segments); forward + backward side by side
# 6.336 against 6.401 ms and 13.10 / 13.16.
OVERLAP = True


def bwd_config(rows: int, dg: int, block_n: int, *, length: int = 0, align: int = 64) -> BwdConfig:
    """About 32 (step, state) values per thread and channel: the backward keeps several
    (step, state, channel) tiles live at once, and wider programs spill registers.

    rows: batch * groups; dg: channels per group; block_n: N rounded up to a power of two;
    length: L; align: the interval between saved states (segments start at saved states).
    Measured at N = 16: on an H100, 8 channels x 4 steps per one-warp program ran 1.6-2x
    faster than 32 x 4 (which spills) and on par with 16 x 2; on an H200, once softplus
    took the fast path, 8 x 8 ran 13-18% faster than 8 x 4 where programs are many or
    L long (1.0x at (8, 1536, 2048), where the split decides).
    """
    num_warps = 1 if block_n <= 64 else 4
    chunk = 8
    block_d = max(1, (32 * 32 * num_warps) // (chunk * block_n))
    block_d = min(block_d, 32 * num_warps, next_power_of_2(dg))
    programs = rows * cdiv(dg, block_d)
    seg_len = None
    if SPLIT_L and programs < TARGET_PROGRAMS:
        seg_len = split_length(programs, length, math.lcm(align, chunk), target=SPLIT_PROGRAMS, min_len=MIN_SEG_LEN)
    sum_groups, add_copies = SUM_GROUPS, 1
    if sum_groups is None:
        adds = 2 * cdiv(dg, block_d)  # additions an address of dB or dC takes with two groups
        add_copies = min(MAX_COPIES, next_power_of_2(cdiv(adds, MAX_ADDS)))
        sum_groups = 2 if adds <= MAX_ADDS * add_copies else 1
        add_copies = add_copies if sum_groups == 2 else 1
    return BwdConfig(
        block_d=block_d, chunk=chunk, num_warps=num_warps, seg_len=seg_len, scattered_sums=SCATTERED_SUMS,
        delta_ahead=DELTA_AHEAD, prefetch=PREFETCH, sum_groups=sum_groups, add_copies=add_copies, overlap=OVERLAP,
    )


def scan_bwd(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
    states: torch.Tensor,
    save_every: int,
    dout: torch.Tensor,
    dfinal: torch.Tensor | None,
    *,
    config: BwdConfig | None = None,
    dz_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """Gradients of ``selective_scan`` from the forward's saved states.

    states: (batch, D, cdiv(L, save_every), N) fp32 from ``scan_fwd``; dout (batch, D, L);
    dfinal: (batch, D, N) gradient of the final state, or None; dz_out: a (batch, D, L)
    tensor of z's dtype, any strides, to write dz into (a slice of a larger gradient
    buffer), or None for a new one.
    Returns (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state): each in its
    input's dtype and shape, None for an absent optional input; dinitial_state fp32.
    """
    batch, dim, length = u.shape
    n_state = A.shape[1]
    groups = n_groups(B, C)
    dg = dim // groups
    block_n = next_power_of_2(n_state)
    if config is not None:
        cfg = config
    else:
        cfg = bwd_config(batch * groups, dg, block_n, length=length, align=save_every)
    assert save_every % cfg.chunk == 0, "saved states must fall on chunk boundaries"
    fast = fast_math(u, delta, z)
    n_saved = states.shape[2]
    dev, f32 = u.device, torch.float32
    n_dblk = cdiv(dg, cfg.block_d)
    slots = groups * n_dblk
    n_seg, seg_len = 1, n_saved * save_every
    if cfg.seg_len is not None and cfg.seg_len < length:
        assert cfg.seg_len % save_every == 0, "segments start at saved states"
        n_seg, seg_len = cdiv(length, cfg.seg_len), cfg.seg_len

    atomic = not torch.are_deterministic_algorithms_enabled()
    copies = cfg.add_copies if atomic else 1
    # Sums over time (dA, time-invariant dB and dC, dD, ddelta_bias) and input-dependent
    # dB, dC: with atomics, zeroed totals in one workspace the programs add into (finished
    # by one kernel below); else one partial per program row, added up in a fixed order.
    if atomic:
        sums = atomic_sums(B, C, batch=batch, dim=dim, n_state=n_state, length=length, copies=copies,
                           dD=D is not None, dbias=delta_bias is not None, device=dev)
        dA, dB_part, dC_part, dD, dbias = sums.dA, sums.dB, sums.dC, sums.dD, sums.dbias
    else:
        dA, dB_time, dC_time, dD, dbias = _time_sums(
            n_seg, batch, dim, n_state, dev,
            dB=B.dim() == 2, dC=C.dim() == 2, dD=D is not None, dbias=delta_bias is not None,
        )
        dB_part = dB_time if B.dim() == 2 else _bc_grad_buffer(slots, batch, n_state, length, dev)
        dC_part = dC_time if C.dim() == 2 else _bc_grad_buffer(slots, batch, n_state, length, dev)
    # Then the split's first pass: the GPU, idle since the forward, starts on it while the
    # host prepares the main kernel. (The workspace's fill goes before it: the main kernel,
    # a dependent launch with cfg.overlap, may overlap only the kernel just before it.)
    seg_q = torch.empty((batch, dim, n_seg - 1, n_state) if n_seg > 1 else (0,), dtype=f32, device=dev)
    seg_dt = torch.empty((batch, dim, n_seg - 1) if n_seg > 1 else (0,), dtype=f32, device=dev)
    dout = dout if dout.stride(-1) == 1 else dout.contiguous()
    dfinal = dfinal.contiguous() if dfinal is not None else None
    b_varying, sB = bc_strides(B)
    c_varying, sC = bc_strides(C)
    z_arg = z if z is not None else u
    bias_arg = delta_bias if delta_bias is not None else A
    flags = dict(
        BLOCK_D=cfg.block_d, BLOCK_N=block_n, CHUNK=cfg.chunk, C_VARYING=c_varying,
        HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
        DELTA_AHEAD=cfg.delta_ahead, FAST_MATH=fast, num_warps=cfg.num_warps, maxnreg=cfg.maxnreg,
    )
    overlap = cfg.overlap and n_seg > 1
    pdl = overlap and dependent_launch.enabled_for(dev)
    if n_seg > 1:
        _bwd_seg_kernel[(n_dblk * (n_seg - 1), groups, batch)](
            delta, A, C, z_arg, bias_arg, dout, seg_q, seg_dt,
            length, n_state, dg, group_ratio(C, groups), seg_len, n_seg,
            *delta.stride(), *A.stride(), *sC, *z_arg.stride(), *dout.stride(),
            LAUNCH_DEPENDENTS=pdl, FMA_EXP_STEPS=cfg.seg_fma_exp_steps, FMA_EXP_HALF=cfg.seg_fma_exp_half, **flags,
        )

    du = empty_like_layout(u)
    ddelta = empty_like_layout(delta)
    if z is None:
        dz = du
    else:
        dz = dz_out if dz_out is not None else empty_like_layout(z)
    dinit = torch.empty((batch, dim, n_state), dtype=f32, device=dev)
    subchunks = save_every // cfg.chunk
    # Chunk start states of the interval being walked (none needed when intervals are single chunks).
    scratch_len = n_seg * batch * slots * subchunks * cfg.block_d * block_n if subchunks > 1 else 0
    scratch = torch.empty(scratch_len, dtype=f32, device=dev)
    grid = (n_dblk, groups, n_seg * batch) if overlap else (n_dblk * n_seg, groups, batch)
    _bwd_kernel[grid](
        u, delta, A, B, C, D if D is not None else A, z_arg, bias_arg,
        states, dout, dfinal if dfinal is not None else dA,
        du, ddelta, dz, dA, dB_part, dC_part, dD if D is not None else dA, dbias if delta_bias is not None else dA,
        dinit, scratch, seg_q, seg_dt,
        length, n_state, dg, n_saved, group_ratio(B, groups), group_ratio(C, groups), _bc_groups(B), _bc_groups(C),
        seg_len // save_every, n_seg,
        *u.stride(), *delta.stride(), *A.stride(), *sB, *sC, *z_arg.stride(), *dout.stride(),
        *du.stride(), *ddelta.stride(), *dz.stride(),
        SUBCHUNKS=subchunks, B_VARYING=b_varying, HAS_D=D is not None, HAS_DFINAL=dfinal is not None, FOLD=n_seg > 1,
        ATOMIC=atomic, SCATTERED_SUMS=cfg.scattered_sums, SUM_GROUPS=min(cfg.sum_groups, cfg.block_d),
        ADD_COPIES=copies,
        PREFETCH=cfg.prefetch, LAST_SEGMENT_FIRST=overlap, PDL=pdl, launch_pdl=pdl, **flags,
    )

    if atomic:
        dA, dB, dC, dD, dbias = finish_sums(sums, B, C, D, delta_bias)
    else:
        dA, dB, dC = dA.sum((0, 1)), _bc_grad(dB_part, B, groups, n_dblk), _bc_grad(dC_part, C, groups, n_dblk)
        dD = dD.sum((0, 1)).to(D.dtype) if D is not None else None
        dbias = dbias.sum((0, 1)).to(delta_bias.dtype) if delta_bias is not None else None
    return du, ddelta, dA, dB, dC, dD, dz if z is not None else None, dbias, dinit


def _bc_groups(X: torch.Tensor) -> int:
    """Groups of B or C: G for (batch, G, N, L), else 1."""
    return X.shape[1] if X.dim() == 4 else 1


def _time_sums(
    n_seg: int, batch: int, dim: int, n_state: int, dev, *, dB: bool, dC: bool, dD: bool, dbias: bool
) -> tuple[torch.Tensor | None, ...]:
    """Fixed-order (deterministic) partial sums over time, one per (segment, batch) row:
    fp32 (n_seg, batch, D, N) for dA and the wanted time-invariant dB, dC, (n_seg, batch,
    D) for dD, ddelta_bias; None for the others."""

    def alloc(wanted: bool, *shape: int) -> torch.Tensor | None:
        return torch.empty((n_seg, batch, *shape), dtype=torch.float32, device=dev) if wanted else None

    return (
        alloc(True, dim, n_state), alloc(dB, dim, n_state), alloc(dC, dim, n_state), alloc(dD, dim), alloc(dbias, dim)
    )


def _bc_grad_buffer(slots: int, batch: int, n_state: int, length: int, dev) -> torch.Tensor:
    """Fixed-order partial sums of an input-dependent dB or dC, one per channel block:
    fp32 (slots, batch, N, L) (segments cover disjoint steps)."""
    return torch.empty((slots, batch, n_state, length), dtype=torch.float32, device=dev)


def _bc_grad(part: torch.Tensor, X: torch.Tensor, groups: int, n_dblk: int) -> torch.Tensor:
    """Adds the fixed-order partial sums of dB or dC up into X's shape and dtype."""
    if X.dim() == 2:
        return part.sum((0, 1)).to(X.dtype)
    if X.dim() == 3:
        return part.sum(0).to(X.dtype)
    x_groups = X.shape[1]
    per_group = part.view(x_groups, (groups // x_groups) * n_dblk, *part.shape[1:]).sum(1)
    return per_group.permute(1, 0, 2, 3).to(X.dtype)
