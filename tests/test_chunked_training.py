"""Training a sequence a chunk at a time (seqmamba.models.chunked.backward_in_chunks):
the same loss and gradients as the whole sequence's backward, and clear refusals."""
from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    # Before seqmamba's kernel modules are imported: Triton reads it at import.
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402

from seqmamba.kernels import use_backend  # noqa: E402
from seqmamba.models import MambaLM, ModelConfig  # noqa: E402
from seqmamba.models.chunked import backward_in_chunks  # noqa: E402

VOCAB = 23
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def reference_kernels():
    """float64 models run on the reference ops (the Triton kernels take 16- and 32-bit
    inputs); the test of the kernels chooses them inside."""
    with use_backend("reference"):
        yield


def make_model(dtype: torch.dtype = torch.float64, **options) -> MambaLM:
    torch.manual_seed(0)
    config = ModelConfig(d_model=16, n_layer=3, vocab_size=VOCAB, d_state=5, dt_rank=3, **options)
    return MambaLM(config).to(DEVICE, dtype)


def batch(length: int, *, ignored: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, VOCAB, (2, length + 1), generator=g)
    ids, labels = tokens[:, :-1].clone(), tokens[:, 1:].clone()
    labels[0, :ignored] = -100
    return ids.to(DEVICE), labels.to(DEVICE)


def whole(model: MambaLM, ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    out = model.loss(ids, labels)
    (out.total / out.count).backward()
    return out.total.detach() / out.count, {n: p.grad.clone() for n, p in model.named_parameters()}


def chunked(model: MambaLM, ids: torch.Tensor, labels: torch.Tensor, chunk_len: int) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    out = backward_in_chunks(model, ids, labels, chunk_len)
    assert not out.total.requires_grad
    return out.total / out.count, {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_same(a: tuple[torch.Tensor, dict], b: tuple[torch.Tensor, dict], tol: float) -> None:
    assert a[0].item() == pytest.approx(b[0].item(), rel=tol)
    assert a[1].keys() == b[1].keys()
    for name, grad in a[1].items():
        err = ((grad - b[1][name]).norm() / b[1][name].norm().clamp_min(1e-30)).item()
        assert err < tol, f"{name}: relative error {err:.1e}"


@pytest.mark.parametrize("chunk_len", (1, 7, 16, 40, 64))
def test_chunks_give_the_whole_sequences_loss_and_gradients(chunk_len):
    """Chunks of one step, uneven chunks, one chunk longer than the sequence."""
    model = make_model()
    ids, labels = batch(40, ignored=5)
    assert_same(chunked(model, ids, labels, chunk_len), whole(model, ids, labels), 1e-9)


@pytest.mark.parametrize("options", (dict(mixer_recompute=True), dict(checkpoint_every=2)))
def test_with_the_memory_saving_options(options):
    model = make_model(**options)
    ids, labels = batch(30)
    assert_same(chunked(model, ids, labels, 8), whole(model, ids, labels), 1e-9)


def test_on_the_triton_kernels():
    """The kernels pass gradients through initial and final states (the conv's and the scan's)."""
    model = make_model(torch.float32)
    ids, labels = batch(37)
    with use_backend("triton"):
        got = chunked(model, ids, labels, 16)
        want = whole(model, ids, labels)
    assert_same(got, want, 1e-4)


def test_counts_and_correct_tokens_are_the_whole_sequences():
    model = make_model()
    ids, labels = batch(25, ignored=9)
    want = model.loss(ids, labels)
    got = backward_in_chunks(model, ids, labels, 10)
    assert got.count.item() == want.count.item() == 2 * 25 - 9
    assert got.correct.item() == want.correct.item()
    assert got.total.item() == pytest.approx(want.total.item(), rel=1e-9)


@pytest.mark.parametrize(
    "chunk_len, labels_shape, message",
    (
        (0, (2, 10), "chunk_len must be an integer >= 1, got 0"),
        (2.5, (2, 10), "chunk_len must be an integer >= 1, got 2.5"),
        (4, (2, 9), "labels (2, 9) must have the shape of input_ids (2, 10)"),
    ),
)
def test_bad_arguments_are_refused_clearly(chunk_len, labels_shape, message):
    model = make_model()
    ids = torch.zeros(2, 10, dtype=torch.int64, device=DEVICE)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        backward_in_chunks(model, ids, torch.zeros(labels_shape, dtype=torch.int64, device=DEVICE), chunk_len)


def test_a_batch_with_nothing_scored_gives_zero_gradients():
    model = make_model()
    ids, labels = batch(9)
    out = backward_in_chunks(model, ids, torch.full_like(labels, -100), 4)
    assert out.count.item() == 0 and out.total.item() == 0
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.equal(g, torch.zeros_like(g)) for g in grads)


def test_labels_out_of_range_are_refused_before_any_work():
    model = make_model()
    ids, labels = batch(10)
    labels[1, 3] = VOCAB + 100
    with pytest.raises(ValueError, match="backward_in_chunks"):
        backward_in_chunks(model, ids, labels, 4)
    assert all(p.grad is None for p in model.parameters())


def test_forward_with_states_checks_the_number_of_states():
    model = make_model()
    ids, _ = batch(6)
    _, states = model.backbone.forward_with_states(ids)
    with pytest.raises(ValueError, match="got 2 states for 3 layers"):
        model.backbone.forward_with_states(ids, states[:2])
