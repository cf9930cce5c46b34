"""Triton kernel for one decode step of the selective scan, updating the state in place.

Grid (cdiv(D, BLOCK_D), cdiv(batch, BLOCK_B)): each program loads a [BLOCK_B, BLOCK_D, N]
tile of the state into float32, advances it one step, stores it back where it came from
and writes BLOCK_B x BLOCK_D outputs. Its channels' parameters (A, the Δ projection's
weight, biases) are read once for all its batch rows. Every element of the state is read and written by exactly one
program, so programs need no synchronisation (inside a program, one barrier orders
every load of the state before any store).

Block sizes come from a fixed rule, never from autotuning: an autotuner runs the
kernel several times on the same arguments, and each run would advance the state
once more.

All tensors are read through their strides. An ungrouped B or C row (batch, N) is
loaded once per program and broadcast over its channels; a grouped one is gathered per
channel (group d // (D / G)), which costs cache hits only, since a program's channels
share one or a few groups.

As a dependent launch (kernels/dependent_launch.py) the kernel waits for the kernel
before it ahead of its loads; with ``early_loads`` (the caller's word that the kernel
before writes only dt, B and C) everything else is loaded before the wait, on steps
small enough for that to pay (:func:`early_loads_pay`).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .. import dependent_launch
from ..sizes import cdiv, next_power_of_2

_TILE = 1024  # the largest tile a program takes (but where N alone exceeds it)
_SMALL_STEP = 1 << 19  # steps up to this many state elements are latency-bound
_MANY_ROWS = 16  # from this batch on, programs step several batch rows


def _step_shape(batch: int, work: int) -> tuple[int, int, int]:
    """(most batch rows a program, state elements a tile, elements a warp) for a step
    of ``batch`` rows and ``work`` state elements. Measured inside the 130M model's
    graphed decode step (H100, state_update_tuning.py --in-model, ms a token, fp32 /
    bf16 states): at batch 64 (a large step) 8 rows x 8 channels on one warp 0.633 /
    0.593 against 0.672 / 0.644 for one row x 32 channels; at batch 16 (a small step) 4
    rows x 8 channels on two warps 0.490 / 0.482 against 0.504 / 0.499 for one row x 64
    channels on 8 warps, which is kept below 16 rows (batch 1: one row in any case)."""
    if work > _SMALL_STEP:
        return 8, 1024, 1024
    if batch >= _MANY_ROWS:
        return 4, 512, 256
    return 1, 1024, 128


@triton.jit
def _softplus(x):
    """log(1 + exp(x)), accurate for negative x, and x itself beyond 20 (as torch's softplus).

    ``log(w) * e / (w - 1)`` with ``w = 1 + e`` recovers log1p(e) when 1 + e rounds
    (no libdevice call, so the CPU interpreter runs it too).
    """
    e = tl.exp(tl.minimum(x, 20.0))
    w = 1.0 + e
    rounded = w == 1.0
    log1p = tl.where(rounded, e, tl.log(w) * (e / tl.where(rounded, 1.0, w - 1.0)))
    return tl.where(x > 20.0, x, log1p)


@triton.jit
def _load_bc(row_ptrs, mask_b, offs_d, offs_n, n_state, mask, dim_per_group, s_g, s_n, GROUPED: tl.constexpr):
    """B or C for the tile as float32 [BLOCK_B, BLOCK_D, BLOCK_N] (or [BLOCK_B, 1, BLOCK_N],
    broadcast over the channels); row_ptrs (BLOCK_B,): each row's start.

    Ungrouped, every channel reads the same row: one vector load, no per-channel index
    arithmetic. Grouped, each channel gathers its group's row (cache hits after the first).
    """
    # One return: Triton's code generator rejects returns of different shapes even when a
    # constexpr condition leaves only one of them reachable.
    if GROUPED:
        group = (offs_d // dim_per_group)[None, :, None]
        X = tl.load(row_ptrs[:, None, None] + group * s_g + offs_n[None, None, :] * s_n, mask=mask,
                    other=0.0).to(tl.float32)
    else:
        X = tl.load(row_ptrs[:, None] + offs_n[None, :] * s_n, mask=mask_b[:, None] & (offs_n < n_state)[None, :],
                    other=0.0).to(tl.float32)[:, None, :]
    return X


@triton.jit
def _selective_state_update_kernel(
    state_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dt_bias_ptr, y_ptr, w_dt_ptr,
    batch, dim, n_state, dim_per_group_B, dim_per_group_C, rank, s_w_d, s_w_r,
    s_st_b, s_st_d, s_st_n,
    s_x_b, s_x_d, s_dt_b, s_dt_d,
    s_A_d, s_A_n,
    s_B_b, s_B_g, s_B_n, s_C_b, s_C_g, s_C_n,
    s_D, s_z_b, s_z_d, s_bias, s_y_b, s_y_d,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    B_GROUPED: tl.constexpr, C_GROUPED: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    A_IS_LOG: tl.constexpr, DT_PROJ: tl.constexpr, BLOCK_R: tl.constexpr, PDL: tl.constexpr,
    PREFETCH: tl.constexpr, LINES_N: tl.constexpr, LINES_R: tl.constexpr, EARLY: tl.constexpr,
    EARLY_STATE: tl.constexpr,
):
    offs_d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    rows = tl.program_id(1).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < dim
    mask_b = rows < batch
    mask_bd = mask_b[:, None] & mask_d[None, :]  # (BLOCK_B, BLOCK_D)
    mask = mask_bd[:, :, None] & (offs_n < n_state)[None, None, :]
    state_ptrs = state_ptr + rows[:, None, None] * s_st_b + offs_d[None, :, None] * s_st_d + offs_n[None, None, :] * s_st_n
    if PDL and not (EARLY and EARLY_STATE):  # a dependent launch (kernels/dependent_launch.py)
        if PREFETCH:  # the state (and parameters) can be on their way to L2 before the wait
            dependent_launch.prefetch_l2(state_ptr + rows[:, None] * s_st_b + offs_d[None, :] * s_st_d, mask_bd,
                                         n_state, s_st_n, LINES_N)
            if not EARLY:
                dependent_launch.prefetch_l2(A_ptr + offs_d * s_A_d, mask_d, n_state, s_A_n, LINES_N)
                if DT_PROJ:
                    dependent_launch.prefetch_l2(w_dt_ptr + offs_d * s_w_d, mask_d, rank, s_w_r, LINES_R)
        if not EARLY:  # wait before any load
            tl.extra.cuda.gdc_wait()
            tl.extra.cuda.gdc_launch_dependents()
    # With EARLY, everything but dt, B and C (and, without EARLY_STATE, the state) is
    # loaded before the wait (below): the caller has said that the kernel just before
    # this one writes none of it. .cg: from L2, where earlier kernels' writes are,
    # whatever this SM's L1 held.
    LATE_STATE: tl.constexpr = EARLY and not EARLY_STATE  # the state after the wait, with dt, B and C
    if not LATE_STATE:
        h = tl.load(state_ptrs, mask=mask, other=0.0, cache_modifier=".cg").to(tl.float32)  # (BLOCK_B, BLOCK_D, BLOCK_N)
    x = tl.load(x_ptr + rows[:, None] * s_x_b + offs_d[None, :] * s_x_d, mask=mask_bd, other=0.0,
                cache_modifier=".cg").to(tl.float32)
    A = tl.load(A_ptr + offs_d[:, None] * s_A_d + offs_n[None, :] * s_A_n, mask=mask_d[:, None] & (offs_n < n_state)[None, :],
                other=0.0).to(tl.float32)
    if A_IS_LOG:
        A = -tl.exp(A)
    if HAS_Z:
        z = tl.load(z_ptr + rows[:, None] * s_z_b + offs_d[None, :] * s_z_d, mask=mask_bd, other=0.0,
                    cache_modifier=".cg").to(tl.float32)
        gate = z * tl.sigmoid(z)
    if HAS_D:
        skip = x * tl.load(D_ptr + offs_d * s_D, mask=mask_d, other=0.0).to(tl.float32)[None, :]
    if HAS_BIAS:
        bias = tl.load(dt_bias_ptr + offs_d * s_bias, mask=mask_d, other=0.0).to(tl.float32)[None, :]
    if DT_PROJ:
        # dt is the low-rank input (batch, rank): project it here, dt = W_dt @ dt_low.
        # The program's channels read their rows of W_dt once for all its batch rows.
        offs_r = tl.arange(0, BLOCK_R)
        mask_r = offs_r < rank
        w = tl.load(w_dt_ptr + offs_d[:, None] * s_w_d + offs_r[None, :] * s_w_r,
                    mask=mask_d[:, None] & mask_r[None, :], other=0.0).to(tl.float32)
    if PDL and EARLY:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    if LATE_STATE:
        h = tl.load(state_ptrs, mask=mask, other=0.0, cache_modifier=".cg").to(tl.float32)
    if DT_PROJ:
        dt_low = tl.load(dt_ptr + rows[:, None] * s_dt_b + offs_r[None, :] * s_dt_d,
                         mask=mask_b[:, None] & mask_r[None, :], other=0.0).to(tl.float32)
        dt = tl.sum(w[None, :, :] * dt_low[:, None, :], axis=2)
    else:
        dt = tl.load(dt_ptr + rows[:, None] * s_dt_b + offs_d[None, :] * s_dt_d, mask=mask_bd, other=0.0).to(tl.float32)
    if HAS_BIAS:
        dt += bias
    if SOFTPLUS:
        dt = _softplus(dt)
    B = _load_bc(B_ptr + rows * s_B_b, mask_b, offs_d, offs_n, n_state, mask, dim_per_group_B, s_B_g, s_B_n, B_GROUPED)
    C = _load_bc(C_ptr + rows * s_C_b, mask_b, offs_d, offs_n, n_state, mask, dim_per_group_C, s_C_g, s_C_n, C_GROUPED)

    h = tl.exp(dt[:, :, None] * A[None, :, :]) * h + (dt * x)[:, :, None] * B
    # If the layout gives one element to threads of two warps (a tile smaller than the
    # program), a warp that stored early could feed a late warp's load the new state,
    # advancing it twice: every warp finishes its loads before any stores.
    tl.debug_barrier()
    tl.store(state_ptrs, h.to(state_ptr.dtype.element_ty), mask=mask)

    y = tl.sum(h * C, axis=2)  # (BLOCK_B, BLOCK_D)
    if HAS_D:
        y += skip
    if HAS_Z:
        y *= gate
    tl.store(y_ptr + rows[:, None] * s_y_b + offs_d[None, :] * s_y_d, y.to(y_ptr.dtype.element_ty), mask=mask_bd)


def early_loads_pay(batch: int, dim: int, n_state: int) -> bool:
    """Whether a step honours ``early_loads`` (reads its state and the rest before it
    waits for the product before it). Measured in the 130M model's graphed decode step
    (H100, state_update_tuning.py --early-ab, ms a token off / on, fp32 states): batch 1
    0.3554 / 0.3511, batch 16 0.4856 / 0.4790, but batch 64 0.5921 / 0.6215 (bf16 states
    there 0.5412 / 0.5430): a large step's state read early is slower, so larger steps
    read all but their state early (LARGE_STEPS_EARLY_PARAMS)."""
    return early_state(batch, dim, n_state) or LARGE_STEPS_EARLY_PARAMS


# Larger steps read x, z and their parameters before the wait and their state (then only
# prefetched into L2), dt, B and C after it: at batch 64, 0.5716 -> 0.5598 ms a token with
# fp32 states, 0.5227 -> 0.4992 with bf16 states (H100, state_update_tuning.py
# --early-params-ab, RESULTS.md 2026-12-07). SEQMAMBA_LARGE_STEP_EARLY_PARAMS=0 turns it off.
LARGE_STEPS_EARLY_PARAMS = os.environ.get("SEQMAMBA_LARGE_STEP_EARLY_PARAMS", "1") == "1"


def early_state(batch: int, dim: int, n_state: int) -> bool:
    """Whether a step that reads early also reads its state early (small steps only)."""
    return batch * dim * next_power_of_2(n_state) <= _SMALL_STEP


def rows_per_program(batch: int, dim: int, n_state: int) -> int:
    """Batch rows a program steps (its tile is rows x BLOCK_D channels x N).

    Several from batch 16 on, as many as fit the tile with at least one channel: the
    programs' channels then read their parameters (A, the Δ projection's weight, 5 KB a
    32-channel block) once for several rows instead of once a row, which at batch 64
    was as much L2 traffic as the state itself (:func:`_step_shape` has the timings).
    """
    block_n = next_power_of_2(n_state)
    most, tile, _ = _step_shape(batch, batch * dim * block_n)
    return min(most, next_power_of_2(batch), max(1, tile // block_n))


def launch_config(batch: int, dim: int, n_state: int) -> tuple[int, int, int]:
    """(BLOCK_D, BLOCK_N, num_warps) for a step of ``batch`` x ``dim`` channels of ``n_state``,
    its programs stepping :func:`rows_per_program` batch rows.

    From sweeps of the step inside a 130M model's decode step (benchmarks/RESULTS.md,
    ``state_update_tuning.py --in-model``): a step is latency-bound up to about half a
    million state elements (batch 16 at D 1536, N 16), where small multi-warp tiles do
    best; larger steps, whose state comes from memory rather than cache, do best with one
    warp per 1024-element tile of several batch rows (see :func:`_step_shape`).
    Warps never outnumber the tile's slices, so no warp idles.
    """
    block_n = next_power_of_2(n_state)
    rows = rows_per_program(batch, dim, n_state)
    _, tile, per_warp = _step_shape(batch, batch * dim * block_n)
    block_d = max(1, min(next_power_of_2(dim), tile // (rows * block_n)))
    num_warps = min(8, max(1, rows * block_d * block_n // per_warp))
    return block_d, block_n, num_warps


def _channels_per_group(X: torch.Tensor, dim: int) -> int:
    """How many channels share one row of B or C; a (batch, N) tensor is one group."""
    return dim if X.dim() == 2 else dim // X.shape[1]


def _strides_bc(X: torch.Tensor) -> tuple[int, int, int]:
    """(batch, group, N) strides of B or C; a (batch, N) tensor is one group."""
    if X.dim() == 2:
        return X.stride(0), 0, X.stride(1)
    return X.stride(0), X.stride(1), X.stride(2)


def selective_state_update_triton(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    dt_softplus: bool,
    A_is_log: bool = False,
    dt_weight: torch.Tensor | None = None,
    *,
    block_d: int | None = None,
    num_warps: int | None = None,
    block_b: int | None = None,
    early_loads: bool = False,
) -> torch.Tensor:
    """Launch the kernel: updates ``state`` (batch, D, N) in place, returns y (batch, D).

    Inputs are assumed checked by the public op (shapes, dtypes, device, a state
    whose elements do not overlap). ``early_loads``: see the public op (only dt, B and C
    may come from the kernel just before; ignored without dependent launches). ``block_d`` (a power of two), ``num_warps`` and
    ``block_b`` (batch rows a program, a power of two) override :func:`launch_config` and
    :func:`rows_per_program`, for tuning measurements.
    """
    batch, dim, n_state = state.shape
    y = torch.empty(batch, dim, device=x.device, dtype=x.dtype)
    chosen_d, block_n, chosen_warps = launch_config(batch, dim, n_state)
    block_d = block_d or chosen_d
    num_warps = num_warps or chosen_warps
    block_b = block_b or rows_per_program(batch, dim, n_state)
    grid = (cdiv(dim, block_d), cdiv(batch, block_b))
    pdl = dependent_launch.enabled_for(state.device)
    _selective_state_update_kernel[grid](
        state, x, dt, A, B, C,
        D if D is not None else x, z if z is not None else x, dt_bias if dt_bias is not None else x, y,
        dt_weight if dt_weight is not None else x,
        batch, dim, n_state, _channels_per_group(B, dim), _channels_per_group(C, dim),
        dt.shape[1] if dt_weight is not None else 0, *(dt_weight.stride() if dt_weight is not None else (0, 0)),
        *state.stride(), *x.stride(), *dt.stride(), *A.stride(),
        *_strides_bc(B), *_strides_bc(C),
        D.stride(0) if D is not None else 0,
        *(z.stride() if z is not None else (0, 0)),
        dt_bias.stride(0) if dt_bias is not None else 0,
        *y.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None, SOFTPLUS=dt_softplus,
        B_GROUPED=B.dim() == 3, C_GROUPED=C.dim() == 3,
        BLOCK_B=block_b, BLOCK_D=block_d, BLOCK_N=block_n, A_IS_LOG=A_is_log, DT_PROJ=dt_weight is not None,
        BLOCK_R=next_power_of_2(dt.shape[1]) if dt_weight is not None else 1,
        PDL=pdl, launch_pdl=pdl, num_warps=num_warps, PREFETCH=dependent_launch.prefetch_for(state.device),
        LINES_N=dependent_launch.prefetch_lines(n_state, state.dtype, A.dtype),
        LINES_R=dependent_launch.prefetch_lines(dt.shape[1], dt_weight.dtype) if dt_weight is not None else 1,
        EARLY=dependent_launch.early_loads_for(state.device, early_loads) and early_loads_pay(batch, dim, n_state),
        EARLY_STATE=early_state(batch, dim, n_state),
    )
    return y
