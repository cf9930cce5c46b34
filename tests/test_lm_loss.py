"""linear_cross_entropy and MambaLM.loss against the head's logits and F.cross_entropy."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seqmamba.models import MambaLM, ModelConfig, linear_cross_entropy
from seqmamba.tasks.base import IGNORE_INDEX, language_model_loss, language_model_step

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _inputs(seed: int, tokens: tuple[int, ...] = (3, 37), dim: int = 24, vocab: int = 53, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(*tokens, dim, generator=gen, dtype=dtype).requires_grad_()
    weight = (torch.randn(vocab, dim, generator=gen, dtype=dtype) / dim**0.5).requires_grad_()
    labels = torch.randint(0, vocab, tokens, generator=gen)
    labels[torch.rand(tokens, generator=gen) < 0.3] = IGNORE_INDEX
    return hidden, weight, labels


def _unfused(hidden, weight, labels):
    logits = hidden @ weight.T
    flat = logits.reshape(-1, logits.shape[-1])
    total = F.cross_entropy(flat, labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
    scored = labels.reshape(-1) != IGNORE_INDEX
    correct = ((flat.argmax(-1) == labels.reshape(-1)) & scored).sum()
    return total, scored.sum(), correct


@pytest.mark.parametrize("block_tokens", (1, 7, 64, 10_000))
def test_matches_logits_and_cross_entropy_in_float64(block_tokens):
    hidden, weight, labels = _inputs(0, dtype=torch.float64)
    out = linear_cross_entropy(hidden, weight, labels, ignore_index=IGNORE_INDEX, block_tokens=block_tokens)
    total, count, correct = _unfused(hidden, weight, labels)
    assert out.total.dtype == torch.float64
    torch.testing.assert_close(out.total, total, rtol=1e-12, atol=0)
    assert out.count.item() == count.item() and out.correct.item() == correct.item()
    scale = torch.tensor(0.37, dtype=torch.float64)
    fused_grads = torch.autograd.grad(out.total * scale, (hidden, weight))
    ref_grads = torch.autograd.grad(total * scale, (hidden, weight))
    for got, want in zip(fused_grads, ref_grads):
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-14)


def test_bf16_autocast_runs_the_products_in_bf16_like_the_linear_head():
    hidden, weight, labels = _inputs(1, tokens=(2, 50), dim=32, vocab=70)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = linear_cross_entropy(hidden, weight, labels, ignore_index=IGNORE_INDEX, block_tokens=16)
        logits = F.linear(hidden, weight)
        assert logits.dtype == torch.bfloat16
        total, _, correct = _unfused_from_logits(logits, labels)
    torch.testing.assert_close(out.total, total, rtol=1e-5, atol=0)
    assert out.correct.item() == correct.item()
    fused = torch.autograd.grad(out.total, (hidden, weight))
    ref = torch.autograd.grad(total, (hidden, weight))
    for got, want in zip(fused, ref):
        assert got.dtype == torch.float32
        # The unfused head rounds the whole weight gradient to bf16 once; the fused one
        # rounds each block's share: agreement to bf16 precision.
        assert ((got - want).norm() / want.norm()).item() < 1e-2


def _unfused_from_logits(logits, labels):
    flat = logits.reshape(-1, logits.shape[-1]).float()
    total = F.cross_entropy(flat, labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
    scored = labels.reshape(-1) != IGNORE_INDEX
    return total, scored.sum(), ((flat.argmax(-1) == labels.reshape(-1)) & scored).sum()


def test_no_gradients_are_computed_without_grad_mode(monkeypatch):
    hidden, weight, labels = _inputs(2)
    calls = []
    real_matmul = torch.Tensor.__matmul__
    monkeypatch.setattr(torch.Tensor, "__matmul__", lambda a, b: calls.append(1) or real_matmul(a, b))
    with torch.no_grad():
        out = linear_cross_entropy(hidden, weight, labels, ignore_index=IGNORE_INDEX, block_tokens=40)
    assert len(calls) == 3  # one product per block of 40 of the 111 tokens, no gradient products
    assert out.total.grad_fn is None
    total, _, _ = _unfused(hidden.detach(), weight.detach(), labels)
    torch.testing.assert_close(out.total, total, rtol=1e-6, atol=0)


def test_all_tokens_ignored_gives_zero_loss_and_zero_gradients():
    hidden, weight, labels = _inputs(3)
    labels.fill_(IGNORE_INDEX)
    out = linear_cross_entropy(hidden, weight, labels, ignore_index=IGNORE_INDEX)
    assert out.total.item() == 0.0 and out.count.item() == 0 and out.correct.item() == 0
    grads = torch.autograd.grad(out.total, (hidden, weight))
    assert all(g.abs().max().item() == 0.0 for g in grads)


@pytest.mark.parametrize("bad, message", (
    (dict(labels=torch.zeros(3, 36, dtype=torch.long)), "must agree on every axis"),
    (dict(weight=torch.zeros(53, 23)), r"weight must be \(vocab, 24\)"),
    (dict(labels=torch.zeros(3, 37, dtype=torch.int32)), "labels must be int64"),
))
def test_bad_inputs_are_named(bad, message):
    hidden, weight, labels = _inputs(4)
    args = dict(hidden=hidden, weight=weight, labels=labels) | bad
    with pytest.raises(ValueError, match=message):
        linear_cross_entropy(args["hidden"], args["weight"], args["labels"])


def test_mamba_lm_loss_equals_the_logits_path_with_tied_weights():
    """The task helper on a MambaLM (fused) against language_model_step on its logits:
    same loss, metrics and gradients of every parameter (the tied embedding included)."""
    torch.manual_seed(5)
    model = MambaLM(ModelConfig(d_model=32, n_layer=2, vocab_size=61, tie_embeddings=True)).double()
    ids = torch.randint(0, 61, (2, 19))
    labels = torch.randint(0, 61, (2, 19))
    labels[:, :4] = IGNORE_INDEX
    fused = language_model_loss(model, ids, labels)
    fused_grads = torch.autograd.grad(fused.loss, list(model.parameters()))
    plain = language_model_step(model(ids), labels)
    plain_grads = torch.autograd.grad(plain.loss, list(model.parameters()))
    torch.testing.assert_close(fused.loss.double(), plain.loss.double(), rtol=1e-6, atol=0)
    for name in ("loss", "accuracy"):
        torch.testing.assert_close(fused.metrics[name].total.double(), plain.metrics[name].total.double(), rtol=1e-6, atol=0)
        assert fused.metrics[name].count.item() == plain.metrics[name].count.item()
    # language_model_step takes the softmax in fp32, the fused loss in the model's fp64.
    for got, want in zip(fused_grads, plain_grads):
        assert ((got - want).norm() / want.norm()).item() < 1e-6


def test_the_triton_softmax_gives_the_same_loss_and_gradients():
    """The head's blocks through the Triton cross-entropy kernel (the GPU's path; the
    interpreter's on a CPU), its gradient written over each block's logits."""
    from seqmamba.kernels import use_backend

    hidden, weight, labels = _inputs(6, tokens=(2, 45), dim=16, vocab=300)
    hidden, weight, labels = hidden.detach().to(DEVICE).requires_grad_(), weight.detach().to(DEVICE).requires_grad_(), labels.to(DEVICE)
    with use_backend("triton"):
        out = linear_cross_entropy(hidden, weight, labels, ignore_index=IGNORE_INDEX, block_tokens=32)
    total, count, correct = _unfused(hidden, weight, labels)
    torch.testing.assert_close(out.total, total, rtol=1e-5, atol=0)
    assert out.count.item() == count.item() and out.correct.item() == correct.item()
    fused = torch.autograd.grad(out.total, (hidden, weight))
    ref = torch.autograd.grad(total, (hidden, weight))
    for got, want in zip(fused, ref):
        assert ((got - want).norm() / want.norm()).item() < 1e-5


def test_a_label_outside_the_vocabulary_is_named():
    hidden, weight, labels = _inputs(7)
    labels[1, 5] = 53
    with pytest.raises(ValueError, match=r"label 53 at flat position 42"):
        linear_cross_entropy(hidden, weight, labels, ignore_index=IGNORE_INDEX)


def test_mamba_lm_checks_labels_before_running_the_model(monkeypatch):
    model = MambaLM(ModelConfig(d_model=16, n_layer=1, vocab_size=20))
    ids = torch.randint(0, 20, (1, 5))
    labels = torch.tensor([[1, 2, 99, 3, IGNORE_INDEX]])
    monkeypatch.setattr(model.backbone, "forward", lambda *a: pytest.fail("the model ran before the labels were checked"))
    with pytest.raises(ValueError, match=r"MambaLM.loss: labels must lie in \[0, 24\).*label 99 at flat position 2"):
        model.loss(ids, labels, ignore_index=IGNORE_INDEX)
