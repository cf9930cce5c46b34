"""Plain-PyTorch softmax cross-entropy per row, with the gradient of the rows' sum."""
from __future__ import annotations

import torch


def softmax_cross_entropy_reference(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, with_grad: bool, out: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """logits (T, V) float, labels (T,) int64 -> (losses (T,), correct (T,) bool, dlogits).

    losses: logsumexp(row) - row[label] in fp32 (fp64 for fp64 logits), 0 where the label
    is ``ignore_index``; correct: the row's first largest logit is at the label;
    dlogits (with_grad): softmax(row) - onehot(label), zero on ignored rows, in the
    logits' dtype, written into ``out`` when given (which may be ``logits`` itself).
    """
    work_dtype = torch.promote_types(logits.dtype, torch.float32)
    x = logits.to(work_dtype)
    scored = labels != ignore_index
    target = torch.where(scored, labels, 0)
    lse = torch.logsumexp(x, dim=-1)
    losses = torch.where(scored, lse - x.gather(1, target[:, None])[:, 0], 0.0)
    correct = (x.argmax(dim=-1) == labels) & scored
    if not with_grad:
        return losses, correct, None
    probs = (x - lse[:, None]).exp_()
    probs.scatter_add_(1, target[:, None], torch.full_like(lse, -1.0)[:, None])
    probs.mul_(scored[:, None])
    if out is None:
        return losses, correct, probs.to(logits.dtype)
    out.copy_(probs)
    return losses, correct, out
