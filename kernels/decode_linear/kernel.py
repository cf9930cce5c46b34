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
from ..sizes import cdiv, smallest_block_m
from ..split_counters import split_counters

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages[, SPLIT_K]): SPLIT_K programs share
# each output tile's K loop (default 1).
Launch = tuple[int, ...]


@triton.jit
def row_tile_product(x_ptr, w_ptr, b_ptr, rows, cols, mask_r, mask_c, K, s_xm, s_xk, s_wn, s_wk,
                     HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     K_CHUNKS: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """float32 [BLOCK_M, BLOCK_N] tile of ``x @ w.T (+ bias)`` for ``rows`` x ``cols``,
    over the whole K loop (also the fused in_proj + conv step's product)."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for c in range(0, K_CHUNKS):
        k = c * BLOCK_K + tl.arange(0, BLOCK_K)
        mask_k = k < K
        x = tl.load(x_ptr + rows[:, None] * s_xm + k[None, :] * s_xk, mask=mask_r[:, None] & mask_k[None, :], other=0.0)
        w = tl.load(w_ptr + cols[None, :] * s_wn + k[:, None] * s_wk, mask=mask_c[None, :] & mask_k[:, None], other=0.0)
        if UPCAST:
            x, w = x.to(tl.float32), w.to(tl.float32)
        acc = tl.dot(x, w, acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(b_ptr + cols, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    return acc


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
    M, N, K,
    s_xm, s_xk, s_wn, s_wk, s_om, s_on,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, K_CHUNKS: tl.constexpr,
    SPLIT_K: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    PDL: tl.constexpr, PREFETCH: tl.constexpr, LINES_K: tl.constexpr,
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
        acc = row_tile_product(x_ptr, w_ptr, b_ptr, rows, cols, mask_r, mask_c, k_len, s_xm, s_xk, s_wn, s_wk,
                               HAS_BIAS, BLOCK_M, BLOCK_N, BLOCK_K, K_CHUNKS, PRECISION, UPCAST)
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
            if HAS_BIAS:
                total += tl.load(b_ptr + cols, mask=mask_c, other=0.0).to(tl.float32)[None, :]
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
# 2026-12-06 morning). Between 4 and 16 rows nothing was measured: the line is at 8.
# in_proj, as wide but over a shorter K, runs faster as this kernel at 32 and 64 rows.
_WIDE_CUBLAS_ROWS = range(9, 33)
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
    if wide and in_features >= _LONG_K and rows in _WIDE_CUBLAS_ROWS:
        return None
    block_m = smallest_block_m(rows)
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
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, launch: Launch | None = None
) -> torch.Tensor:
    """Launches the kernel: returns (M, N) in x's dtype for x (M, K), weight (N, K).
    Without ``launch``, runs ``F.linear`` where :func:`default_launch` says cuBLAS's
    product is faster."""
    m, k = x.shape
    n = weight.shape[0]
    launch = launch or default_launch(m, n, k)
    if launch is None:
        return F.linear(x, weight, bias)
    block_m, block_n, block_k, warps, stages, *split = launch
    # Each part takes k_chunks of K's blocks; the parts are recounted from that, so that
    # none is left without work (more parts asked than K has blocks, or a short last part).
    k_blocks = cdiv(k, block_k)
    k_chunks = cdiv(k_blocks, min(split[0] if split else 1, k_blocks))
    split_k = cdiv(k_blocks, k_chunks)
    precision, upcast = dot_precision(x.dtype)
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    grid = (cdiv(n, block_n), cdiv(m, block_m), split_k)
    if split_k > 1:
        partials = torch.empty((split_k, m, n), dtype=torch.float32, device=x.device)
        counters = split_counters("decode_linear", x.device, grid[0] * grid[1])
    else:
        partials = counters = out
    pdl = dependent_launch.enabled_for(x.device)
    _decode_linear_kernel[grid](
        x, weight, bias if bias is not None else weight, out, partials, counters,
        m, n, k, *x.stride(), *weight.stride(), *out.stride(),
        HAS_BIAS=bias is not None,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, K_CHUNKS=k_chunks, SPLIT_K=split_k,
        PRECISION=precision, UPCAST=upcast,
        PDL=pdl, launch_pdl=pdl, PREFETCH=dependent_launch.prefetch_for(x.device),
        LINES_K=dependent_launch.prefetch_lines(min(k, k_chunks * block_k), weight.dtype),
        num_warps=warps, num_stages=stages,
    )
    return out
