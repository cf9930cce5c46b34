"""softmax_cross_entropy: the Triton kernel against the reference and F.cross_entropy.

Without a GPU the kernel runs on the Triton interpreter (tests/conftest.py).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seqmamba.kernels import softmax_cross_entropy

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
IGNORE = -100


def _inputs(seed: int, rows: int, vocab: int, dtype: torch.dtype):
    gen = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(rows, vocab, generator=gen)).to(dtype)
    labels = torch.randint(0, vocab, (rows,), generator=gen)
    labels[torch.rand(rows, generator=gen) < 0.25] = IGNORE
    return logits.to(DEVICE), labels.to(DEVICE)


def _expected(logits: torch.Tensor, labels: torch.Tensor):
    """F.cross_entropy in float64, and its gradient through autograd."""
    x = logits.double().requires_grad_()
    losses = F.cross_entropy(x, labels, ignore_index=IGNORE, reduction="none")
    (grad,) = torch.autograd.grad(losses.sum(), x)
    correct = (logits.double().argmax(-1) == labels) & (labels != IGNORE)
    return losses.detach(), correct, grad


@pytest.mark.parametrize("dtype, rtol", ((torch.float32, 1e-5), (torch.bfloat16, 1e-5), (torch.float16, 1e-5)))
@pytest.mark.parametrize("vocab", (1, 37, 5003))
@pytest.mark.parametrize("backend", ("triton", "reference"))
def test_losses_hits_and_gradient_match_cross_entropy(backend, vocab, dtype, rtol):
    logits, labels = _inputs(vocab, rows=9, vocab=vocab, dtype=dtype)
    losses, correct, dlogits = softmax_cross_entropy(logits, labels, IGNORE, backend=backend)
    want_losses, want_correct, want_grad = _expected(logits, labels)
    assert losses.dtype == torch.float32 and correct.dtype == torch.bool and dlogits.dtype == dtype
    torch.testing.assert_close(losses.double(), want_losses, rtol=rtol, atol=1e-6)
    assert torch.equal(correct, want_correct)
    # The gradient is rounded to the logits' dtype once; in fp32 the softmax's own
    # rounding (of logsumexp, ~1e-6 relative at these widths) is what is left.
    tol = max(torch.finfo(dtype).eps, 2e-6)
    torch.testing.assert_close(dlogits.double(), want_grad, rtol=tol, atol=tol)
    assert (dlogits[labels == IGNORE] == 0).all()


def test_gradient_overwrites_the_logits_when_asked():
    logits, labels = _inputs(1, rows=6, vocab=300, dtype=torch.bfloat16)
    kept = logits.clone()
    losses, _, dlogits = softmax_cross_entropy(logits, labels, IGNORE, out=logits, backend="triton")
    assert dlogits.data_ptr() == logits.data_ptr()
    ref_losses, _, ref_grad = softmax_cross_entropy(kept, labels, IGNORE, backend="reference")
    torch.testing.assert_close(losses, ref_losses, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(dlogits, ref_grad, rtol=0, atol=torch.finfo(torch.bfloat16).eps)


def test_without_grad_only_losses_and_hits():
    logits, labels = _inputs(2, rows=5, vocab=64, dtype=torch.float32)
    before = logits.clone()
    losses, correct, dlogits = softmax_cross_entropy(logits, labels, IGNORE, with_grad=False, backend="triton")
    assert dlogits is None and torch.equal(logits, before)
    torch.testing.assert_close(losses.double(), _expected(logits, labels)[0], rtol=1e-6, atol=1e-6)


def test_ties_count_the_first_largest_logit_like_argmax():
    """A maximum repeated in a later block (BLOCK_V = 4096) does not take the argmax."""
    vocab = 5000
    logits = torch.zeros(3, vocab, device=DEVICE)
    logits[:, 10] = 5.0
    logits[:, 4500] = 5.0
    labels = torch.tensor([10, 4500, 11], device=DEVICE)
    _, correct, _ = softmax_cross_entropy(logits, labels, IGNORE, backend="triton")
    assert correct.tolist() == [True, False, False]


def test_rows_with_a_stride_and_an_empty_batch():
    logits, labels = _inputs(3, rows=8, vocab=50, dtype=torch.float32)
    wide = torch.randn(8, 64, device=DEVICE)
    wide[:, :50] = logits
    view = wide[:, :50]
    got = softmax_cross_entropy(view, labels, IGNORE, backend="triton")
    want = softmax_cross_entropy(logits, labels, IGNORE, backend="reference")
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    empty = softmax_cross_entropy(logits[:0], labels[:0], IGNORE, backend="triton")
    assert [t.shape[0] for t in empty] == [0, 0, 0]


@pytest.mark.parametrize("bad, message", (
    (dict(labels=torch.tensor([0, 7])), r"labels must lie in \[0, 5\) or equal ignore_index \(-100\); label 7 at flat position 1"),
    (dict(labels=torch.tensor([0, -3])), "label -3 at flat position 1"),
    (dict(labels=torch.tensor([0, 1], dtype=torch.int32)), "labels has dtype torch.int32"),
    (dict(labels=torch.tensor([0, 1, 2])), r"labels must have shape \(T,\)"),
    (dict(logits=torch.zeros(5, 2).T), "unit stride along V"),
    (dict(out=torch.zeros(2, 5, dtype=torch.float64)), "out has dtype torch.float64"),
))
def test_bad_inputs_are_named(bad, message):
    args = dict(logits=torch.zeros(2, 5), labels=torch.tensor([0, IGNORE]), out=None) | bad
    with pytest.raises(ValueError, match=message):
        softmax_cross_entropy(args["logits"], args["labels"], IGNORE, out=args["out"], backend="reference")
