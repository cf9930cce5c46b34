"""Triton kernel: ``x @ weight.T + bias`` for the few rows of a decode step.

Grid (cdiv(N, BLOCK_N), cdiv(M, BLOCK_M)). A program computes a [BLOCK_M, BLOCK_N] tile
over the whole K loop (tl.dot, float32 accumulation). At decoding batch sizes the
product reads its weight once and is bound by that read and by latency, not by
arithmetic; what a Triton product offers over cuBLAS's is that it is a dependent launch
(kernels/dependent_launch.py): it asks L2 for its weight rows while the kernel before
it still runs, and it lets the kernel after it launch early, where a cuBLAS product
leaves a gap on both sides.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .. import dependent_launch
from ..backend import triton_interpreter_enabled
from ..sizes import cdiv, smallest_block_m

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages)
Launch = tuple[int, int, int, int, int]


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
    x_ptr, w_ptr, b_ptr, out_ptr,
    M, N, K,
    s_xm, s_xk, s_wn, s_wk, s_om, s_on,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, K_CHUNKS: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    PDL: tl.constexpr, PREFETCH: tl.constexpr, LINES_K: tl.constexpr,
):
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = tl.program_id(1).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_c = cols < N
    mask_r = rows < M
    if PDL:  # a dependent launch (kernels/dependent_launch.py): wait before any load
        if PREFETCH:  # ... but the weight can be on its way to L2 meanwhile
            dependent_launch.prefetch_l2(w_ptr + cols * s_wn, mask_c, K, s_wk, LINES_K)
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    acc = row_tile_product(x_ptr, w_ptr, b_ptr, rows, cols, mask_r, mask_c, K, s_xm, s_xk, s_wn, s_wk,
                           HAS_BIAS, BLOCK_M, BLOCK_N, BLOCK_K, K_CHUNKS, PRECISION, UPCAST)
    tl.store(out_ptr + rows[:, None] * s_om + cols[None, :] * s_on, acc.to(out_ptr.dtype.element_ty),
             mask=mask_r[:, None] & mask_c[None, :])


# Beyond this many rows a product is no longer a decode step's: cuBLAS's kernels take it.
MAX_ROWS = 64
# Products at least this wide (out_proj: 768 columns at the 130M shape; x_proj has 80) ...
_WIDE = 256
# ... ran slower as this kernel than as cuBLAS's inside the graphed decode step at these
# row counts (H100, decode_linear_tuning.py: ms a token with out_proj on cuBLAS / this
# kernel, x_proj on this kernel: 4 rows 0.471 / 0.441, 16 rows 0.499 / 0.643, 32 rows
# 0.695 / 0.742; at 1 and 64 rows this kernel's was 13% and 8% faster; RESULTS.md,
# 2026-12-06 morning). Between 4 and 16 rows nothing was measured: the line is at 8.
_WIDE_CUBLAS_ROWS = range(9, 33)


def default_launch(rows: int, out_features: int) -> Launch | None:
    """Block sizes for ``rows`` x ``out_features``, or None where cuBLAS's product runs.

    The fewest rows a tl.dot tile takes; 16 output columns a program, so that every SM
    streams a share of the weight (x_proj's 80 columns still make only 5 programs a row
    block, and measured faster than cuBLAS's at 1, 16 and 64 rows).
    """
    if rows > MAX_ROWS or (out_features >= _WIDE and rows in _WIDE_CUBLAS_ROWS):
        return None
    return smallest_block_m(rows), 16, 256, 4, 3


def decode_linear_triton(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, launch: Launch | None = None
) -> torch.Tensor:
    """Launches the kernel: returns (M, N) in x's dtype for x (M, K), weight (N, K).
    Without ``launch``, runs ``F.linear`` where :func:`default_launch` says cuBLAS's
    product is faster."""
    m, k = x.shape
    n = weight.shape[0]
    launch = launch or default_launch(m, n)
    if launch is None:
        return F.linear(x, weight, bias)
    block_m, block_n, block_k, warps, stages = launch
    precision, upcast = dot_precision(x.dtype)
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    pdl = dependent_launch.enabled_for(x.device)
    _decode_linear_kernel[(cdiv(n, block_n), cdiv(m, block_m))](
        x, weight, bias if bias is not None else weight, out,
        m, n, k, *x.stride(), *weight.stride(), *out.stride(),
        HAS_BIAS=bias is not None,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, K_CHUNKS=cdiv(k, block_k),
        PRECISION=precision, UPCAST=upcast,
        PDL=pdl, launch_pdl=pdl, PREFETCH=dependent_launch.prefetch_for(x.device),
        LINES_K=dependent_launch.prefetch_lines(k, weight.dtype),
        num_warps=warps, num_stages=stages,
    )
    return out
