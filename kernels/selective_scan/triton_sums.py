"""The backward's atomic sums: one zeroed fp32 workspace, one kernel to finish them.

The backward kernel adds its sums over channels (input-dependent dB, dC) and over time
and batch (dA, dD, ddelta_bias, time-invariant dB, dC) atomically into zeroed fp32
totals. Allocated one by one, each total costs a fill kernel, and each of dB and dC a
cast (and, with several buffer copies, a sum) after the kernel: up to nine small
launches around the scan's own, each a few microseconds on a GPU that waits for them
in turn. Here every total is a view of one workspace, zeroed by one fill, and one
kernel adds the copies up and writes each gradient in its input's dtype, into tensors
of its own (a custom op's outputs must not share memory).
"""
from __future__ import annotations

import dataclasses
import math

import torch
import triton
import triton.language as tl

from ..sizes import cdiv

# Elements a program of the finishing kernel writes.
FINISH_BLOCK = 1024
# fp32 elements between the starts of the workspace's views.
ALIGN = 16


@dataclasses.dataclass(frozen=True)
class AtomicSums:
    """Views of one zeroed fp32 workspace the backward kernel adds into.

    dA: (D, N); dB, dC: (copies, batch, groups of B or C, N, L) for an input-dependent
    B or C, (D, N) for a time-invariant one; dD, dbias: (D,); None where not wanted.
    """

    workspace: torch.Tensor
    dA: torch.Tensor
    dB: torch.Tensor | None
    dC: torch.Tensor | None
    dD: torch.Tensor | None
    dbias: torch.Tensor | None


def atomic_sums(
    B: torch.Tensor, C: torch.Tensor, *, batch: int, dim: int, n_state: int, length: int, copies: int,
    dD: bool, dbias: bool, device: torch.device,
) -> AtomicSums:
    """The zeroed totals of a backward whose B and C are shaped like ``B`` and ``C``."""

    def bc_shape(X: torch.Tensor) -> tuple[int, ...]:
        if X.dim() == 2:
            return (dim, n_state)
        return (copies, batch, X.shape[1] if X.dim() == 4 else 1, n_state, length)

    shapes = [(dim, n_state), bc_shape(B), bc_shape(C), (dim,) if dD else None, (dim,) if dbias else None]
    sizes = [0 if s is None else math.prod(s) for s in shapes]
    # Each view starts on a 64-byte boundary: Triton specializes a kernel on whether its
    # pointers are 16-byte aligned, and the backward kernel should see them as a tensor
    # of their own would be.
    starts = [sum(cdiv(n, ALIGN) * ALIGN for n in sizes[:k]) for k in range(len(sizes) + 1)]
    workspace = torch.zeros(starts[-1], dtype=torch.float32, device=device)
    views = [None if shape is None else workspace[start:start + size].view(shape)
             for shape, start, size in zip(shapes, starts, sizes)]
    return AtomicSums(workspace, *views)


def finish_sums(
    sums: AtomicSums, B: torch.Tensor, C: torch.Tensor, D: torch.Tensor | None, delta_bias: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(dA, dB, dC, dD, ddelta_bias) from the workspace: the copies of an input-dependent
    dB or dC added up, each in its input's shape and dtype (contiguous), in one launch."""
    dA = torch.empty(sums.dA.shape, dtype=torch.float32, device=sums.workspace.device)
    dB = torch.empty(B.shape, dtype=B.dtype, device=B.device)
    dC = torch.empty(C.shape, dtype=C.dtype, device=C.device)
    dD = torch.empty_like(D, memory_format=torch.contiguous_format) if D is not None else None
    dbias = (
        torch.empty_like(delta_bias, memory_format=torch.contiguous_format) if delta_bias is not None else None
    )
    parts = [(sums.dA, dA), (sums.dB, dB), (sums.dC, dC), (sums.dD, dD), (sums.dbias, dbias)]
    args, longest, max_copies = [], 0, 1
    for total, out in parts:
        if out is None:
            args += [sums.workspace, 0, 0, 1, 0]  # nothing to write
            continue
        copies = total.shape[0] if total.dim() == 5 else 1
        size = out.numel()
        assert total.numel() == copies * size, "a total and its gradient disagree in size"
        args += [out, total.storage_offset(), size, copies, size]
        longest, max_copies = max(longest, size), max(max_copies, copies)
    if longest:
        _finish_kernel[(cdiv(longest, FINISH_BLOCK), len(parts))](
            sums.workspace, *args, BLOCK=FINISH_BLOCK, MAX_COPIES=max_copies,
        )
    return dA, dB, dC, dD, dbias


@triton.jit
def _add_copies(ws_ptr, out_ptr, start, size, copies, copy_stride, i, MAX_COPIES: tl.constexpr):
    """out[i] = sum over c < copies of ws[start + c * copy_stride + i], in out's dtype."""
    mask = i < size
    acc = tl.load(ws_ptr + start + i, mask=mask, other=0.0)
    for c in tl.static_range(1, MAX_COPIES):
        acc += tl.load(ws_ptr + start + c * copy_stride + i, mask=mask & (c < copies), other=0.0)
    tl.store(out_ptr + i, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _finish_kernel(
    ws_ptr,
    out0, start0, size0, copies0, stride0,
    out1, start1, size1, copies1, stride1,
    out2, start2, size2, copies2, stride2,
    out3, start3, size3, copies3, stride3,
    out4, start4, size4, copies4, stride4,
    BLOCK: tl.constexpr, MAX_COPIES: tl.constexpr,
):
    """Grid: (blocks of the longest gradient, 5): axis 1 picks dA, dB, dC, dD or ddelta_bias."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    part = tl.program_id(1)
    if part == 0:
        _add_copies(ws_ptr, out0, start0, size0, copies0, stride0, i, MAX_COPIES)
    elif part == 1:
        _add_copies(ws_ptr, out1, start1, size1, copies1, stride1, i, MAX_COPIES)
    elif part == 2:
        _add_copies(ws_ptr, out2, start2, size2, copies2, stride2, i, MAX_COPIES)
    elif part == 3:
        _add_copies(ws_ptr, out3, start3, size3, copies3, stride3, i, MAX_COPIES)
    else:
        _add_copies(ws_ptr, out4, start4, size4, copies4, stride4, i, MAX_COPIES)
