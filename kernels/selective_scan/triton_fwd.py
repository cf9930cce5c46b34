"""Forward selective-scan kernel (Triton).

One program owns ``BLOCK_D`` channels of one batch element (all in one B/C group) and
walks the sequence in chunks of ``CHUNK`` steps, carrying the fp32 state
``h: (BLOCK_D, N)`` in registers. Per chunk it loads coalesced ``(BLOCK_D, CHUNK)``
tiles of delta, u, z and one ``(N, CHUNK)`` tile of B and C shared by all its channels,
builds the per-step decay ``exp(delta * A)`` and input ``delta * B * u`` on a
``(BLOCK_D, N, CHUNK)`` tile, scans it over the chunk, adds the carried state, and
reduces ``y = C . h`` over N before the skip and gate. Nothing of size
(batch, D, L, N) ever reaches memory; the state at the start of each chunk is stored
(fp32) only when a backward pass will need it. README.md has the math.
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
    channel_block, decays, fma_steps, in_step_layout, load, load_state_tile, program_position, split_length,
)


@triton.jit
def _fwd_load(
    t, m2, mtn, n, u_base, dt_base, z_base, B_base, C_base,
    s_u_l, s_dt_l, s_z_l, s_B_n, s_B_l, s_C_n, s_C_l,
    B_VARYING: tl.constexpr, C_VARYING: tl.constexpr, HAS_Z: tl.constexpr, WRITE_OUT: tl.constexpr,
):
    """A chunk's input tiles as stored (dt, u, z: (CHUNK, BLOCK_D); B, C: (CHUNK, BLOCK_N)).

    Absent tiles are returned as dt, which the caller never reads.
    """
    dt, u, z = _fwd_load_rows(t, m2, u_base, dt_base, z_base, s_u_l, s_dt_l, s_z_l, HAS_Z, WRITE_OUT)
    Bt, Ct = _fwd_load_bc(t, mtn, n, B_base, C_base, s_B_n, s_B_l, s_C_n, s_C_l, dt, B_VARYING, C_VARYING, WRITE_OUT)
    return dt, u, z, Bt, Ct


@triton.jit
def _fwd_load_rows(t, m2, u_base, dt_base, z_base, s_u_l, s_dt_l, s_z_l, HAS_Z: tl.constexpr, WRITE_OUT: tl.constexpr):
    """The per-channel tiles of _fwd_load: dt, u, z (z: dt when absent)."""
    dt = load(dt_base + t[:, None] * s_dt_l, m2)
    u = load(u_base + t[:, None] * s_u_l, m2)
    z = dt
    if HAS_Z and WRITE_OUT:
        z = load(z_base + t[:, None] * s_z_l, m2)
    return dt, u, z


@triton.jit
def _fwd_load_bc(
    t, mtn, n, B_base, C_base, s_B_n, s_B_l, s_C_n, s_C_l, absent,
    B_VARYING: tl.constexpr, C_VARYING: tl.constexpr, WRITE_OUT: tl.constexpr,
):
    """The B and C tiles of _fwd_load, in fp32 (``absent`` for one that is not loaded)."""
    # B and C are widened to fp32 here, in the load's compact layout, before they are
    # spread to every thread of the chunk's (step, state, channel) tile: one conversion
    # per value rather than one per thread.
    Bt = absent
    if B_VARYING:
        Bt = load(B_base + t[:, None] * s_B_l + n[None, :] * s_B_n, mtn).to(tl.float32)
    Ct = absent
    if C_VARYING and WRITE_OUT:
        Ct = load(C_base + t[:, None] * s_C_l + n[None, :] * s_C_n, mtn).to(tl.float32)
    return Bt, Ct


@triton.jit
def _fwd_delta(dt, u, m2, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, FAST_MATH: tl.constexpr):
    """A chunk's delta and u tiles (CHUNK, BLOCK_D) as stored -> (delta, delta * u) in fp32,
    delta = softplus(delta + bias), 0 where m2 (None: everywhere valid) masks a step or
    channel out. bias: per channel, shaped to broadcast against the tiles ((1, BLOCK_D)
    here)."""
    dt = dt.to(tl.float32)
    if HAS_BIAS:
        dt = dt + bias
    if SOFTPLUS:
        dt = softplus(dt, FAST_MATH)
    if m2 is not None:
        # Padded steps and channels get delta = 0: decay 1 and input 0 leave h unchanged.
        dt = tl.where(m2, dt, 0.0)
    return dt, dt * u.to(tl.float32)


@triton.jit
def _fwd_gate(z, FAST_MATH: tl.constexpr):
    """silu(z) = z * sigmoid(z) in fp32 from z as stored."""
    zt = z.to(tl.float32)
    return zt * sigmoid(zt, FAST_MATH)


@triton.jit
def _fwd_ahead(
    raw_dt, u, z, m2, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, DELTA_AHEAD: tl.constexpr,
    GATE: tl.constexpr, FAST_MATH: tl.constexpr,
):
    """A chunk's tiles as the prefetching loop carries them into the chunk's iteration:
    (delta, delta * u) made with DELTA_AHEAD (else raw dt twice), and z's gate silu(z) with
    GATE (else z as stored). Returns (dt, dtu, z)."""
    dt, dtu = raw_dt, raw_dt
    if DELTA_AHEAD:
        dt, dtu = _fwd_delta(raw_dt, u, m2, bias, HAS_BIAS, SOFTPLUS, FAST_MATH)
    if GATE:
        z = _fwd_gate(z, FAST_MATH)
    return dt, dtu, z


@triton.jit
def _fwd_chunk(
    h, t, m2, dt, dtu, u, z, Bt, Ct, steps, A2, skip, B_tile, C_tile, out_base, s_out_l, on_fma,
    CHUNK: tl.constexpr, B_VARYING: tl.constexpr, C_VARYING: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, WRITE_OUT: tl.constexpr, FAST_MATH: tl.constexpr,
    GATED: tl.constexpr = False,
):
    """Advances h (N, BLOCK_D) over the chunk's steps t (CHUNK,) and writes their outputs.

    dt, dtu: the chunk's delta and delta * u from _fwd_delta; u, z, Bt, Ct: its tiles from
    _fwd_load (with GATED, z is silu(z) from _fwd_gate instead); m2: the mask of its
    (CHUNK, BLOCK_D) tiles (None for a full chunk of full channel blocks); on_fma: which
    decays are taken off the multi-function unit (triton_common.fma_steps).
    Returns (h, the chunk's sum of dt per channel (BLOCK_D,)). Without WRITE_OUT only the
    state advances (the first pass of a split sequence); the unused sum of dt costs
    nothing where the caller drops it.
    """
    u = u.to(tl.float32)

    decay = decays(dt, A2, on_fma)  # (CHUNK, BLOCK_N, BLOCK_D)
    if B_VARYING:
        inp = dtu[:, None, :] * Bt.to(tl.float32)[:, :, None]
    else:
        inp = dtu[:, None, :] * B_tile[None, :, :]
    # The recurrence runs step by step inside each thread. Step i of a tile is taken as
    # sum(where(step == i, bits, 0)) over the integer bit patterns: exact, and since the
    # step axis is thread-local the compiler turns it into a register selection.
    # The states of every step are gathered into hs and y = C . h is taken once per chunk
    # over the whole tile: a per-step reduction would land in another register layout
    # than y's and cost a round trip through shared memory at every step.
    decay_bits = decay.to(tl.int32, bitcast=True)
    inp_bits = inp.to(tl.int32, bitcast=True)
    hs = tl.zeros(decay.shape, dtype=tl.int32)
    for i in tl.static_range(CHUNK):
        sel = steps[:, None, None] == i
        a_i = tl.sum(tl.where(sel, decay_bits, 0), axis=0).to(tl.float32, bitcast=True)
        h = a_i * h + tl.sum(tl.where(sel, inp_bits, 0), axis=0).to(tl.float32, bitcast=True)
        if WRITE_OUT:
            hs = tl.where(sel, h.to(tl.int32, bitcast=True)[None, :, :], hs)

    if WRITE_OUT:
        if C_VARYING:
            y = tl.sum(hs.to(tl.float32, bitcast=True) * Ct.to(tl.float32)[:, :, None], axis=1)
        else:
            y = tl.sum(hs.to(tl.float32, bitcast=True) * C_tile[None, :, :], axis=1)
        if HAS_D:
            y = y + skip[None, :] * u
        if HAS_Z:
            if GATED:
                y = y * z
            else:
                y = y * _fwd_gate(z, FAST_MATH)
        tl.store(out_base + t[:, None] * s_out_l, y.to(out_base.dtype.element_ty), mask=m2)
    return h, tl.sum(dt, axis=0)


@triton.jit
def _fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, init_ptr,
    out_ptr, final_ptr, states_ptr, seg_ptr, seg_dt_ptr,
    L, N, DG, n_saved, B_ratio, C_ratio, seg_chunks, n_seg,
    s_u_b, s_u_d, s_u_l,
    s_dt_b, s_dt_d, s_dt_l,
    s_A_d, s_A_n,
    s_B_b, s_B_g, s_B_n, s_B_l,
    s_C_b, s_C_g, s_C_n, s_C_l,
    s_z_b, s_z_d, s_z_l,
    s_init_b, s_init_d, s_init_n,
    s_out_b, s_out_d, s_out_l,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr, SAVE_EVERY: tl.constexpr,
    EVEN_D: tl.constexpr, EVEN_N: tl.constexpr,
    B_VARYING: tl.constexpr, C_VARYING: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_INIT: tl.constexpr, SAVE_STATES: tl.constexpr, WRITE_OUT: tl.constexpr, START_FROM_SEGMENTS: tl.constexpr,
    PREFETCH: tl.constexpr, DELTA_AHEAD: tl.constexpr, LATE_LOADS: tl.constexpr, FAST_MATH: tl.constexpr,
    FMA_EXP_STEPS: tl.constexpr = 0, FMA_EXP_HALF: tl.constexpr = False,
    SEGMENT_SLOWEST: tl.constexpr = False, PDL: tl.constexpr = False, LAUNCH_DEPENDENTS: tl.constexpr = False,
):
    """Grid: (channel blocks x segments, groups, batch); with SEGMENT_SLOWEST (channel
    blocks, groups, segments x batch), every batch row's first segment first.

    The sequence is cut into n_seg segments of seg_chunks chunks (one segment when L is
    not split). Program axis 0 runs segment-major, so programs in flight together share
    one segment's B and C in L2.
    - WRITE_OUT=False (first pass of a split): segment seg < n_seg - 1 runs from a zero
      state and stores its end state (seg_ptr: (batch, D, n_seg - 1, N) fp32) and its sum
      of dt (seg_dt_ptr: (batch, D, n_seg - 1) fp32); nothing else is written.
    - WRITE_OUT=True: writes out, the saved states and (last segment) the final state.
      With START_FROM_SEGMENTS the program first folds the earlier segments' end states
      into its true start state: h <- exp(A sum dt_k) h + h_k for k = 0 .. seg - 1.
      With PDL it is a dependent launch of the first pass, and waits for it before that
      fold (programs of the first segment fold nothing and never wait).
    LAUNCH_DEPENDENTS (first pass): lets the second pass start while this one runs.
    FMA_EXP_STEPS: the decays of the last this many steps of each chunk (with FMA_EXP_HALF
    their first half of states only) are computed on the FMA pipe (exp2_fma), the rest
    on the multi-function unit.
    """
    if LAUNCH_DEPENDENTS:
        tl.extra.cuda.gdc_launch_dependents()
    # SEGMENT_SLOWEST: the first segment's programs, which need nothing from the first
    # pass, start first.
    pid_d, seg, batch, n_batch = program_position(DG, BLOCK_D, n_seg, SEGMENT_SLOWEST)
    group = tl.program_id(1)
    dim = DG * tl.num_programs(1)

    d, d_mask, n, n_mask, nd_mask = channel_block(pid_d, group, DG, N, BLOCK_D, BLOCK_N)
    steps = tl.arange(0, CHUNK)
    on_fma = fma_steps(steps, n, FMA_EXP_STEPS, FMA_EXP_HALF)

    # Tiles are laid out (step, state, channel): Triton spreads lanes over the last axis
    # first, so each thread holds whole channels (every step and state of the chunk) and
    # neither the recurrence nor the sum over states for y needs other threads.
    # exp(delta * A) = exp2(delta * A * log2(e)): premultiply A once.
    A2 = load_state_tile(A_ptr, n, d, s_A_n, s_A_d, nd_mask) * LOG2E
    bias = tl.load(bias_ptr + d, mask=d_mask, other=0.0).to(tl.float32)[None, :] if HAS_BIAS else None
    skip = tl.load(D_ptr + d, mask=d_mask, other=0.0).to(tl.float32) if HAS_D else None
    # Time-invariant B or C: (D, N), read once as an (N, BLOCK_D) tile.
    B_tile = None if B_VARYING else load_state_tile(B_ptr, n, d, s_B_n, s_B_b, nd_mask)
    C_tile = None if C_VARYING else load_state_tile(C_ptr, n, d, s_C_n, s_C_b, nd_mask)
    B_base = B_ptr + batch * s_B_b + (group // B_ratio) * s_B_g
    C_base = C_ptr + batch * s_C_b + (group // C_ratio) * s_C_g

    if HAS_INIT:
        h = load_state_tile(init_ptr + batch * s_init_b, n, d, s_init_n, s_init_d, nd_mask)
    else:
        h = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    # Segment end states and sums of dt: (batch, D, n_seg - 1, N) and (batch, D, n_seg - 1).
    seg_row = (batch * dim + d) * (n_seg - 1)  # (BLOCK_D,)
    if START_FROM_SEGMENTS:
        if PDL:
            if seg > 0:
                tl.extra.cuda.gdc_wait()  # the first pass's end states are complete after this
        # Each factor exp(A sum dt_k) is a true product of decays (<= 1 for dt >= 0, A <= 0):
        # no overflow, and the same rounding class as the step-by-step recurrence.
        k = 0
        while k < seg:
            dt_k = tl.load(seg_dt_ptr + seg_row + k, mask=d_mask, other=0.0)
            h_k = tl.load(seg_ptr + (seg_row[None, :] + k) * N + n[:, None], mask=nd_mask, other=0.0)
            h = tl.exp2(A2 * dt_k[None, :]) * h + h_k
            k += 1
    h = in_step_layout(h, steps)

    u_base = u_ptr + batch * s_u_b + d[None, :] * s_u_d
    dt_base = delta_ptr + batch * s_dt_b + d[None, :] * s_dt_d
    z_base = z_ptr + batch * s_z_b + d[None, :] * s_z_d
    out_base = out_ptr + batch * s_out_b + d[None, :] * s_out_d
    # states: (batch, D, n_saved, N) fp32, the state before every SAVE_EVERY-th chunk.
    state_base = states_ptr + ((batch * dim + d[None, :]) * n_saved) * N + n[:, None]

    # A while loop rather than range(): Triton 3.6's interpreter cannot turn a runtime
    # loop bound into a Python int under NumPy >= 2.4.
    n_full = L // CHUNK
    chunk = seg * seg_chunks
    chunk_end = tl.minimum(chunk + seg_chunks, n_full)
    dt_sum = tl.zeros((BLOCK_D,), dtype=tl.float32)
    # Masks of a full chunk's (CHUNK, BLOCK_D) and (CHUNK, BLOCK_N) tiles: None where the
    # block is full, so that full chunks load without masks and their loads vectorize.
    if EVEN_D:
        m2_full = None
    else:
        m2_full = (steps >= 0)[:, None] & d_mask[None, :]
    if EVEN_N:
        mtn_full = None
    else:
        mtn_full = (steps >= 0)[:, None] & n_mask[None, :]
    if PREFETCH:
        # Software pipelining: the next chunk's tiles are loaded before this chunk's
        # recurrence runs, so their memory latency overlaps the arithmetic. The last
        # iteration reloads its own chunk (clamped) rather than reading past the segment.
        if chunk < chunk_end:
            t = chunk * CHUNK + steps
            raw_dt, u_n, z_n, B_n, C_n = _fwd_load(
                t, m2_full, mtn_full, n, u_base, dt_base, z_base, B_base, C_base,
                s_u_l, s_dt_l, s_z_l, s_B_n, s_B_l, s_C_n, s_C_l, B_VARYING, C_VARYING, HAS_Z, WRITE_OUT,
            )
            dt_n, dtu_n, z_n = _fwd_ahead(
                raw_dt, u_n, z_n, m2_full, bias, HAS_BIAS, SOFTPLUS, DELTA_AHEAD, LATE_LOADS and HAS_Z and WRITE_OUT,
                FAST_MATH,
            )
            if LATE_LOADS:
                far_dt, far_u, far_z = _fwd_load_rows(
                    tl.minimum(chunk + 1, chunk_end - 1) * CHUNK + steps, m2_full, u_base, dt_base, z_base,
                    s_u_l, s_dt_l, s_z_l, HAS_Z, WRITE_OUT,
                )
            while chunk < chunk_end:
                if SAVE_STATES:
                    if chunk % SAVE_EVERY == 0:
                        tl.store(state_base + (chunk // SAVE_EVERY) * N, h, mask=nd_mask)
                dt_c, dtu_c, u_c, z_c, B_c, C_c = dt_n, dtu_n, u_n, z_n, B_n, C_n
                t_next = tl.minimum(chunk + 1, chunk_end - 1) * CHUNK + steps
                if LATE_LOADS:
                    # Delta, u and z come two chunks ahead, all loads are issued here and
                    # each is first read here an iteration later: ptxas then counts them all
                    # on one scoreboard that nothing in the chunk's middle waits on (issued
                    # with the next chunk's delta made at the iteration's end, the delta, u
                    # and z loads got scoreboards of their own, which ptxas then shared with
                    # the shared-memory loads of the chunk's middle: waits there also waited
                    # for memory).
                    B_n, C_n = _fwd_load_bc(
                        t_next, mtn_full, n, B_base, C_base, s_B_n, s_B_l, s_C_n, s_C_l, far_dt,
                        B_VARYING, C_VARYING, WRITE_OUT,
                    )
                    # z's gate is made here too, so that z's load is also first read here.
                    u_n = far_u
                    dt_n, dtu_n, z_n = _fwd_ahead(
                        far_dt, far_u, far_z, m2_full, bias, HAS_BIAS, SOFTPLUS, DELTA_AHEAD, HAS_Z and WRITE_OUT,
                        FAST_MATH,
                    )
                    far_dt, far_u, far_z = _fwd_load_rows(
                        tl.minimum(chunk + 2, chunk_end - 1) * CHUNK + steps, m2_full, u_base, dt_base, z_base,
                        s_u_l, s_dt_l, s_z_l, HAS_Z, WRITE_OUT,
                    )
                else:
                    raw_dt, u_n, z_n, B_n, C_n = _fwd_load(
                        t_next, m2_full, mtn_full, n, u_base, dt_base, z_base, B_base, C_base,
                        s_u_l, s_dt_l, s_z_l, s_B_n, s_B_l, s_C_n, s_C_l, B_VARYING, C_VARYING, HAS_Z, WRITE_OUT,
                    )
                if not DELTA_AHEAD:
                    dt_c, dtu_c = _fwd_delta(dt_c, u_c, m2_full, bias, HAS_BIAS, SOFTPLUS, FAST_MATH)
                h, dt_chunk = _fwd_chunk(
                    h, chunk * CHUNK + steps, m2_full, dt_c, dtu_c, u_c, z_c, B_c, C_c, steps, A2, skip,
                    B_tile, C_tile, out_base, s_out_l, on_fma,
                    CHUNK, B_VARYING, C_VARYING, HAS_D, HAS_Z, WRITE_OUT, FAST_MATH, LATE_LOADS,
                )
                # The next chunk's delta (and delta * u) is prepared here, after this
                # chunk's recurrence (its load has landed by now) and in the load's compact
                # layout, where each (step, channel) is one thread's: the loop carries it
                # in that layout, so softplus runs once per value, not once per thread of
                # the state axis as it would next to its use (Triton's layout pass moves
                # the conversion of a tile made inside the iteration up to its load and
                # computes the whole chain in the wide layout): 24 fewer MUFU and 130
                # fewer instructions per 16-step chunk of 8 channels (sm_90 build, 784 -> 654).
                if not LATE_LOADS:
                    dt_n = raw_dt
                    if DELTA_AHEAD:
                        dt_n, dtu_n = _fwd_delta(raw_dt, u_n, m2_full, bias, HAS_BIAS, SOFTPLUS, FAST_MATH)
                if not WRITE_OUT:
                    dt_sum += dt_chunk
                chunk += 1
    else:
        while chunk < chunk_end:
            if SAVE_STATES:
                if chunk % SAVE_EVERY == 0:
                    tl.store(state_base + (chunk // SAVE_EVERY) * N, h, mask=nd_mask)
            t = chunk * CHUNK + steps
            dt_c, u_c, z_c, B_c, C_c = _fwd_load(
                t, m2_full, mtn_full, n, u_base, dt_base, z_base, B_base, C_base,
                s_u_l, s_dt_l, s_z_l, s_B_n, s_B_l, s_C_n, s_C_l, B_VARYING, C_VARYING, HAS_Z, WRITE_OUT,
            )
            dt_c, dtu_c = _fwd_delta(dt_c, u_c, m2_full, bias, HAS_BIAS, SOFTPLUS, FAST_MATH)
            h, dt_chunk = _fwd_chunk(
                h, t, m2_full, dt_c, dtu_c, u_c, z_c, B_c, C_c, steps, A2, skip,
                B_tile, C_tile, out_base, s_out_l, on_fma,
                CHUNK, B_VARYING, C_VARYING, HAS_D, HAS_Z, WRITE_OUT, FAST_MATH,
            )
            if not WRITE_OUT:
                dt_sum += dt_chunk
            chunk += 1
    if WRITE_OUT:
        # Only the last segment holds the partial chunk and the final state.
        is_last = seg == n_seg - 1
        if is_last & (n_full * CHUNK < L):
            if SAVE_STATES:
                if n_full % SAVE_EVERY == 0:
                    tl.store(state_base + (n_full // SAVE_EVERY) * N, h, mask=nd_mask)
            t = n_full * CHUNK + steps
            m2 = (t < L)[:, None] & d_mask[None, :]
            mtn = (t < L)[:, None] & n_mask[None, :]
            dt_c, u_c, z_c, B_c, C_c = _fwd_load(
                t, m2, mtn, n, u_base, dt_base, z_base, B_base, C_base,
                s_u_l, s_dt_l, s_z_l, s_B_n, s_B_l, s_C_n, s_C_l, B_VARYING, C_VARYING, HAS_Z, True,
            )
            dt_c, dtu_c = _fwd_delta(dt_c, u_c, m2, bias, HAS_BIAS, SOFTPLUS, FAST_MATH)
            h, dt_chunk = _fwd_chunk(
                h, t, m2, dt_c, dtu_c, u_c, z_c, B_c, C_c, steps, A2, skip,
                B_tile, C_tile, out_base, s_out_l, on_fma,
                CHUNK, B_VARYING, C_VARYING, HAS_D, HAS_Z, True, FAST_MATH,
            )
        tl.store(final_ptr + (batch * dim + d[None, :]) * N + n[:, None], h, mask=nd_mask & is_last)
    else:
        tl.store(seg_ptr + (seg_row[None, :] + seg) * N + n[:, None], h, mask=nd_mask)
        tl.store(seg_dt_ptr + seg_row + seg, dt_sum, mask=d_mask)


def bc_strides(X: torch.Tensor) -> tuple[bool, tuple[int, int, int, int]]:
    """(varying, (batch, group, n, l) strides) for B or C in any of its three forms.

    A time-invariant (D, N) tensor reports its (d, n) strides in the batch and n slots.
    """
    if X.dim() == 2:
        return False, (X.stride(0), 0, X.stride(1), 0)
    if X.dim() == 3:
        return True, (X.stride(0), 0, X.stride(1), X.stride(2))
    return True, (X.stride(0), X.stride(1), X.stride(2), X.stride(3))


def n_groups(B: torch.Tensor, C: torch.Tensor) -> int:
    """Channel groups of the grid: each program's channels share one group of B and of C."""
    return math.lcm(*(X.shape[1] if X.dim() == 4 else 1 for X in (B, C)))


def group_ratio(X: torch.Tensor, groups: int) -> int:
    """Grid groups per group of X: grid group g reads X's group g // ratio."""
    return groups // X.shape[1] if X.dim() == 4 else groups


def scan_fwd(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
    initial_state: torch.Tensor | None,
    *,
    save_every: int | None,
    config: FwdConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launches the forward kernel (twice when L is split across programs).

    Shapes as in ``selective_scan``. Returns ``out (batch, D, L)`` in u's dtype and memory layout,
    ``final_state (batch, D, N)`` fp32 and ``states (batch, D, cdiv(L, save_every), N)``
    fp32, the state before steps 0, save_every, 2 * save_every, ... (an empty tensor when
    ``save_every`` is None: no backward will run).
    """
    batch, dim, length = u.shape
    n_state = A.shape[1]
    groups = n_groups(B, C)
    dg = dim // groups
    block_n = next_power_of_2(n_state)
    save = save_every is not None
    if config is not None:
        cfg = config
    else:
        cfg = fwd_config(batch * groups, dg, block_n, length=length, align=save_every or 1)
    if save:
        assert save_every % (cfg.chunk * cfg.time_groups) == 0, "states are saved at chunk boundaries"
    n_saved = cdiv(length, save_every) if save else 0
    dev, f32 = u.device, torch.float32
    out = empty_like_layout(u)
    final = torch.empty((batch, dim, n_state), dtype=f32, device=dev)
    states = torch.empty((batch, dim, n_saved, n_state) if save else (0,), dtype=f32, device=dev)
    n_seg, seg_steps = 1, cdiv(length, cfg.chunk) * cfg.chunk
    if cfg.seg_len is not None and cfg.seg_len < length:
        assert cfg.seg_len % cfg.chunk == 0, "segments are whole chunks"
        assert cfg.first_pass is None or cfg.seg_len % cfg.first_pass[1] == 0, "segments are whole first-pass chunks"
        assert not save or cfg.seg_len % save_every == 0, "segments start at saved states"
        n_seg, seg_steps = cdiv(length, cfg.seg_len), cfg.seg_len
    if n_seg > 1:
        seg_states = torch.empty((batch, dim, n_seg - 1, n_state), dtype=f32, device=dev)
        seg_dt = torch.empty((batch, dim, n_seg - 1), dtype=f32, device=dev)
    else:  # never read or written: any fp32 buffer does (two allocations fewer on the host)
        seg_states = seg_dt = final
    b_varying, sB = bc_strides(B)
    c_varying, sC = bc_strides(C)
    z_arg = z if z is not None else u
    init_arg = initial_state if initial_state is not None else final
    if cfg.time_groups > 1:
        from .triton_fwd_groups import _fwd_groups_kernel

        assert n_seg == 1, "time groups replace a split of L"
        _fwd_groups_kernel[(cdiv(dg, cfg.block_d), groups, batch)](
            u, delta, A, B, C, D if D is not None else A, z_arg, delta_bias if delta_bias is not None else A,
            init_arg, out, final, states,
            length, n_state, dg, n_saved, group_ratio(B, groups), group_ratio(C, groups),
            *u.stride(), *delta.stride(), *A.stride(), *sB, *sC, *z_arg.stride(), *init_arg.stride(), *out.stride(),
            BLOCK_D=cfg.block_d, BLOCK_N=block_n, STEPS=cfg.chunk, GROUPS=cfg.time_groups,
            SAVE_EVERY=save_every // (cfg.chunk * cfg.time_groups) if save else 1,
            EVEN_D=dg % cfg.block_d == 0, EVEN_N=n_state == block_n, B_VARYING=b_varying, C_VARYING=c_varying,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
            HAS_INIT=initial_state is not None, SAVE_STATES=save, FAST_MATH=fast_math(u, delta, z),
            num_warps=cfg.num_warps, maxnreg=cfg.maxnreg,
        )
        return out, final, states

    # Overlapped (FwdConfig.overlap): the second pass ordered first segment first and,
    # on Hopper and later, launched as a dependent launch of the first.
    overlap = cfg.overlap and n_seg > 1
    pdl = overlap and dependent_launch.enabled_for(dev)

    def launch(segments: int, first_pass: bool) -> None:
        own_shape = first_pass and cfg.first_pass is not None
        block_d, chunk = cfg.first_pass if own_shape else (cfg.block_d, cfg.chunk)
        n_dblk = cdiv(dg, block_d)
        slowest = overlap and not first_pass
        grid = (n_dblk, groups, segments * batch) if slowest else (n_dblk * segments, groups, batch)
        _fwd_kernel[grid](
            u, delta, A, B, C, D if D is not None else A, z_arg, delta_bias if delta_bias is not None else A,
            init_arg, out, final, states, seg_states, seg_dt,
            length, n_state, dg, n_saved, group_ratio(B, groups), group_ratio(C, groups), seg_steps // chunk, n_seg,
            *u.stride(), *delta.stride(), *A.stride(), *sB, *sC, *z_arg.stride(), *init_arg.stride(), *out.stride(),
            BLOCK_D=block_d, BLOCK_N=block_n, CHUNK=chunk, SAVE_EVERY=save_every // chunk if save else 1,
            EVEN_D=dg % block_d == 0, EVEN_N=n_state == block_n,
            B_VARYING=b_varying, C_VARYING=c_varying,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
            HAS_INIT=initial_state is not None and not first_pass, SAVE_STATES=save and not first_pass,
            WRITE_OUT=not first_pass, START_FROM_SEGMENTS=n_seg > 1 and not first_pass, PREFETCH=cfg.prefetch,
            # A first pass of its own shape makes delta ahead only where states share lanes.
            DELTA_AHEAD=cfg.delta_ahead and (not own_shape or block_d < 32 * cfg.num_warps),
            LATE_LOADS=cfg.late_loads,
            FAST_MATH=fast_math(u, delta, z), num_warps=cfg.num_warps, maxnreg=cfg.maxnreg,
            FMA_EXP_STEPS=cfg.first_pass_fma_exp_steps if first_pass else cfg.fma_exp_steps,
            FMA_EXP_HALF=cfg.fma_exp_half,
            SEGMENT_SLOWEST=slowest, PDL=pdl and not first_pass, LAUNCH_DEPENDENTS=pdl and first_pass,
            launch_pdl=pdl and not first_pass,
        )

    if n_seg > 1:
        launch(n_seg - 1, first_pass=True)
    launch(n_seg, first_pass=False)
    return out, final, states


@dataclasses.dataclass(frozen=True)
class FwdConfig:
    """Launch shape: channels per program, steps per chunk, warps per program, the steps
    per segment when L is split across programs (None: one segment), whether each
    chunk's tiles are loaded one chunk ahead, and a cap on registers per thread (None:
    the compiler's choice; a lower cap lets more programs reside on an SM)."""

    block_d: int
    chunk: int
    num_warps: int
    seg_len: int | None = None
    prefetch: bool = False
    maxnreg: int | None = None
    # With prefetch: each chunk's delta made (bias, softplus) in the load's layout at the
    # end of the iteration before, rather than next to its use (see the kernel).
    delta_ahead: bool = False
    # With prefetch: delta, u and z loaded two chunks ahead (B and C one), and each chunk's
    # delta and gate silu(z) made at the start of the iteration before (see the kernel).
    late_loads: bool = False
    # A split L's two passes overlapped: the second launched as a dependent launch of the
    # first (Hopper and later; elsewhere only the order), its first segment's programs,
    # which need nothing from the first pass, started first.
    overlap: bool = False
    # With L split: (channels per program, steps per chunk) of the first pass, which only
    # advances states (None: the second pass's block_d and chunk).
    first_pass: tuple[int, int] | None = None
    # The decays of the last this many steps of each chunk computed on the FMA pipe
    # (exp2_fma) instead of the multi-function unit: in the kernel (the second pass of a
    # split L), and in a split L's first pass.
    fma_exp_steps: int = 0
    first_pass_fma_exp_steps: int = 0
    # ... for the first half of their states only (in both passes).
    fma_exp_half: bool = False
    # Chunks of this many groups of `chunk` steps each, the groups over lanes beside the
    # channels (triton_fwd_groups; L is then never split): more programs for the same
    # channels without computing any decay twice. 1: the kernel above.
    time_groups: int = 1


# A one-warp program walks its channels' sequence (or segment) alone, so the launch needs
# many programs in flight (measured on an H100: 384 programs ran 2.4x slower per element
# than 1024). Below TARGET_PROGRAMS the channels per program are halved.
TARGET_PROGRAMS = 1024
MIN_BLOCK_D = 8  # the narrowest program a second halving makes (N <= 16)
# Splitting L when programs are very few (fewer than SPLIT_BELOW): segments until about
# SPLIT_PROGRAMS programs run, each at least MIN_SEG_LEN steps. The first pass recomputes
# all but the last segment, so a split costs about 1.6x the work: on an H100 it paid only
# at batch 1 (48 programs: 5.2 ms instead of 17 ms at L = 2^17, with 2048-step segments;
# 5.4 ms with 1024, 6.2 ms with 512) and lost at 192 and 384 programs (2.6 ms instead of
# 2.1 ms at (4, 1536, 16384); 0.73 instead of 0.36 ms at (8, 1536, 2048)).
SPLIT_L = True
SPLIT_BELOW = 128
# FwdConfig.delta_ahead: 17% fewer instructions and 23% fewer MUFU in the 8-channel chunk
# loop of the sm_90 build (784 -> 654, 104 -> 80), where each channel's states lie on 4
# lanes and the per-(step, channel) work would otherwise run on each. Timed on an H200
# (2026-12-07): 1.252 against 1.396 ms at (4, 1536, 16384), 2.607 against 2.842 with L split
# at (1, 1536, 131072), but 0.514 against 0.486 at (8, 4096, 2048), where programs of 32
# channels give each lane a whole channel (nothing replicated, only the conversions added).
# So it is on where a channel's states share lanes. DELTA_AHEAD True or False turns it on
# or off everywhere (tests, tuning).
DELTA_AHEAD: bool | None = None
# Registers of the 8-channel programs (N <= 16). The forward without saved states holds
# 180 with delta ahead, and a scheduler's quarter of the register file then keeps 2 warps
# (8 an SM: ncu, H100, 2026-12-07) where 168 keep 3: at 1536 programs that made delta
# ahead 16% slower (0.291 against 0.250 ms at (8, 1536, 2048), H200). ptxas fits the loop
# in 168 without spilling (sm_90 build: 639 instructions, 80 MUFU, no local memory).
NARROW_MAXNREG = 168
# ... but only where that many programs could not all be resident uncapped: below
# CAP_FROM programs every one fits at 180 registers (8 warps an SM, 1056 on 132 SMs), and
# the compiler's own allocation runs faster: 1.238 against 1.267 ms at (4, 1536, 16384),
# 768 programs (H100, 2026-12-07).
CAP_FROM = 1024
SPLIT_PROGRAMS = 6144
MIN_SEG_LEN = 2048
# The split's first pass in programs of 32 channels, one a lane, and 8-step chunks
# (FwdConfig.first_pass; N <= 16): 7% fewer instructions an element than the second pass's
# 16-channel shape (sm_90 build: 693 against 746 a chunk of 128), and on an H100 the
# forward at (1, 1536, 2^17, 16) 2.573 against 2.603 ms (2.554 against 2.585 in bench_scan,
# the same run; RESULTS.md, 2026-12-08).
WIDE_FIRST_PASS = True
# Load each chunk's tiles one chunk ahead (software pipelining by hand): 5-30% faster on
# an H100 at every benchmark shape without a split.
PREFETCH = True
# FwdConfig.late_loads where no states are saved (inference: align == 1) and L is not
# split. Timed on an H100 (2026-12-07, forward alone): 1.134 against 1.214 ms at
# (4, 1536, 16384), 0.508 against 0.521 at (8, 4096, 2048), 0.229 against 0.231 at
# (8, 1536, 2048); slower where the forward saves states (1.266 against 1.231 ms at
# (4, 1536, 16384)) and with L split (2.769 against 2.603 at batch 1, L = 2^17).
# True or False turns it on or off everywhere (tests, tuning).
LATE_LOADS: bool | None = None


def fwd_config(rows: int, dg: int, block_n: int, *, length: int = 0, align: int = 64) -> FwdConfig:
    """About 128 (step, state) values per thread and channel; one channel per lane at N <= 32.

    rows: batch * groups; dg: channels per group; block_n: N rounded up to a power of two;
    length: L; align: what a segment's length must be a multiple of (the chunk and the
    interval between saved states). With fewer than TARGET_PROGRAMS programs it halves
    the channels per program; if that still leaves fewer than SPLIT_BELOW, it also cuts
    L into segments (the first pass one channel a lane: WIDE_FIRST_PASS), and otherwise
    (N <= 16) halves them once more. Each chunk's delta is
    made an iteration ahead where a channel's states share lanes (fewer than 32 channels a
    warp), 8-channel programs are held to NARROW_MAXNREG registers where CAP_FROM or
    more of them run, and an unsplit forward that saves no states (align 1) loads its
    tiles late (LATE_LOADS).
    """
    num_warps = 1 if block_n <= 64 else 4
    chunk = 8 if block_n <= 16 else 4
    block_d = max(1, (128 * 32 * num_warps) // (chunk * block_n))
    block_d = min(block_d, 32 * num_warps, next_power_of_2(dg))
    programs = rows * cdiv(dg, block_d)
    if block_d > 1 and programs < TARGET_PROGRAMS:
        block_d //= 2
        programs = rows * cdiv(dg, block_d)
        if block_n <= 16:
            chunk *= 2  # the same ~128 values per thread: 16 x 16 ran 15-20% faster than 16 x 8 (H200)
    if align > 1 and align % chunk:
        chunk = math.gcd(chunk, align)  # states are saved between chunks (align: their interval)
    if SPLIT_L and programs < SPLIT_BELOW:
        seg_len = split_length(programs, length, math.lcm(align, chunk), target=SPLIT_PROGRAMS, min_len=MIN_SEG_LEN)
        if seg_len is not None:
            # The first pass only advances states: one channel a lane (nothing replicated
            # across a channel's lanes), 8-step chunks to keep its tiles in registers.
            first = (min(32 * num_warps, next_power_of_2(dg)), 8) if WIDE_FIRST_PASS and block_n <= 16 else None
            return FwdConfig(
                block_d=block_d, chunk=chunk, num_warps=num_warps, seg_len=seg_len, prefetch=PREFETCH,
                delta_ahead=DELTA_AHEAD is not False, first_pass=first,
            )
    if block_n <= 16 and block_d > MIN_BLOCK_D and programs < TARGET_PROGRAMS:
        # Still too few programs, but enough not to split: halve the channels once more.
        # 8-channel programs hold 168 registers where 16-channel ones hold 255 (12 resident
        # warps an SM instead of 8): 0.250 against 0.266 ms at (8, 1536, 2048), 1.369
        # against 1.432 at (4, 1536, 16384) (H100, 2026-12-05).
        block_d //= 2
    ahead = block_d < 32 * num_warps if DELTA_AHEAD is None else DELTA_AHEAD
    programs = rows * cdiv(dg, block_d)
    maxnreg = NARROW_MAXNREG if block_d == MIN_BLOCK_D and block_n <= 16 and programs >= CAP_FROM else None
    late = align == 1 if LATE_LOADS is None else LATE_LOADS
    return FwdConfig(
        block_d=block_d, chunk=chunk, num_warps=num_warps, prefetch=PREFETCH, delta_ahead=ahead, maxnreg=maxnreg,
        late_loads=late and PREFETCH,
    )
