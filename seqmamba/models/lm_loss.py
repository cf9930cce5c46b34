"""Next-token cross-entropy from hidden states, without the (tokens, vocab) logits in memory.

A language model's head turns (tokens, d_model) hidden states into (tokens, vocab)
logits; at the Mamba-130M shape and a batch of 8 x 2048 that is 16,384 x 50,280 values,
1.6 GB in bf16 and, once the loss upcasts them, 3.3 GB more in fp32 for the softmax and
as much again for its gradient: gigabytes held at the peak of a training step for a
tensor that is only ever reduced. :func:`linear_cross_entropy` computes the logits a
block of tokens at a time and, when a backward will follow, their gradient with
respect to the hidden states and the head's weight right away (the gradient of a
mean or sum of cross-entropies needs nothing but the softmax), so that only one block's
logits exist at any time, and the per-row softmax, loss and gradient run as one op
(``seqmamba.kernels.softmax_cross_entropy``: a Triton kernel on CUDA that reads the
block's 16-bit logits twice and overwrites them with their gradient). The result is the
same function as ``lm_head`` followed by ``F.cross_entropy`` (same products, same dtypes
under autocast), summed over the labelled tokens.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from seqmamba.kernels.cross_entropy import softmax_cross_entropy
from seqmamba.kernels.cross_entropy.op import check_labels_in_range

# Logits computed at once: 2^27 is ~2,700 tokens of a 50k vocabulary, 256 MB in bf16 (the
# Triton softmax works in place; the reference's fp32 copies take 512 MB each). Fewer,
# larger blocks: each block adds its head-weight gradient into the (V, d) fp32 sum, a
# read and a write of 154 MB at the 130M shape, so halving the blocks saves ~1.8 GB of
# traffic a step.
BLOCK_LOGITS = 1 << 27


@dataclass
class LMLoss:
    """total: sum of the labelled tokens' cross-entropies (differentiable fp32 scalar;
    fp64 for fp64 inputs); count: labelled tokens; correct: labelled tokens whose largest
    logit is the label (int64 scalars)."""

    total: Tensor
    count: Tensor
    correct: Tensor


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    *,
    ignore_index: int = -100,
    block_tokens: int | None = None,
    check_labels: bool = True,
) -> LMLoss:
    """Cross-entropy of ``hidden @ weight.T`` against ``labels``, a block of tokens at a time.

    hidden: (..., d) float; weight: (vocab, d); labels: (...) int64, ``ignore_index``
    where no token is scored. block_tokens: tokens per block (default: about
    ``BLOCK_LOGITS`` logits a block). Under autocast the products run in the autocast
    dtype, as ``nn.Linear`` would; the softmax in fp32.
    """
    if hidden.shape[:-1] != labels.shape:
        raise ValueError(
            f"linear_cross_entropy: hidden {tuple(hidden.shape)} and labels {tuple(labels.shape)} must agree on "
            "every axis but hidden's last"
        )
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"linear_cross_entropy: weight must be (vocab, {hidden.shape[-1]}) for hidden {tuple(hidden.shape)}, "
            f"got {tuple(weight.shape)}"
        )
    if labels.dtype != torch.int64:
        raise ValueError(f"linear_cross_entropy: labels must be int64, got {labels.dtype}")
    if check_labels:
        check_labels_in_range("linear_cross_entropy", labels, weight.shape[0], ignore_index)
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        compute_dtype = torch.get_autocast_dtype(device_type)
    else:
        compute_dtype = torch.promote_types(hidden.dtype, weight.dtype)
    if block_tokens is None:
        block_tokens = max(1, BLOCK_LOGITS // weight.shape[0])
    flat_labels = labels.reshape(-1)
    # Gradients are computed with the loss, so only when a backward can follow (not
    # under no_grad, e.g. in validation, where ctx.needs_input_grad would still be set).
    grads = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    total, correct = _LinearCrossEntropy.apply(
        hidden.reshape(-1, hidden.shape[-1]), weight, flat_labels, ignore_index, block_tokens, compute_dtype, grads
    )
    return LMLoss(total=total, count=(flat_labels != ignore_index).sum(), correct=correct)


class _LinearCrossEntropy(torch.autograd.Function):
    """(hidden (T, d), weight (V, d), labels (T,)) -> (sum of cross-entropies, correct count).

    The forward computes the gradients too when autograd will ask for them: the output
    is a sum, so the backward only scales them by the incoming scalar gradient.
    """

    @staticmethod
    def forward(
        ctx: Any, hidden: Tensor, weight: Tensor, labels: Tensor, ignore_index: int, block_tokens: int,
        compute_dtype: torch.dtype, grads: bool,
    ) -> tuple[Tensor, Tensor]:
        need_hidden, need_weight = grads and ctx.needs_input_grad[0], grads and ctx.needs_input_grad[1]
        tokens = hidden.shape[0]
        softmax_dtype = torch.promote_types(compute_dtype, torch.float32)  # fp32, or fp64 for fp64 inputs
        total = torch.zeros((), dtype=softmax_dtype, device=hidden.device)
        correct = torch.zeros((), dtype=torch.int64, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=softmax_dtype, device=weight.device) if need_weight else None
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(compute_dtype)
            for start in range(0, tokens, block_tokens):
                h = hidden[start:start + block_tokens].to(compute_dtype)
                logits = h @ w.T  # (block, V); the gradient overwrites it
                losses, hits, dlogits = softmax_cross_entropy(
                    logits, labels[start:start + block_tokens], ignore_index,
                    with_grad=need_hidden or need_weight, out=logits, check_labels=False,
                )
                total += losses.sum()
                correct += hits.sum()
                if need_hidden:
                    grad_hidden[start:start + block_tokens] = dlogits @ w
                if need_weight:
                    _add_product(grad_weight, dlogits.T, h)
        ctx.save_for_backward(*(g for g in (grad_hidden, grad_weight) if g is not None))
        ctx.has = (grad_hidden is not None, grad_weight is not None)
        ctx.weight_dtype = weight.dtype
        ctx.mark_non_differentiable(correct)
        return total, correct

    @staticmethod
    def backward(ctx: Any, grad_total: Tensor, _grad_correct: Tensor | None):
        saved = iter(ctx.saved_tensors)
        grad_hidden = next(saved) if ctx.has[0] else None
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_total.to(grad_hidden.dtype)
        grad_weight = (next(saved) * grad_total).to(ctx.weight_dtype) if ctx.has[1] else None
        return grad_hidden, grad_weight, None, None, None, None, None


def _add_product(acc: Tensor, a: Tensor, b: Tensor) -> None:
    """acc += a @ b, in place; acc may be wider than a and b (fp32 sums of bf16 products).

    On CUDA the product accumulates into acc inside the matrix product (its epilogue reads
    acc once): no product tensor, no separate add, which at the LM head's (V, d) size was
    a tenth of a millisecond per block. The CPU has no mixed-dtype product: product, then add.
    """
    if acc.dtype == a.dtype:
        acc.addmm_(a, b)
    elif acc.is_cuda:
        torch.addmm(acc, a, b, out_dtype=acc.dtype, out=acc)
    else:
        acc += a @ b

