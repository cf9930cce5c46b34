"""Triton kernel: ``x @ weight.T + bias`` for the few rows of a decode step.

Grid (cdiv(N, BLOCK_N), cdiv(M, BLOCK_M), SPLIT_K). A program computes a [BLOCK_M, BLOCK_N]
tile over the whole K loop (tl.dot, float32 accumulation), or with SPLIT_K > 1 over its
share of K, the last of a tile's programs summing the float32 partials. A split is for
narrow products (x_proj: 80 columns, 5 column blocks), where it gives the weight's read
to many programs instead of five; for wide ones the partials' traffic and the last
program's sum cost more than it saves.

At decoding batch sizes the product reads its weight once and is bound by that read and
by latency, not by arithmetic; what a Triton product offers over cuBLAS's is that it is
a dependent launch (kernels/dependent_launch.py): it asks L2 for its weight rows while
the kernel before it still runs, and it lets the kernel after it launch early, where a
cuBLAS product leaves a gap on both sides.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .. import dependent_launch
from ..backend import triton_interpreter_enabled
from ..sizes import cdiv, next_power_of_2, smallest_block_m
from ..split_counters import split_counters
from .reference import linear_deferred_norm_reference

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages[, SPLIT_K]): SPLIT_K programs share
# each output tile's K loop (default 1).
Launch = tuple[int, ...]


@triton.jit
def row_tile_product(x_ptr, w_ptr, b_ptr, rows, cols, mask_r, mask_c, K, s_xm, s_xk, s_wn, s_wk,
                     HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     K_CHUNKS: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
                     ROW_NORM: tl.constexpr = False, rstd=1.0):
    """float32 [BLOCK_M, BLOCK_N] tile of ``x @ w.T (+ bias)`` for ``rows`` x ``cols``,
    over the whole K loop (also the fused in_proj + conv step's product). With ROW_NORM
    each row of the product is multiplied by ``rstd`` (BLOCK_M,) before the bias: x's
    rows are an RMSNorm's input times its weight, their 1 / rms applied here (a product
    is linear in its rows)."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for c in range(0, K_CHUNKS):
        k = c * BLOCK_K + tl.arange(0, BLOCK_K)
        mask_k = k < K
        x = tl.load(x_ptr + rows[:, None] * s_xm + k[None, :] * s_xk, mask=mask_r[:, None] & mask_k[None, :], other=0.0)
        w = tl.load(w_ptr + cols[None, :] * s_wn + k[:, None] * s_wk, mask=mask_c[None, :] & mask_k[:, None], other=0.0)
        if UPCAST:
            x, w = x.to(tl.float32), w.to(tl.float32)
        acc = tl.dot(x, w, acc, input_precision=PRECISION)
    if ROW_NORM:
        acc = acc * rstd[:, None]
    if HAS_BIAS:
        acc += tl.load(b_ptr + cols, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    return acc


@triton.jit
def deferred_rstd(sumsq_ptr, rows, mask_r, s_qm, P, inv_k, eps, BLOCK_P: tl.constexpr):
    """(BLOCK_M,) float32: 1 / sqrt(mean square + eps) of each row whose RMSNorm was
    deferred, from its P partial sums of squares ``sumsq[row, :P]`` (row stride s_qm)."""
    p = tl.arange(0, BLOCK_P)
    parts = tl.load(sumsq_ptr + rows[:, None] * s_qm + p[None, :], mask=mask_r[:, None] & (p < P)[None, :],
                    other=0.0, cache_modifier=".cg")
    return 1.0 / tl.sqrt(tl.sum(parts, axis=1) * inv_k + eps)


@triton.jit
def store_residual_norm(out, rows, cols, mask_r, mask_c, pid_n, scaled_ptr, s_om, s_on,
                        res_ptr, s_rm, s_rn, new_res_ptr, s_nm, s_nn, nw_ptr, sumsq_ptr, s_qm):
    """The epilogue of a product whose output ``out`` [BLOCK_M, BLOCK_N] (float32, not
    yet rounded) is added to the residual stream and then RMS-normed with its 1 / rms
    deferred: stores new_residual = residual + out (in new_res_ptr's dtype), scaled =
    new_residual * norm weight (in scaled_ptr's dtype) and, in column ``pid_n`` of
    sumsq (M, programs along N), the sum of squares of this tile's new_residual row parts.
    The arithmetic of the separate add + norm: the product rounded to its dtype first,
    the norm taken from the stored residual."""
    mask = mask_r[:, None] & mask_c[None, :]
    out = out.to(scaled_ptr.dtype.element_ty).to(tl.float32)
    res = tl.load(res_ptr + rows[:, None] * s_rm + cols[None, :] * s_rn, mask=mask, other=0.0).to(tl.float32)
    h = (res + out).to(new_res_ptr.dtype.element_ty)
    tl.store(new_res_ptr + rows[:, None] * s_nm + cols[None, :] * s_nn, h, mask=mask)
    h = tl.where(mask, h.to(tl.float32), 0.0)
    weight = tl.load(nw_ptr + cols, mask=mask_c, other=0.0).to(tl.float32)
    tl.store(scaled_ptr + rows[:, None] * s_om + cols[None, :] * s_on,
             (h * weight[None, :]).to(scaled_ptr.dtype.element_ty), mask=mask)
    tl.store(sumsq_ptr + rows * s_qm + pid_n, tl.sum(h * h, axis=1), mask=mask_r)


def dot_precision(dtype: torch.dtype) -> tuple[str, bool]:
    """(PRECISION, UPCAST) for :func:`row_tile_product` on ``dtype`` inputs.

    float32 products exactly (no TF32), as F.linear computes them by default. Triton
    3.6's interpreter multiplies bfloat16 tiles wrongly (numpy has no bfloat16); there
    the tiles go to float32 first, which gives the same products (each product of two
    bfloat16 values is exact in float32) and float32 sums as on the GPU.
    """
    upcast = dtype == torch.bfloat16 and triton_interpreter_enabled()
    return ("ieee" if dtype == torch.float32 or upcast else "tf32"), upcast


@triton.jit
def _decode_linear_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr, part_ptr, count_ptr,
    in_sumsq_ptr, res_ptr, new_res_ptr, nw_ptr, out_sumsq_ptr,
    M, N, K, P, inv_k, eps,
    s_xm, s_xk, s_wn, s_wk, s_om, s_on, s_im, s_rm, s_rn, s_nm, s_nn, s_qm,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, K_CHUNKS: tl.constexpr,
    SPLIT_K: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    PDL: tl.constexpr, PREFETCH: tl.constexpr, LINES_K: tl.constexpr,
    ROW_NORM: tl.constexpr, BLOCK_P: tl.constexpr, ADD_NORM: tl.constexpr,
):
    pid_n, pid_m, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_c = cols < N
    mask_r = rows < M
    # This program's share of K: K_CHUNKS blocks from k0 (all of K without a split).
    k0 = pid_k * (K_CHUNKS * BLOCK_K)
    x_ptr += k0 * s_xk
    w_ptr += k0 * s_wk
    k_len = tl.minimum(K - k0, K_CHUNKS * BLOCK_K)
    if PDL:  # a dependent launch (kernels/dependent_launch.py): wait before any load
        if PREFETCH:  # ... but the weight can be on its way to L2 meanwhile
            dependent_launch.prefetch_l2(w_ptr + cols * s_wn, mask_c, k_len, s_wk, LINES_K)
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    out_ptrs = out_ptr + rows[:, None] * s_om + cols[None, :] * s_on
    mask = mask_r[:, None] & mask_c[None, :]
    if SPLIT_K == 1:
        rstd = 1.0
        if ROW_NORM:
            rstd = deferred_rstd(in_sumsq_ptr, rows, mask_r, s_im, P, inv_k, eps, BLOCK_P)
        acc = row_tile_product(x_ptr, w_ptr, b_ptr, rows, cols, mask_r, mask_c, k_len, s_xm, s_xk, s_wn, s_wk,
                               HAS_BIAS, BLOCK_M, BLOCK_N, BLOCK_K, K_CHUNKS, PRECISION, UPCAST, ROW_NORM, rstd)
        if ADD_NORM:
            store_residual_norm(acc, rows, cols, mask_r, mask_c, pid_n, out_ptr, s_om, s_on,
                                res_ptr, s_rm, s_rn, new_res_ptr, s_nm, s_nn, nw_ptr, out_sumsq_ptr, s_qm)
        else:
            tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        # Split over K: each program leaves its float32 partial tile in part_ptr
        # (SPLIT_K, M, N); the last of the tile's programs to finish sums all of them, in
        # split order (the result does not depend on which one that is), adds the bias
        # and stores the output. The tile's counter goes back to 0 for the next call.
        acc = row_tile_product(x_ptr, w_ptr, b_ptr, rows, cols, mask_r, mask_c, k_len, s_xm, s_xk, s_wn, s_wk,
                               False, BLOCK_M, BLOCK_N, BLOCK_K, K_CHUNKS, PRECISION, UPCAST)
        part_ptrs = part_ptr + rows[:, None] * N + cols[None, :]
        tl.store(part_ptrs + pid_k * M * N, acc, mask=mask)
        # Every thread's partial is stored before the counter moves; the counter's
        # acquire-release atomic makes them visible to the program that finds itself last.
        tl.debug_barrier()
        tile = count_ptr + pid_m * tl.num_programs(0) + pid_n
        if tl.atomic_add(tile, 1, sem="acq_rel", scope="gpu") == SPLIT_K - 1:
            total = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for s in tl.static_range(SPLIT_K):
                # .cg: from L2, where the other programs' partials are, never a stale L1 line
                total += tl.load(part_ptrs + s * M * N, mask=mask, other=0.0, cache_modifier=".cg")
            if ROW_NORM:
                total *= deferred_rstd(in_sumsq_ptr, rows, mask_r, s_im, P, inv_k, eps, BLOCK_P)[:, None]
            if HAS_BIAS:
                total += tl.load(b_ptr + cols, mask=mask_c, other=0.0).to(tl.float32)[None, :]
            if ADD_NORM:
                store_residual_norm(total, rows, cols, mask_r, mask_c, pid_n, out_ptr, s_om, s_on,
                                    res_ptr, s_rm, s_rn, new_res_ptr, s_nm, s_nn, nw_ptr, out_sumsq_ptr, s_qm)
            else:
                tl.store(out_ptrs, total.to(out_ptr.dtype.element_ty), mask=mask)
            tl.store(tile, 0)


# Beyond this many rows a product is no longer a decode step's: cuBLAS's kernels take it.
MAX_ROWS = 64
# Nor beyond this many columns (an LM head's vocabulary), where the weight read from
# memory, not latency, sets the time, and cuBLAS's product streams it.
MAX_COLUMNS = 8192
# Products at least this wide (out_proj: 768 columns at the 130M shape; x_proj has 80) ...
_WIDE = 256
# ... over a K at least this long (out_proj's 1536; in_proj's is 768) ...
_LONG_K = 1024
# ... ran slower as this kernel than as cuBLAS's inside the graphed decode step at these
# row counts (H100, decode_linear_tuning.py: ms a token with out_proj on cuBLAS / this
# kernel, x_proj on this kernel: 4 rows 0.471 / 0.441, 16 rows 0.499 / 0.643, 32 rows
# 0.695 / 0.742; at 1 and 64 rows this kernel's was 13% and 8% faster; RESULTS.md,
# 2026-12-06 morning). in_proj, as wide but over a shorter K, runs faster as this
# kernel at 32 and 64 rows.
_WIDE_CUBLAS_ROWS = range(17, 33)
# Between 9 and 16 rows (one 16-row tile) such products split K into 256-wide parts:
# out_proj at 16 rows 0.4725 ms a token against cuBLAS's 0.4820 and 0.5485 unsplit,
# with the deferred norm in its epilogue (H100, RESULTS.md, 2026-12-07).
_WIDE_SPLIT_ROWS = range(9, 17)
# Products this wide at more than 16 rows take 32 columns a program (in_proj: 96
# programs at 3072 columns; 0.657 against 0.684 ms a token with 16 at 64 rows, H100).
_WIDER_TILE_FROM = 2048
# Narrow products (x_proj) at up to this many rows split K into 128-wide parts, one a
# program: 5 column blocks make too few programs to stream the weight otherwise (x_proj
# at 1 row: 0.377 against 0.416 ms a token unsplit; at 4 rows 0.375 against 0.444) ...
_SPLIT_MAX_ROWS = 8
# ... and above 16 rows in three (x_proj at 32 rows: 0.549 against 0.566; at 64 rows
# 0.678 against 0.685). At 16 rows no split gained (0.500 against 0.498).
_SPLIT_FROM_ROWS, _SPLIT_PARTS = 17, 3


def default_launch(rows: int, out_features: int, in_features: int) -> Launch | None:
    """Block sizes for ``rows`` x ``in_features`` -> ``out_features``, or None where
    cuBLAS's product runs.

    The fewest rows a tl.dot tile takes; 16 output columns a program, so that every SM
    streams a share of the weight, 32 for the widest products at many rows, and narrow
    products at few rows split over K (see the constants above for the measurements).
    """
    if rows > MAX_ROWS or out_features > MAX_COLUMNS:
        return None
    wide = out_features >= _WIDE
    block_m = smallest_block_m(rows)
    if wide and in_features >= _LONG_K:
        if rows in _WIDE_CUBLAS_ROWS:
            return None
        if rows in _WIDE_SPLIT_ROWS:
            return block_m, 16, 256, 4, 3, cdiv(in_features, 256)
    if not wide and rows <= _SPLIT_MAX_ROWS:
        return block_m, 16, 128, 4, 3, cdiv(in_features, 128)
    if not wide and rows >= _SPLIT_FROM_ROWS:
        return block_m, 16, 256, 4, 3, _SPLIT_PARTS
    block_n = 32 if out_features >= _WIDER_TILE_FROM and rows > 16 else 16
    return block_m, block_n, 256, 4, 3


def runs_as_dependent_launch(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`decode_linear_triton` on ``x`` and ``weight`` (no launch given) runs
    this kernel as a dependent launch, which waits for the kernel before it and only then
    lets the kernel after it start, rather than cuBLAS's product."""
    return dependent_launch.enabled_for(x.device) and default_launch(x.shape[0], *weight.shape) is not None


def decode_linear_triton(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, launch: Launch | None = None, *,
    row_sumsq: torch.Tensor | None = None, eps: float = 1e-5,
) -> torch.Tensor:
    """Launches the kernel: returns (M, N) in x's dtype for x (M, K), weight (N, K).
    Without ``launch``, runs ``F.linear`` where :func:`default_launch` says cuBLAS's
    product is faster. ``row_sumsq`` (M, P), ``eps``: x's rows are a deferred RMSNorm's
    (see the op); each output row is scaled by its 1 / rms before the bias."""
    launch = launch or default_launch(x.shape[0], *weight.shape)
    if launch is None:
        if row_sumsq is None:
            return F.linear(x, weight, bias)
        return linear_deferred_norm_reference(x, weight, bias, row_sumsq, eps)
    out = torch.empty((x.shape[0], weight.shape[0]), dtype=x.dtype, device=x.device)
    _launch(x, weight, bias, out, launch, row_sumsq=row_sumsq, eps=eps)
    return out


def decode_linear_add_norm_triton(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor,
    norm_weight: torch.Tensor, residual_dtype: torch.dtype, launch: Launch | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The product with the residual add and a deferred RMSNorm as its epilogue:
    (scaled (M, N) in x's dtype, sumsq (M, programs along N) float32, new_residual (M, N)
    in residual_dtype); None where :func:`default_launch` says cuBLAS's product runs
    (the caller then adds and norms separately)."""
    m, n = x.shape[0], weight.shape[0]
    launch = launch or default_launch(m, n, x.shape[1])
    if launch is None:
        return None
    scaled = torch.empty((m, n), dtype=x.dtype, device=x.device)
    sumsq = torch.empty((m, cdiv(n, launch[1])), dtype=torch.float32, device=x.device)
    new_residual = torch.empty((m, n), dtype=residual_dtype, device=x.device)
    _launch(x, weight, bias, scaled, launch, add_norm=(residual, new_residual, norm_weight, sumsq))
    return scaled, sumsq, new_residual


def _launch(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor, launch: Launch, *,
    row_sumsq: torch.Tensor | None = None, eps: float = 1e-5,
    add_norm: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> None:
    m, k = x.shape
    n = weight.shape[0]
    block_m, block_n, block_k, warps, stages, *split = launch
    # Each part takes k_chunks of K's blocks; the parts are recounted from that, so that
    # none is left without work (more parts asked than K has blocks, or a short last part).
    k_blocks = cdiv(k, block_k)
    k_chunks = cdiv(k_blocks, min(split[0] if split else 1, k_blocks))
    split_k = cdiv(k_blocks, k_chunks)
    precision, upcast = dot_precision(x.dtype)
    grid = (cdiv(n, block_n), cdiv(m, block_m), split_k)
    if split_k > 1:
        partials = torch.empty((split_k, m, n), dtype=torch.float32, device=x.device)
        counters = split_counters("decode_linear", x.device, grid[0] * grid[1])
    else:
        partials = counters = out
    # Unused pointers point at out: the kernel never reads them (their flags are off).
    in_sumsq = row_sumsq if row_sumsq is not None else out
    residual, new_residual, norm_weight, out_sumsq = add_norm if add_norm is not None else (out,) * 4
    parts = row_sumsq.shape[1] if row_sumsq is not None else 1
    pdl = dependent_launch.enabled_for(x.device)
    _decode_linear_kernel[grid](
        x, weight, bias if bias is not None else weight, out, partials, counters,
        in_sumsq, residual, new_residual, norm_weight, out_sumsq,
        m, n, k, parts, 1.0 / k, eps,
        *x.stride(), *weight.stride(), *out.stride(), in_sumsq.stride(0), *residual.stride(),
        *new_residual.stride(), out_sumsq.stride(0),
        HAS_BIAS=bias is not None,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, K_CHUNKS=k_chunks, SPLIT_K=split_k,
        PRECISION=precision, UPCAST=upcast,
        PDL=pdl, launch_pdl=pdl, PREFETCH=dependent_launch.prefetch_for(x.device),
        LINES_K=dependent_launch.prefetch_lines(min(k, k_chunks * block_k), weight.dtype),
        ROW_NORM=row_sumsq is not None, BLOCK_P=next_power_of_2(parts), ADD_NORM=add_norm is not None,
        num_warps=warps, num_stages=stages,
    )
