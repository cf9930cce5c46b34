"""Training on sequences longer than memory holds: the backward one chunk of the sequence
at a time, with the recurrent states passed between chunks.

A Mamba layer's only link across time is its state (the convolution's last inputs and
the SSM state h), so the gradient of a chunk's inputs needs only the chunk itself, the
states it started from and the gradient reaching the states it ended with. Hence:

1. a forward over chunks 0 .. n-2 without autograd, keeping each layer's state at every
   chunk boundary (a few KB per layer and chunk);
2. chunks n-1 .. 0 in reverse: rerun the chunk from its saved start states (made leaves
   that need gradients), backpropagate its share of the loss together with the gradient
   that chunk k+1 sent to its end states, and send the start states' gradients on to
   chunk k-1.

Memory then grows with the chunk length, not the sequence's (plus the token ids and the
boundary states); the cost is one more forward of all chunks but the last, as with
activation checkpointing. The gradients are those of the whole sequence's loss: the
scan and the convolution pass gradients through their initial and final states.
"""
from __future__ import annotations

import torch

from seqmamba.kernels.cross_entropy.op import check_labels_in_range

from .lm import MambaLM
from .lm_loss import LMLoss, linear_cross_entropy
from .mixer import MixerState


def backward_in_chunks(
    model: MambaLM, input_ids: torch.Tensor, labels: torch.Tensor, chunk_len: int, *, ignore_index: int = -100
) -> LMLoss:
    """Accumulates into the parameters' ``.grad`` the gradient of the mean cross-entropy
    ``model.loss(input_ids, labels)`` gives (total / count; zero when no label is
    scored), computed ``chunk_len`` steps at a time as the module docstring says.

    input_ids, labels: (batch, L) int64; labels ``ignore_index`` where nothing is scored.
    Returns the whole sequence's :class:`LMLoss` (total, count, correct), detached.
    """
    if not isinstance(chunk_len, int) or isinstance(chunk_len, bool) or chunk_len < 1:
        raise ValueError(f"backward_in_chunks: chunk_len must be an integer >= 1, got {chunk_len!r}")
    if labels.shape != input_ids.shape:
        raise ValueError(
            f"backward_in_chunks: labels {tuple(labels.shape)} must have the shape of input_ids {tuple(input_ids.shape)}"
        )
    if labels.dtype != torch.int64:
        raise ValueError(f"backward_in_chunks: labels must be int64, got {labels.dtype}")
    check_labels_in_range("backward_in_chunks", labels, model.lm_head.weight.shape[0], ignore_index)
    backbone = model.backbone
    starts = list(range(0, input_ids.shape[1], chunk_len))
    count = (labels != ignore_index).sum()
    # A batch with nothing scored has loss 0 and zero gradients, not 0 / 0.
    denominator = count.clamp(min=1)

    # 1. Each chunk's start states (the first chunk starts from none).
    start_states: list[list[MixerState] | None] = [None]
    with torch.no_grad():
        for start in starts[:-1]:
            _, states = backbone.forward_with_states(input_ids[:, start : start + chunk_len], start_states[-1])
            start_states.append(states)

    # 2. Chunks in reverse, each rerun with autograd.
    total = correct = torch.zeros((), device=input_ids.device)
    end_grads: list[MixerState] | None = None
    for start, saved in zip(reversed(starts), reversed(start_states)):
        leaves = None if saved is None else [_leaf(state) for state in saved]
        hidden, end_states = backbone.forward_with_states(input_ids[:, start : start + chunk_len], leaves)
        part = linear_cross_entropy(
            hidden, model.lm_head.weight, labels[:, start : start + chunk_len], ignore_index=ignore_index,
            check_labels=False,
        )
        outputs, grads = [part.total / denominator], [None]
        for state, grad in zip(end_states, end_grads or []):
            for tensor, tensor_grad in ((state.conv, grad.conv), (state.ssm, grad.ssm)):
                if tensor_grad is not None:
                    outputs.append(tensor)
                    grads.append(tensor_grad)
        torch.autograd.backward(outputs, grads)
        end_grads = None if leaves is None else [MixerState(conv=s.conv.grad, ssm=s.ssm.grad) for s in leaves]
        total = total + part.total.detach()
        correct = correct + part.correct
    return LMLoss(total=total, count=count, correct=correct.to(torch.int64))


def _leaf(state: MixerState) -> MixerState:
    return MixerState(conv=state.conv.detach().requires_grad_(True), ssm=state.ssm.detach().requires_grad_(True))
