"""Triton kernel: the index of each row's maximum, for greedy decoding's (batch, vocab) logits.

Grid (cdiv(V, BLOCK_V), rows). A program finds the first maximum of its slice of a row
(and the first NaN, which counts as the maximum, as torch.argmax has it) and writes
that partial; the last of a row's programs to finish (an acquire-release counter, see
kernels/split_counters.py) combines the row's partials, in slice order, and writes the
index. At a decode step's shapes (up to 64 rows of ~50k logits) torch's argmax runs
few programs a row, each walking its whole row; here every row is read by
cdiv(V, BLOCK_V) programs at once.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..sizes import cdiv, next_power_of_2
from ..split_counters import split_counters

BLOCK_V = 2048


@triton.jit
def _row_argmax_kernel(x_ptr, out_ptr, val_ptr, idx_ptr, count_ptr, V, s_row, s_v,
                       SPLITS: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_S: tl.constexpr):
    part = tl.program_id(0)
    row = tl.program_id(1).to(tl.int64)
    offs = part * BLOCK_V + tl.arange(0, BLOCK_V)
    valid = offs < V
    x = tl.load(x_ptr + row * s_row + offs * s_v, mask=valid, other=float("-inf")).to(tl.float32)
    nan = (x != x) & valid
    first_nan = tl.min(tl.where(nan, offs, V), axis=0)
    x = tl.where(nan, float("-inf"), x)
    best = tl.max(x, axis=0)
    first_best = tl.min(tl.where((x == best) & valid, offs, V), axis=0)
    # A NaN wins: the slice then reports NaN as its maximum, at its first NaN.
    best = tl.where(first_nan < V, float("nan"), best)
    first_best = tl.where(first_nan < V, first_nan, first_best)
    slot = row * SPLITS + part
    tl.store(val_ptr + slot, best)
    tl.store(idx_ptr + slot, first_best)
    # Every thread's partial is stored before the counter moves; the acquire-release
    # atomic makes them visible to the program that finds itself last.
    tl.debug_barrier()
    if tl.atomic_add(count_ptr + row, 1, sem="acq_rel", scope="gpu") == SPLITS - 1:
        s = tl.arange(0, BLOCK_S)
        in_row = s < SPLITS
        # .cg: from L2, where the other programs' partials are, never a stale L1 line.
        vals = tl.load(val_ptr + row * SPLITS + s, mask=in_row, other=float("-inf"), cache_modifier=".cg")
        idxs = tl.load(idx_ptr + row * SPLITS + s, mask=in_row, other=V, cache_modifier=".cg")
        # The slices are in index order, so the smallest index among the slices holding
        # the row's maximum is its first maximum; among slices holding a NaN, its first NaN.
        has_nan = (vals != vals) & in_row
        top = tl.max(tl.where(has_nan, float("-inf"), vals), axis=0)
        first_top = tl.min(tl.where(in_row & (vals == top), idxs, V), axis=0)
        first_nan = tl.min(tl.where(has_nan, idxs, V), axis=0)
        tl.store(out_ptr + row, tl.where(first_nan < V, first_nan, first_top).to(tl.int64))
        tl.store(count_ptr + row, 0)


def row_argmax_triton(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Launches the kernel: writes (rows,) int64 into ``out`` for x (rows, V) and returns it."""
    rows, v = x.shape
    splits = cdiv(v, BLOCK_V)
    vals = torch.empty(rows, splits, dtype=torch.float32, device=x.device)
    idxs = torch.empty(rows, splits, dtype=torch.int32, device=x.device)
    counters = split_counters("row_argmax", x.device, rows)
    _row_argmax_kernel[(splits, rows)](
        x, out, vals, idxs, counters, v, x.stride(0), x.stride(1),
        SPLITS=splits, BLOCK_V=BLOCK_V, BLOCK_S=next_power_of_2(splits), num_warps=4,
    )
    return out
