"""Forward selective-scan kernel with the sequence spread over lanes (Triton).

The main forward (triton_fwd) gives each lane whole channels and walks the sequence one
chunk after the other, so a launch has batch x D / BLOCK_D one-warp programs: 192 of 8
channels at batch 1 and D = 1536, too few for a GPU. There L is split over programs, and
the first pass that finds each segment's start state computes every decay a second time:
2.36 exponentials an element instead of 1, and the multi-function unit bounds it.

Here each chunk of STEPS x GROUPS steps is cut into GROUPS groups of STEPS consecutive
steps, laid over lanes next to the channels (tiles (step, state, channel, group)): a
program of BLOCK_D channels keeps GROUPS times as many lanes busy, so BLOCK_D can be
GROUPS times smaller for the same tile and the launch has GROUPS times as many programs.
Per chunk:
1. each group runs its steps from a zero state to its end state, and the product of its
   decays exp(A sum dt) is taken once per (state, channel, group);
2. the groups' start states follow from the chunk's carried state, group by group
   (h_start[g + 1] = P[g] h_start[g] + h_end[g]), a few sums over the group lanes;
3. each group runs its steps again from its true start state with the decays it already
   holds in registers: the outputs y = C . h, and the chunk's end state carried on.
So each decay is computed once (phase 3 reuses phase 1's), for one more multiply-add per
element and the combine per chunk. Shapes and options as in triton_fwd's kernel; L is
never split.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ..triton_math import LOG2E
from .triton_common import channel_block, load, load_state_tile
from .triton_fwd import _fwd_ahead


@triton.jit
def _groups_load(
    t, m3, mbc, n, u_base, dt_base, z_base, B_base, C_base, s_u_l, s_dt_l, s_z_l, s_B_n, s_B_l, s_C_n, s_C_l,
    B_VARYING: tl.constexpr, C_VARYING: tl.constexpr, HAS_Z: tl.constexpr,
):
    """A chunk's tiles as stored, for steps t (STEPS, 1, GROUPS): dt, u, z (STEPS, BLOCK_D,
    GROUPS); B, C (STEPS, BLOCK_N, GROUPS) widened to fp32 (absent ones: dt)."""
    dt = load(dt_base + t * s_dt_l, m3)
    u = load(u_base + t * s_u_l, m3)
    z = dt
    if HAS_Z:
        z = load(z_base + t * s_z_l, m3)
    Bt = dt
    if B_VARYING:
        Bt = load(B_base + t * s_B_l + n[None, :, None] * s_B_n, mbc).to(tl.float32)
    Ct = dt
    if C_VARYING:
        Ct = load(C_base + t * s_C_l + n[None, :, None] * s_C_n, mbc).to(tl.float32)
    return dt, u, z, Bt, Ct


@triton.jit
def _groups_chunk(
    h, t, m3, dt, dtu, u, gate, Bt, Ct, steps, groups, A2, skip, B_tile, C_tile, out_base, s_out_l,
    STEPS: tl.constexpr, GROUPS: tl.constexpr, B_VARYING: tl.constexpr, C_VARYING: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
):
    """Advances the carried state h over one chunk and writes its outputs; returns the new
    h. h: (BLOCK_N, BLOCK_D, GROUPS), the same state in every group, in the layout of one
    step of the (STEPS, BLOCK_N, BLOCK_D, GROUPS) tiles, as everything below that is not
    a whole tile: Triton's layout pass otherwise picks another layout for the combine
    and converts every step's values to it. Tiles from _groups_load and
    triton_fwd._fwd_ahead (delta, delta * u and the gate made in their loads' layout)."""
    u = u.to(tl.float32)
    decay = tl.exp2(dt[:, None, :, :] * A2[None, :, :, None])  # (STEPS, BLOCK_N, BLOCK_D, GROUPS)
    if B_VARYING:
        inp = dtu[:, None, :, :] * Bt[:, :, None, :]
    else:
        inp = dtu[:, None, :, :] * B_tile[None, :, :, None]
    # Step i of a tile as in triton_fwd: an exact selection of bit patterns that the
    # compiler resolves to registers (the step axis lies in each thread).
    decay_bits = decay.to(tl.int32, bitcast=True)
    inp_bits = inp.to(tl.int32, bitcast=True)
    first = steps[:, None, None, None] == 0
    # 1. Each group from a zero state (its first step's state is its first input).
    h_end = tl.sum(tl.where(first, inp_bits, 0), axis=0).to(tl.float32, bitcast=True)
    for i in tl.static_range(1, STEPS):
        sel = steps[:, None, None, None] == i
        a_i = tl.sum(tl.where(sel, decay_bits, 0), axis=0).to(tl.float32, bitcast=True)
        h_end = a_i * h_end + tl.sum(tl.where(sel, inp_bits, 0), axis=0).to(tl.float32, bitcast=True)
    # Each group's decay product exp(A sum dt), in the step layout.
    total = tl.exp2(A2[:, :, None] * tl.sum(dt, axis=0)[None, :, :])
    total = tl.sum(tl.where(first, total[None, :, :, :], 0.0), axis=0)
    # 2. The groups' start states, one group after the other from the carried state
    # (sums over the group axis read one group's value in every group's lanes).
    g = groups[None, None, :]
    h_start = h
    for j in tl.static_range(GROUPS):
        h = tl.sum(tl.where(g == j, total, 0.0), axis=2)[:, :, None] * h
        h = h + tl.sum(tl.where(g == j, h_end, 0.0), axis=2)[:, :, None]
        if j + 1 < GROUPS:
            h_start = tl.where(g == j + 1, h, h_start)
    # 3. Every step's state from the true start, y = C . h.
    hg = h_start
    hs = tl.zeros(decay.shape, dtype=tl.int32)
    for i in tl.static_range(STEPS):
        sel = steps[:, None, None, None] == i
        a_i = tl.sum(tl.where(sel, decay_bits, 0), axis=0).to(tl.float32, bitcast=True)
        hg = a_i * hg + tl.sum(tl.where(sel, inp_bits, 0), axis=0).to(tl.float32, bitcast=True)
        hs = tl.where(sel, hg.to(tl.int32, bitcast=True)[None, :, :, :], hs)
    if C_VARYING:
        y = tl.sum(hs.to(tl.float32, bitcast=True) * Ct[:, :, None, :], axis=1)
    else:
        y = tl.sum(hs.to(tl.float32, bitcast=True) * C_tile[None, :, :, None], axis=1)
    if HAS_D:
        y = y + skip[None, :, None] * u
    if HAS_Z:
        y = y * gate
    tl.store(out_base + t * s_out_l, y.to(out_base.dtype.element_ty), mask=m3)
    return h


@triton.jit
def _store_state(ptr, h, group0, mask):
    """Stores the carried state h (BLOCK_N, BLOCK_D, GROUPS) (the same in every group) at
    ptr (BLOCK_N, BLOCK_D), from group 0's lanes."""
    tl.store(ptr, tl.sum(tl.where(group0, h, 0.0), axis=2), mask=mask)


@triton.jit
def _fwd_groups_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, init_ptr, out_ptr, final_ptr, states_ptr,
    L, N, DG, n_saved, B_ratio, C_ratio,
    s_u_b, s_u_d, s_u_l,
    s_dt_b, s_dt_d, s_dt_l,
    s_A_d, s_A_n,
    s_B_b, s_B_g, s_B_n, s_B_l,
    s_C_b, s_C_g, s_C_n, s_C_l,
    s_z_b, s_z_d, s_z_l,
    s_init_b, s_init_d, s_init_n,
    s_out_b, s_out_d, s_out_l,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, STEPS: tl.constexpr, GROUPS: tl.constexpr,
    SAVE_EVERY: tl.constexpr, EVEN_D: tl.constexpr, EVEN_N: tl.constexpr,
    B_VARYING: tl.constexpr, C_VARYING: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_INIT: tl.constexpr, SAVE_STATES: tl.constexpr, FAST_MATH: tl.constexpr,
):
    """Grid: (channel blocks, groups of B/C, batch). Writes out, the final state and, with
    SAVE_STATES, the state before every SAVE_EVERY-th chunk (states: (batch, D, n_saved,
    N) fp32). Each iteration loads the next chunk's tiles and makes its delta and gate
    before this chunk's steps, so that their memory latency overlaps the arithmetic and
    the loop carries them in their loads' compact layout (made next to their use, Triton
    would compute softplus and the gate once per state lane)."""
    pid_d = tl.program_id(0)
    group = tl.program_id(1)
    batch = tl.program_id(2).to(tl.int64)
    dim = DG * tl.num_programs(1)

    d, d_mask, n, n_mask, nd_mask = channel_block(pid_d, group, DG, N, BLOCK_D, BLOCK_N)
    steps = tl.arange(0, STEPS)
    groups = tl.arange(0, GROUPS)
    # Steps of a chunk: group g holds steps g * STEPS .. (g + 1) * STEPS - 1. (STEPS, 1, GROUPS)
    offs = (groups[None, None, :] * STEPS + steps[:, None, None]).to(tl.int64)
    CHUNK: tl.constexpr = STEPS * GROUPS

    A2 = load_state_tile(A_ptr, n, d, s_A_n, s_A_d, nd_mask) * LOG2E
    bias = tl.load(bias_ptr + d, mask=d_mask, other=0.0).to(tl.float32)[None, :, None] if HAS_BIAS else None
    skip = tl.load(D_ptr + d, mask=d_mask, other=0.0).to(tl.float32) if HAS_D else None
    B_tile = None if B_VARYING else load_state_tile(B_ptr, n, d, s_B_n, s_B_b, nd_mask)
    C_tile = None if C_VARYING else load_state_tile(C_ptr, n, d, s_C_n, s_C_b, nd_mask)
    B_base = B_ptr + batch * s_B_b + (group // B_ratio) * s_B_g
    C_base = C_ptr + batch * s_C_b + (group // C_ratio) * s_C_g
    row = d[None, :, None]
    u_base = u_ptr + batch * s_u_b + row * s_u_d
    dt_base = delta_ptr + batch * s_dt_b + row * s_dt_d
    z_base = z_ptr + batch * s_z_b + row * s_z_d
    out_base = out_ptr + batch * s_out_b + row * s_out_d
    state_base = states_ptr + ((batch * dim + d[None, :]) * n_saved) * N + n[:, None]

    if HAS_INIT:
        h = load_state_tile(init_ptr + batch * s_init_b, n, d, s_init_n, s_init_d, nd_mask)
    else:
        h = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    # Carried as (BLOCK_N, BLOCK_D, GROUPS), every group holding it, in the step layout
    # (see _groups_chunk); group 0's copy is what gets stored.
    h = tl.sum(tl.where((steps == 0)[:, None, None, None], h[None, :, :, None], 0.0), axis=0)
    group0 = (groups == 0)[None, None, :]

    # Masks of a full chunk: None where every channel and state is real (loads vectorize).
    m3_full = None if EVEN_D else (offs >= 0) & d_mask[None, :, None]
    mbc_full = None if EVEN_N else (offs >= 0) & n_mask[None, :, None]
    n_full = L // CHUNK
    chunk = 0
    if n_full > 0:
        raw, u_n, z_n, B_n, C_n = _groups_load(
            offs, m3_full, mbc_full, n, u_base, dt_base, z_base, B_base, C_base,
            s_u_l, s_dt_l, s_z_l, s_B_n, s_B_l, s_C_n, s_C_l, B_VARYING, C_VARYING, HAS_Z,
        )
        dt_n, dtu_n, gate_n = _fwd_ahead(raw, u_n, z_n, m3_full, bias, HAS_BIAS, SOFTPLUS, True, HAS_Z, FAST_MATH)
        while chunk < n_full:
            if SAVE_STATES:
                if chunk % SAVE_EVERY == 0:
                    _store_state(state_base + (chunk // SAVE_EVERY) * N, h, group0, nd_mask)
            dt_c, dtu_c, u_c, gate_c, B_c, C_c = dt_n, dtu_n, u_n, gate_n, B_n, C_n
            # The next chunk's tiles (this chunk's again at the last, never used).
            t_next = tl.minimum(chunk + 1, n_full - 1) * CHUNK + offs
            raw, u_n, z_n, B_n, C_n = _groups_load(
                t_next, m3_full, mbc_full, n, u_base, dt_base, z_base, B_base, C_base,
                s_u_l, s_dt_l, s_z_l, s_B_n, s_B_l, s_C_n, s_C_l, B_VARYING, C_VARYING, HAS_Z,
            )
            h = _groups_chunk(
                h, chunk * CHUNK + offs, m3_full, dt_c, dtu_c, u_c, gate_c, B_c, C_c, steps, groups, A2, skip,
                B_tile, C_tile, out_base, s_out_l, STEPS, GROUPS, B_VARYING, C_VARYING, HAS_D, HAS_Z,
            )
            dt_n, dtu_n, gate_n = _fwd_ahead(raw, u_n, z_n, m3_full, bias, HAS_BIAS, SOFTPLUS, True, HAS_Z, FAST_MATH)
            chunk += 1
    if n_full * CHUNK < L:
        # The partial last chunk: padded steps get delta 0 (decay 1, input 0).
        if SAVE_STATES:
            if n_full % SAVE_EVERY == 0:
                _store_state(state_base + (n_full // SAVE_EVERY) * N, h, group0, nd_mask)
        t = n_full * CHUNK + offs
        m3 = (t < L) & d_mask[None, :, None]
        mbc = (t < L) & n_mask[None, :, None]
        raw, u_c, z_c, B_c, C_c = _groups_load(
            t, m3, mbc, n, u_base, dt_base, z_base, B_base, C_base,
            s_u_l, s_dt_l, s_z_l, s_B_n, s_B_l, s_C_n, s_C_l, B_VARYING, C_VARYING, HAS_Z,
        )
        dt_c, dtu_c, gate_c = _fwd_ahead(raw, u_c, z_c, m3, bias, HAS_BIAS, SOFTPLUS, True, HAS_Z, FAST_MATH)
        h = _groups_chunk(
            h, t, m3, dt_c, dtu_c, u_c, gate_c, B_c, C_c, steps, groups, A2, skip,
            B_tile, C_tile, out_base, s_out_l, STEPS, GROUPS, B_VARYING, C_VARYING, HAS_D, HAS_Z,
        )
    _store_state(final_ptr + (batch * dim + d[None, :]) * N + n[:, None], h, group0, nd_mask)
