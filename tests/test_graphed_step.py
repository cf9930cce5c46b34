"""seqmamba.train.graphed_step.CudaGraphStep: a replayed step trains as the eager step does;
bad setups are refused clearly. Capturing needs a GPU; the refusals are checked anywhere."""
from __future__ import annotations

import pytest
import torch

from seqmamba.models import MambaLM, ModelConfig
from seqmamba.train.graphed_step import CudaGraphStep

ON_GPU = torch.cuda.is_available()
gpu_only = pytest.mark.skipif(not ON_GPU, reason="CUDA graphs need a CUDA device")
VOCAB = 40


def make_model() -> MambaLM:
    torch.manual_seed(0)
    return MambaLM(ModelConfig(d_model=32, n_layer=2, vocab_size=VOCAB)).cuda()


def batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    out = []
    for _ in range(n):
        tokens = torch.randint(0, VOCAB, (2, 97), generator=g).cuda()
        out.append((tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()))
    return out


def mean_loss(model: MambaLM):
    def loss(ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = model.loss(ids, labels, check_labels=False)
        return out.total / out.count

    return loss


@gpu_only
def test_replayed_steps_train_as_eager_steps():
    eager_model, graph_model = make_model(), make_model()
    eager_opt = torch.optim.AdamW(eager_model.parameters(), lr=1e-3, fused=True, capturable=True)
    graph_opt = torch.optim.AdamW(graph_model.parameters(), lr=1e-3, fused=True, capturable=True)
    data = batches(4)
    step = CudaGraphStep(mean_loss(graph_model), graph_opt, data[0], warmup=2)
    # The warm-up left no trace: the parameters are still the initial ones.
    for p, q in zip(graph_model.parameters(), eager_model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    eager_losses, graph_losses = [], []
    for ids, labels in data:
        eager_opt.zero_grad(set_to_none=True)
        loss = mean_loss(eager_model)(ids, labels)
        loss.backward()
        eager_opt.step()
        eager_losses.append(loss.item())
        graph_losses.append(step(ids, labels).item())
    assert graph_losses == pytest.approx(eager_losses, rel=1e-5)
    assert graph_losses[-1] < graph_losses[0]  # it trains
    for p, q in zip(graph_model.parameters(), eager_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


@gpu_only
def test_inputs_of_other_shapes_are_refused():
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), fused=True, capturable=True)
    ids, labels = batches(1)[0]
    step = CudaGraphStep(mean_loss(model), opt, (ids, labels), warmup=1)
    with pytest.raises(ValueError, match=r"input 0 must be a tensor of shape \(2, 96\) and dtype torch.int64"):
        step(ids[:, :50], labels[:, :50])
    with pytest.raises(ValueError, match="expected 2 inputs, got 1"):
        step(ids)


@gpu_only
@pytest.mark.parametrize(
    "make_opt, message",
    (
        (lambda p: torch.optim.SGD(p, lr=0.1), "optimizer must be torch.optim.Adam or AdamW, got SGD"),
        (lambda p: torch.optim.AdamW(p), "create the AdamW with capturable=True"),
    ),
)
def test_optimizers_that_cannot_be_captured_are_refused(make_opt, message):
    model = make_model()
    with pytest.raises(ValueError, match=message):
        CudaGraphStep(mean_loss(model), make_opt(model.parameters()), batches(1)[0])


@pytest.mark.skipif(ON_GPU, reason="checks the refusal on a machine without CUDA")
def test_without_cuda_the_step_is_refused_clearly():
    model = MambaLM(ModelConfig(d_model=16, n_layer=1, vocab_size=VOCAB))
    opt = torch.optim.AdamW(model.parameters())
    ids = torch.zeros(1, 8, dtype=torch.int64)
    with pytest.raises(RuntimeError, match="CUDA graphs need a CUDA device"):
        CudaGraphStep(mean_loss(model), opt, (ids, ids))


def test_loss_without_the_label_check_gives_the_same_loss():
    torch.manual_seed(0)
    model = MambaLM(ModelConfig(d_model=16, n_layer=1, vocab_size=VOCAB))
    ids = torch.randint(0, VOCAB, (2, 9))
    checked = model.loss(ids, ids)
    unchecked = model.loss(ids, ids, check_labels=False)
    assert unchecked.total.item() == checked.total.item()
    with pytest.raises(ValueError, match="MambaLM.loss"):
        model.loss(ids, ids + VOCAB + 10)
