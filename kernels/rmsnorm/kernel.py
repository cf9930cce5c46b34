"""Triton kernels for residual add + RMSNorm, forward and backward.

Rows are (rows, hidden) with stride 1 over hidden. Forward runs one program per row;
rows up to ``MAX_BLOCK_N`` wide sit in registers as one tile, wider rows are walked in
``BLOCK_N`` chunks twice (sum of squares, then normalise). Backward, with
``h = new_residual`` (the value the forward normalised), ``r = rsqrt(mean(h^2) + eps)``
recomputed from h and ``dy`` the gradient of ``normed``:

    dh = r * (w * dy - h * r^2 * mean(w * dy * h)) + d new_residual
    dw = sum_rows dy * h * r

dx and d residual both equal dh (each in its own dtype). Each backward program owns a
contiguous block of rows and sums its share of dw in fp32; the per-program partials are
added afterwards, so the result is deterministic (no atomics).

Loop bounds are compile-time chunk counts or ``while`` loops: the Triton 3.6 interpreter
cannot take a runtime ``range`` bound under NumPy 2.4 (triton-lang/triton#9171).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import dependent_launch
from ..sizes import cdiv, next_power_of_2

MAX_BLOCK_N = 4096  # widest row kept in registers as one tile (fp32: 16 KiB per program)
_BACKWARD_PROGRAMS_PER_SM = 8  # enough resident warps to hide memory latency


@triton.jit
def _load_sum(x_ptr, res_ptr, row, s_x, s_r, cols, mask, HAS_RES: tl.constexpr, RES_TY: tl.constexpr,
              ACC: tl.constexpr):
    """x + residual, rounded to new_residual's dtype as stored, in ACC."""
    h = tl.load(x_ptr + row * s_x + cols, mask=mask, other=0.0).to(ACC)
    if HAS_RES:
        h += tl.load(res_ptr + row * s_r + cols, mask=mask, other=0.0).to(ACC)
    return h.to(RES_TY).to(ACC)


@triton.jit
def _rms_norm_fwd_kernel(
    x_ptr, res_ptr, w_ptr, out_ptr, new_res_ptr, N, s_x, s_r, eps,
    HAS_RES: tl.constexpr, ACC: tl.constexpr, BLOCK_N: tl.constexpr, N_CHUNKS: tl.constexpr,
    PDL: tl.constexpr, PREFETCH: tl.constexpr, LINES: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    RES_TY: tl.constexpr = new_res_ptr.dtype.element_ty
    if PDL:  # a dependent launch (kernels/dependent_launch.py): wait before any load
        if PREFETCH:  # ... but the residual (from layers back) and the weight can be on their way to L2
            one = tl.full([1], 1, tl.int1)
            if HAS_RES:
                dependent_launch.prefetch_l2(res_ptr + row * s_r + tl.zeros([1], tl.int64), one, N, 1, LINES)
            dependent_launch.prefetch_l2(w_ptr + tl.zeros([1], tl.int64), one, N, 1, LINES)
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    if N_CHUNKS == 1:
        cols = tl.arange(0, BLOCK_N)
        mask = cols < N
        h = _load_sum(x_ptr, res_ptr, row, s_x, s_r, cols, mask, HAS_RES, RES_TY, ACC)
        tl.store(new_res_ptr + row * N + cols, h.to(RES_TY), mask=mask)
        rstd = 1.0 / tl.sqrt(tl.sum(h * h, axis=0) / N + eps)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(ACC)
        tl.store(out_ptr + row * N + cols, (h * rstd * w).to(out_ptr.dtype.element_ty), mask=mask)
    else:
        sum_sq = tl.zeros((BLOCK_N,), dtype=ACC)
        for c in range(0, N_CHUNKS):
            cols = c * BLOCK_N + tl.arange(0, BLOCK_N)
            mask = cols < N
            h = _load_sum(x_ptr, res_ptr, row, s_x, s_r, cols, mask, HAS_RES, RES_TY, ACC)
            tl.store(new_res_ptr + row * N + cols, h.to(RES_TY), mask=mask)
            sum_sq += h * h
        rstd = 1.0 / tl.sqrt(tl.sum(sum_sq, axis=0) / N + eps)
        # Recompute h from the inputs rather than re-reading new_residual, which other
        # threads of this program may not have finished writing.
        for c in range(0, N_CHUNKS):
            cols = c * BLOCK_N + tl.arange(0, BLOCK_N)
            mask = cols < N
            h = _load_sum(x_ptr, res_ptr, row, s_x, s_r, cols, mask, HAS_RES, RES_TY, ACC)
            w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(ACC)
            tl.store(out_ptr + row * N + cols, (h * rstd * w).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _store_grads(dx_ptr, dr_ptr, dres_ptr, row, N, s_dres, cols, mask, dh,
                 HAS_DRES: tl.constexpr, HAS_DR: tl.constexpr, ACC: tl.constexpr):
    """Adds d new_residual to the norm's dh and writes dx (and d residual) for one chunk."""
    if HAS_DRES:
        dh += tl.load(dres_ptr + row * s_dres + cols, mask=mask, other=0.0).to(ACC)
    tl.store(dx_ptr + row * N + cols, dh.to(dx_ptr.dtype.element_ty), mask=mask)
    if HAS_DR:
        tl.store(dr_ptr + row * N + cols, dh.to(dr_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _load_chunk(h_ptr, dy_ptr, w_ptr, row, N, s_dy, cols, mask, ACC: tl.constexpr):
    h = tl.load(h_ptr + row * N + cols, mask=mask, other=0.0).to(ACC)
    dy = tl.load(dy_ptr + row * s_dy + cols, mask=mask, other=0.0).to(ACC)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(ACC)
    return h, dy, w


@triton.jit
def _rms_norm_bwd_kernel(
    h_ptr, dy_ptr, dres_ptr, w_ptr, dx_ptr, dr_ptr, dw_part_ptr, M, N, rows_per_program, s_dy, s_dres, eps,
    HAS_DRES: tl.constexpr, HAS_DR: tl.constexpr, ACC: tl.constexpr, BLOCK_N: tl.constexpr,
    N_CHUNKS: tl.constexpr,
):
    pid = tl.program_id(0)
    if N_CHUNKS == 1:
        cols = tl.arange(0, BLOCK_N)
        in_row = cols < N
        dw = tl.zeros((BLOCK_N,), dtype=ACC)
        i = 0
        while i < rows_per_program:
            row = pid.to(tl.int64) * rows_per_program + i
            i += 1
            mask = in_row & (row < M)
            h, dy, w = _load_chunk(h_ptr, dy_ptr, w_ptr, row, N, s_dy, cols, mask, ACC)
            rstd = 1.0 / tl.sqrt(tl.sum(h * h, axis=0) / N + eps)
            mean_wdyh = tl.sum(w * dy * h, axis=0) / N
            dh = rstd * (w * dy - h * (rstd * rstd * mean_wdyh))
            _store_grads(dx_ptr, dr_ptr, dres_ptr, row, N, s_dres, cols, mask, dh, HAS_DRES, HAS_DR, ACC)
            dw += dy * h * rstd
        tl.store(dw_part_ptr + pid * N + cols, dw, mask=in_row)
    else:
        # The dw partial row lives in global memory (zero-filled by the caller); each
        # element is only ever touched by the thread that owns it in this program.
        i = 0
        while i < rows_per_program:
            row = pid.to(tl.int64) * rows_per_program + i
            i += 1
            sum_sq = tl.zeros((BLOCK_N,), dtype=ACC)
            sum_wdyh = tl.zeros((BLOCK_N,), dtype=ACC)
            for c in range(0, N_CHUNKS):
                cols = c * BLOCK_N + tl.arange(0, BLOCK_N)
                h, dy, w = _load_chunk(h_ptr, dy_ptr, w_ptr, row, N, s_dy, cols, (cols < N) & (row < M), ACC)
                sum_sq += h * h
                sum_wdyh += w * dy * h
            rstd = 1.0 / tl.sqrt(tl.sum(sum_sq, axis=0) / N + eps)
            mean_wdyh = tl.sum(sum_wdyh, axis=0) / N
            for c in range(0, N_CHUNKS):
                cols = c * BLOCK_N + tl.arange(0, BLOCK_N)
                mask = (cols < N) & (row < M)
                h, dy, w = _load_chunk(h_ptr, dy_ptr, w_ptr, row, N, s_dy, cols, mask, ACC)
                dh = rstd * (w * dy - h * (rstd * rstd * mean_wdyh))
                _store_grads(dx_ptr, dr_ptr, dres_ptr, row, N, s_dres, cols, mask, dh, HAS_DRES, HAS_DR, ACC)
                part_ptrs = dw_part_ptr + pid * N + cols
                tl.store(part_ptrs, tl.load(part_ptrs, mask=mask, other=0.0) + dy * h * rstd, mask=mask)


def _acc_dtype(dtype: torch.dtype) -> tuple[torch.dtype, tl.dtype]:
    return (torch.float64, tl.float64) if dtype == torch.float64 else (torch.float32, tl.float32)


def _rows(t: torch.Tensor, hidden: int) -> torch.Tensor:
    """t as (rows, hidden) with stride 1 over hidden (a view when possible)."""
    t = t.reshape(-1, hidden)
    return t if t.stride(1) == 1 else t.contiguous()


def _block(hidden: int) -> tuple[int, int, int]:
    """(BLOCK_N, N_CHUNKS, num_warps) for rows of ``hidden``."""
    block_n = min(next_power_of_2(hidden), MAX_BLOCK_N)
    return block_n, cdiv(hidden, block_n), min(max(block_n // 256, 1), 8)


def rms_norm_forward(
    x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None, eps: float, residual_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(normed, new_residual)``, both contiguous with x's shape; normed in x's dtype."""
    hidden = x.shape[-1]
    x2 = _rows(x, hidden)
    res2 = _rows(residual, hidden) if residual is not None else None
    normed = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    new_residual = torch.empty(x.shape, dtype=residual_dtype, device=x.device)
    block_n, n_chunks, num_warps = _block(hidden)
    pdl = dependent_launch.enabled_for(x.device)
    _rms_norm_fwd_kernel[(x2.shape[0],)](
        x2, res2 if res2 is not None else x2, weight, normed, new_residual, hidden,
        x2.stride(0), res2.stride(0) if res2 is not None else 0, eps,
        HAS_RES=res2 is not None, ACC=_acc_dtype(x.dtype)[1], BLOCK_N=block_n, N_CHUNKS=n_chunks,
        PDL=pdl, launch_pdl=pdl, num_warps=num_warps, PREFETCH=dependent_launch.prefetch_for(x.device),
        LINES=dependent_launch.prefetch_lines(hidden, x.dtype, residual_dtype, weight.dtype),
    )
    return normed, new_residual


def rms_norm_backward(
    dnormed: torch.Tensor,
    dnew_residual: torch.Tensor | None,
    new_residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    x_dtype: torch.dtype,
    residual_dtype: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dx, dresidual, dweight)``: dx in x_dtype, dresidual in residual_dtype (an empty
    tensor when there was no residual), dweight in weight's dtype. new_residual is the
    forward's (contiguous) output; gradients have its shape."""
    hidden = new_residual.shape[-1]
    rows = new_residual.numel() // hidden
    dy = _rows(dnormed, hidden)
    dres = _rows(dnew_residual, hidden) if dnew_residual is not None else None
    dx = torch.empty(new_residual.shape, dtype=x_dtype, device=new_residual.device)
    has_dr = residual_dtype is not None
    dr = torch.empty(new_residual.shape if has_dr else (0,), dtype=residual_dtype or x_dtype, device=dx.device)
    block_n, n_chunks, num_warps = _block(hidden)
    if new_residual.is_cuda:
        sms = torch.cuda.get_device_properties(new_residual.device).multi_processor_count
        n_programs = min(rows, sms * _BACKWARD_PROGRAMS_PER_SM)
    else:
        n_programs = min(rows, 4)  # interpreter: a few programs, each looping over rows
    rows_per_program = cdiv(rows, n_programs)
    acc_torch, acc_tl = _acc_dtype(x_dtype)
    dw_part = torch.zeros((n_programs, hidden), dtype=acc_torch, device=dx.device)
    _rms_norm_bwd_kernel[(n_programs,)](
        new_residual, dy, dres if dres is not None else dy, weight, dx, dr if has_dr else dx, dw_part, rows, hidden, rows_per_program,
        dy.stride(0), dres.stride(0) if dres is not None else 0, eps,
        HAS_DRES=dres is not None, HAS_DR=has_dr, ACC=acc_tl, BLOCK_N=block_n, N_CHUNKS=n_chunks,
        num_warps=num_warps,
    )
    return dx, dr, dw_part.sum(dim=0).to(weight.dtype)
