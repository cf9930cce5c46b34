"""Triton softmax cross-entropy: one program per row of logits.

A row of a 50k vocabulary is read twice from memory (an online max and sum of
exponentials with the first argmax, then the gradient pass) and its gradient written
once, in the logits' own dtype: about three row-lengths of 16-bit traffic, where the
same loss through PyTorch's ops upcasts the logits to fp32 and runs a pass per
elementwise op. The gradient may overwrite the logits (each program reads an element
before it writes it and touches no other row).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..sizes import next_power_of_2

BLOCK_V = 4096


@triton.jit
def _xent_kernel(
    logits_ptr, labels_ptr, losses_ptr, correct_ptr, dlogits_ptr,
    V, s_row, s_drow, ignore_index,
    BLOCK: tl.constexpr, WITH_GRAD: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * s_row
    cols = tl.arange(0, BLOCK)
    label = tl.load(labels_ptr + row)
    scored = label != ignore_index
    target = tl.where(scored, label, 0)

    # Pass 1: running max m, sum of exp(x - m), and the first index of the largest logit.
    m = tl.full((), float("-inf"), tl.float32)
    total = tl.zeros((), tl.float32)
    best = tl.full((), float("-inf"), tl.float32)
    best_idx = tl.zeros((), tl.int64)
    start = 0
    while start < V:
        mask = start + cols < V
        x = tl.load(base + start + cols, mask=mask, other=float("-inf")).to(tl.float32)
        block_max = tl.max(x, axis=0)
        block_arg = tl.argmax(x, axis=0, tie_break_left=True)
        take = block_max > best  # strictly: an earlier block keeps a tie
        best_idx = tl.where(take, start + block_arg, best_idx)
        best = tl.maximum(best, block_max)
        new_m = tl.maximum(m, block_max)
        total = total * tl.exp(m - new_m) + tl.sum(tl.exp(x - new_m), axis=0)
        m = new_m
        start += BLOCK
    lse = m + tl.log(total)
    picked = tl.load(base + target).to(tl.float32)
    tl.store(losses_ptr + row, tl.where(scored, lse - picked, 0.0))
    tl.store(correct_ptr + row, (scored & (best_idx == label)).to(tl.int8))

    if WITH_GRAD:
        # Pass 2: softmax - onehot(label), zero for an ignored row.
        dbase = dlogits_ptr + row * s_drow
        start = 0
        while start < V:
            idx = start + cols
            mask = idx < V
            x = tl.load(base + idx, mask=mask, other=0.0).to(tl.float32)
            p = tl.exp(x - lse) - tl.where(idx == target, 1.0, 0.0)
            p = tl.where(scored, p, 0.0)
            tl.store(dbase + idx, p.to(dlogits_ptr.dtype.element_ty), mask=mask)
            start += BLOCK


def softmax_cross_entropy_triton(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, with_grad: bool, out: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """As ``softmax_cross_entropy_reference``; logits (T, V) with unit stride along V.
    Losses in fp32 (the kernel accumulates in fp32 for every input dtype)."""
    rows, vocab = logits.shape
    losses = torch.empty(rows, dtype=torch.float32, device=logits.device)
    correct = torch.empty(rows, dtype=torch.int8, device=logits.device)
    dlogits = None
    if with_grad:
        dlogits = out if out is not None else torch.empty_like(logits)
    block = min(BLOCK_V, next_power_of_2(vocab))
    if rows:
        _xent_kernel[(rows,)](
            logits, labels, losses, correct, dlogits if dlogits is not None else logits,
            vocab, logits.stride(0), (dlogits if dlogits is not None else logits).stride(0), ignore_index,
            BLOCK=block, WITH_GRAD=with_grad, num_warps=8 if block >= 2048 else 4,
        )
    return losses, correct.bool(), dlogits
