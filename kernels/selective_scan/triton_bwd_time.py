"""Backward selective-scan kernel (Triton), parallel over time inside each chunk.

One program owns ``BLOCK_D`` channels of one batch element (all in one B/C group) and
walks the sequence backwards in chunks of ``CHUNK`` steps; a chunk starts at a state the
forward saved, so no step is recomputed twice. Tiles are ``(BLOCK_D, CHUNK)`` with the
steps spread over the lanes: every per-(channel, step) term (softplus, its derivative,
the gate, du, ddelta) is computed by exactly one thread, once. For each state n in turn:

- the states h_t come from an associative scan of h_t = a_t h_{t-1} + b_t over the
  chunk, a_t = exp(dt_t A_n), b_t = dt_t u_t B_{n,t}, plus the saved start state;
- the adjoint g_t = dL/dh_t from a reverse scan of g_t = C_{n,t} dy_t + a_{t+1} g_{t+1},
  plus the gradient q carried in from the later chunks (q <- a_{t0} g_{t0} for the
  chunk before);
- then dB_{n,t} = sum_d g dt u, dC_{n,t} = sum_d h dy, and the per-(channel, step)
  sums over n: g B (for du and ddelta) and g a_t h_{t-1} A = g (h_t - b_t) A (for
  ddelta; the same product times dt sums to dA).

a_{t+1} is exp(dt_{t+1} A_n) from a second, shifted read of delta: an exponential is
cheaper than moving the tile by one step across lanes. Input-dependent dB and dC are
sums over channels: each program adds its channels' (CHUNK,) row into one fp32 buffer
with atomics. Sums over time (dA, dD, ddelta_bias, time-invariant dB/dC) are kept per
(batch, channel) and added up by the caller. README.md has the math.
"""
from __future__ import annotations

import dataclasses

import torch
import triton
import triton.language as tl

from .triton_common import LOG2E, load_f32, scan_combine, sigmoid, softplus
from .triton_fwd import bc_strides, group_ratio, n_groups


@triton.jit
def _delta(dt_base, t, mask, s_dt_l, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """delta after bias and softplus on a (BLOCK_D, CHUNK) tile (0 where masked), and the
    softplus's derivative (the raw argument when there is no softplus)."""
    raw = load_f32(dt_base + t[None, :] * s_dt_l, mask)
    if HAS_BIAS:
        raw = raw + bias[:, None]
    if SOFTPLUS:
        dt = softplus(raw)
        dsp = sigmoid(raw)
    else:
        dt = raw
        dsp = raw
    return tl.where(mask, dt, 0.0), dsp


@triton.jit
def _bwd_time_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, states_ptr, dout_ptr, dfinal_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dinit_ptr,
    L, N, DG, n_saved, save_every, B_ratio, C_ratio, B_groups, C_groups,
    s_u_b, s_u_d, s_u_l,
    s_dt_b, s_dt_d, s_dt_l,
    s_A_d, s_A_n,
    s_B_b, s_B_g, s_B_n, s_B_l,
    s_C_b, s_C_g, s_C_n, s_C_l,
    s_z_b, s_z_d, s_z_l,
    s_do_b, s_do_d, s_do_l,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
    B_VARYING: tl.constexpr, C_VARYING: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_DFINAL: tl.constexpr,
):
    """Grid: (channel blocks, groups, batch). CHUNK is a multiple of save_every."""
    pid_d = tl.program_id(0)
    group = tl.program_id(1)
    batch = tl.program_id(2).to(tl.int64)
    dim = DG * tl.num_programs(1)

    d_in_group = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = d_in_group < DG
    d = (group * DG + d_in_group).to(tl.int64)  # (BLOCK_D,)
    nn = tl.arange(0, BLOCK_N)
    dn_mask = d_mask[:, None] & (nn < N)[None, :]
    steps = tl.arange(0, CHUNK)

    bias = tl.load(bias_ptr + d, mask=d_mask, other=0.0).to(tl.float32) if HAS_BIAS else None
    skip = tl.load(D_ptr + d, mask=d_mask, other=0.0).to(tl.float32) if HAS_D else None
    u_base = u_ptr + batch * s_u_b + d[:, None] * s_u_d
    dt_base = delta_ptr + batch * s_dt_b + d[:, None] * s_dt_d
    z_base = z_ptr + batch * s_z_b + d[:, None] * s_z_d
    do_base = dout_ptr + batch * s_do_b + d[:, None] * s_do_d
    B_group = group // B_ratio
    C_group = group // C_ratio
    B_base = B_ptr + batch * s_B_b + B_group * s_B_g
    C_base = C_ptr + batch * s_C_b + C_group * s_C_g
    # Input-dependent dB, dC: fp32 (batch, groups of B or C, N, L), zeroed by the caller.
    dB_base = dB_ptr + ((batch * B_groups + B_group) * N) * L
    dC_base = dC_ptr + ((batch * C_groups + C_group) * N) * L
    # du, ddelta, dz: contiguous (batch, D, L); sums over time: (batch, D[, N]).
    bdl_base = (batch * dim + d[:, None]) * L
    bdn_offs = (batch * dim + d[:, None]) * N + nn[None, :]
    state_row = (batch * dim + d) * n_saved * N  # (BLOCK_D,): states are (batch, D, n_saved, N)

    # q[:, n]: the gradient reaching the state at the end of the chunk being processed,
    # from all later steps (and from the final state).
    if HAS_DFINAL:
        q = tl.load(dfinal_ptr + bdn_offs, mask=dn_mask, other=0.0).to(tl.float32)
    else:
        q = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dA_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dB_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dC_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dD_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dbias_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)

    chunk = tl.cdiv(L, CHUNK) - 1
    while chunk >= 0:
        t0 = chunk * CHUNK
        t = t0 + steps
        t_ok = t < L
        m2 = d_mask[:, None] & t_ok[None, :]
        dt, dsp = _delta(dt_base, t, m2, s_dt_l, bias, HAS_BIAS, SOFTPLUS)
        u = load_f32(u_base + t[None, :] * s_u_l, m2)
        dtu = dt * u
        dout = load_f32(do_base + t[None, :] * s_do_l, m2)
        if HAS_Z:
            zt = load_f32(z_base + t[None, :] * s_z_l, m2)
            sz = sigmoid(zt)
            dy = dout * zt * sz
        else:
            dy = dout
        # The adjoint runs on tiles read in reverse (position r is step t0 + CHUNK - 1 - r),
        # so that it is a forward scan: Triton's reverse scan flips its tiles across lanes
        # several times. Its inputs: delta one step later (0, i.e. decay 1, at the chunk's
        # last step, where the carry q stands for everything later, and past the end) and dy.
        t_rev = t0 + (CHUNK - 1) - steps
        rev_ok = t_rev < L
        m_rev = d_mask[:, None] & rev_ok[None, :]
        m_next = d_mask[:, None] & ((t_rev + 1 < L) & (steps > 0))[None, :]
        dt_next_rev, _ = _delta(dt_base, t_rev + 1, m_next, s_dt_l, bias, HAS_BIAS, SOFTPLUS)
        dout_rev = load_f32(do_base + t_rev[None, :] * s_do_l, m_rev)
        if HAS_Z:
            z_rev = load_f32(z_base + t_rev[None, :] * s_z_l, m_rev)
            dy_rev = dout_rev * z_rev * sigmoid(z_rev)
        else:
            dy_rev = dout_rev
        flip = (CHUNK - 1) - steps[None, :] + tl.zeros((BLOCK_D, CHUNK), dtype=tl.int32)
        row0 = tl.zeros((BLOCK_D,), dtype=tl.int64)[:, None]  # broadcasts a B/C row over the channels
        gB = tl.zeros((BLOCK_D, CHUNK), dtype=tl.float32)  # sum_n g B
        gAh = tl.zeros((BLOCK_D, CHUNK), dtype=tl.float32)  # sum_n g a h_{t-1} A
        y = tl.zeros((BLOCK_D, CHUNK), dtype=tl.float32)  # sum_n C h (the ungated output)
        state_offs = state_row + (t0 // save_every) * N

        n = 0
        while n < N:
            A_n = tl.load(A_ptr + d * s_A_d + n * s_A_n, mask=d_mask, other=0.0).to(tl.float32)
            A2_n = A_n * LOG2E
            h0 = tl.load(states_ptr + state_offs + n, mask=d_mask, other=0.0)
            is_n = nn[None, :] == n
            q_n = tl.sum(tl.where(is_n, q, 0.0), axis=1)
            if B_VARYING:
                B_n = load_f32(B_base + n * s_B_n + (row0 + t[None, :]) * s_B_l, m2)
            else:
                B_n = tl.load(B_ptr + d * s_B_b + n * s_B_n, mask=d_mask, other=0.0).to(tl.float32)[:, None]
            if C_VARYING:
                C_n = load_f32(C_base + n * s_C_n + (row0 + t[None, :]) * s_C_l, m2)
                C_rev = load_f32(C_base + n * s_C_n + (row0 + t_rev[None, :]) * s_C_l, m_rev)
            else:
                C_n = tl.load(C_ptr + d * s_C_b + n * s_C_n, mask=d_mask, other=0.0).to(tl.float32)[:, None]
                C_rev = C_n

            decay = tl.exp2(dt * A2_n[:, None])
            inp = dtu * B_n
            decay_prod, h = tl.associative_scan((decay, inp), axis=1, combine_fn=scan_combine)
            h = h + decay_prod * h0[:, None]
            decay_next = tl.exp2(dt_next_rev * A2_n[:, None])
            carry_prod, g_rev = tl.associative_scan((decay_next, C_rev * dy_rev), axis=1, combine_fn=scan_combine)
            g = tl.gather(g_rev + carry_prod * q_n[:, None], flip, axis=1)
            q_first = tl.sum(tl.where(steps[None, :] == 0, decay * g, 0.0), axis=1)
            q = tl.where(is_n, q_first[:, None], q)

            gB += g * B_n
            w = g * (h - inp)  # g_t a_t h_{t-1}
            gAh += w * A_n[:, None]
            dA_acc = tl.where(is_n, dA_acc + tl.sum(w * dt, axis=1)[:, None], dA_acc)
            if B_VARYING:
                tl.atomic_add(dB_base + n * L + t, tl.sum(g * dtu, axis=0), mask=t_ok, sem="relaxed")
            else:
                dB_acc = tl.where(is_n, dB_acc + tl.sum(g * dtu, axis=1)[:, None], dB_acc)
            if C_VARYING:
                tl.atomic_add(dC_base + n * L + t, tl.sum(h * dy, axis=0), mask=t_ok, sem="relaxed")
            else:
                dC_acc = tl.where(is_n, dC_acc + tl.sum(h * dy, axis=1)[:, None], dC_acc)
            if HAS_Z:
                y += h * C_n
            n += 1

        if HAS_Z:
            if HAS_D:
                y = y + skip[:, None] * u
            dz = dout * y * sz * (1.0 + zt * (1.0 - sz))
            tl.store(dz_ptr + bdl_base + t[None, :], dz.to(dz_ptr.dtype.element_ty), mask=m2)
        du = dt * gB
        if HAS_D:
            du = du + skip[:, None] * dy
            dD_acc += tl.sum(dy * u, axis=1)
        ddt = u * gB + gAh
        if SOFTPLUS:
            ddt = ddt * dsp
        ddt = tl.where(m2, ddt, 0.0)
        if HAS_BIAS:
            dbias_acc += tl.sum(ddt, axis=1)
        tl.store(du_ptr + bdl_base + t[None, :], du.to(du_ptr.dtype.element_ty), mask=m2)
        tl.store(ddelta_ptr + bdl_base + t[None, :], ddt.to(ddelta_ptr.dtype.element_ty), mask=m2)
        chunk -= 1

    tl.store(dinit_ptr + bdn_offs, q, mask=dn_mask)
    tl.store(dA_ptr + bdn_offs, dA_acc, mask=dn_mask)
    if not B_VARYING:
        tl.store(dB_ptr + bdn_offs, dB_acc, mask=dn_mask)
    if not C_VARYING:
        tl.store(dC_ptr + bdn_offs, dC_acc, mask=dn_mask)
    if HAS_D:
        tl.store(dD_ptr + batch * dim + d, dD_acc, mask=d_mask)
    if HAS_BIAS:
        tl.store(dbias_ptr + batch * dim + d, dbias_acc, mask=d_mask)


@dataclasses.dataclass(frozen=True)
class BwdTimeConfig:
    """Launch shape: channels per program, steps per chunk (a multiple of the interval
    between saved states), warps per program."""

    block_d: int
    chunk: int
    num_warps: int


def bwd_time_config(rows: int, dg: int, save_every: int) -> BwdTimeConfig:
    """Eight steps per lane: the scans run sequentially inside a thread over its steps,
    and the cross-lane part of a scan is shared by those steps."""
    num_warps = 4
    chunk = max(save_every, 8 * 32)
    chunk = triton.cdiv(chunk, save_every) * save_every
    block_d = min(4, triton.next_power_of_2(dg))
    return BwdTimeConfig(block_d=block_d, chunk=chunk, num_warps=num_warps)


def scan_bwd_time(
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
    config: BwdTimeConfig | None = None,
) -> tuple[torch.Tensor, ...]:
    """Gradients of ``selective_scan`` from the forward's saved states.

    states: (batch, D, cdiv(L, save_every), N) fp32 from ``scan_fwd``; dout (batch, D, L);
    dfinal: (batch, D, N) gradient of the final state, or None.
    Returns (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state): each in its
    input's dtype and shape, None for an absent optional input; dinitial_state fp32.
    """
    batch, dim, length = u.shape
    n_state = A.shape[1]
    groups = n_groups(B, C)
    dg = dim // groups
    cfg = config if config is not None else bwd_time_config(batch * groups, dg, save_every)
    assert cfg.chunk % save_every == 0, "chunks start at saved states"
    dev, f32 = u.device, torch.float32
    n_dblk = triton.cdiv(dg, cfg.block_d)

    du = torch.empty((batch, dim, length), dtype=u.dtype, device=dev)
    ddelta = torch.empty((batch, dim, length), dtype=delta.dtype, device=dev)
    dz = torch.empty((batch, dim, length), dtype=z.dtype, device=dev) if z is not None else du
    dA = torch.empty((batch, dim, n_state), dtype=f32, device=dev)
    dB = _bc_grad_buffer(B, batch, dim, n_state, length, dev)
    dC = _bc_grad_buffer(C, batch, dim, n_state, length, dev)
    dD = torch.empty((batch, dim), dtype=f32, device=dev) if D is not None else dA
    dbias = torch.empty((batch, dim), dtype=f32, device=dev) if delta_bias is not None else dA
    dinit = torch.empty((batch, dim, n_state), dtype=f32, device=dev)
    dout = dout if dout.stride(-1) == 1 else dout.contiguous()
    dfinal = dfinal.contiguous() if dfinal is not None else None

    b_varying, sB = bc_strides(B)
    c_varying, sC = bc_strides(C)
    z_arg = z if z is not None else u
    _bwd_time_kernel[(n_dblk, groups, batch)](
        u, delta, A, B, C, D if D is not None else A, z_arg, delta_bias if delta_bias is not None else A,
        states, dout, dfinal if dfinal is not None else dA,
        du, ddelta, dz, dA, dB, dC, dD, dbias, dinit,
        length, n_state, dg, states.shape[2], save_every,
        group_ratio(B, groups), group_ratio(C, groups), _bc_groups(B), _bc_groups(C),
        *u.stride(), *delta.stride(), *A.stride(), *sB, *sC, *z_arg.stride(), *dout.stride(),
        BLOCK_D=cfg.block_d, BLOCK_N=triton.next_power_of_2(n_state), CHUNK=cfg.chunk,
        B_VARYING=b_varying, C_VARYING=c_varying, HAS_D=D is not None, HAS_Z=z is not None,
        HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus, HAS_DFINAL=dfinal is not None,
        num_warps=cfg.num_warps,
    )
    return (
        du,
        ddelta,
        dA.sum(0),
        _bc_grad(dB, B),
        _bc_grad(dC, C),
        dD.sum(0).to(D.dtype) if D is not None else None,
        dz if z is not None else None,
        dbias.sum(0).to(delta_bias.dtype) if delta_bias is not None else None,
        dinit,
    )


def _bc_groups(X: torch.Tensor) -> int:
    return X.shape[1] if X.dim() == 4 else 1


def _bc_grad_buffer(X: torch.Tensor, batch: int, dim: int, n_state: int, length: int, dev) -> torch.Tensor:
    """fp32 sums for dB or dC: (batch, groups, N, L) zeros that the programs add into for
    input-dependent X, per (batch, channel) partials for time-invariant X."""
    if X.dim() == 2:
        return torch.empty((batch, dim, n_state), dtype=torch.float32, device=dev)
    return torch.zeros((batch, _bc_groups(X), n_state, length), dtype=torch.float32, device=dev)


def _bc_grad(buf: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """The sums in X's shape and dtype."""
    if X.dim() == 2:
        return buf.sum(0).to(X.dtype)
    return buf.view(X.shape).to(X.dtype)
