"""``trainer.cuda_graph``: the training step's forward and backward replayed from CUDA
graphs (seqmamba.train.graphed_task_step). On the CPU the capture is a stand-in that
returns the step unchanged, which checks the wiring (what is captured, eager batches of
other shapes, outputs that outlive a replay, the refusals); the real capture runs on CUDA."""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import pytest
import torch
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator

import seqmamba.train.module as module_mod
import seqmamba.train.run as run_mod
from seqmamba.config import ConfigError, TrainerConfig, load_config
from seqmamba.models import ModelConfig
from seqmamba.tasks import StepOutput, register_task
from seqmamba.train import train
from seqmamba.train.checkpoint import load_checkpoint_weights
from seqmamba.train.graphed_task_step import GraphedTaskStep
from token_data import IndexedSequences, TokenTask, TokenTaskConfig, write_config


@dataclass
class GraphedConfig(TokenTaskConfig):
    name: str = "test_graphed"
    train_size: int = 22


@register_task
class GraphedTask(TokenTask):
    """Next-token prediction; counts the Python runs of its step (a replay runs none)."""

    name = "test_graphed"
    config_class = GraphedConfig
    python_steps: ClassVar[int] = 0

    def step(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        if model.training:
            GraphedTask.python_steps += 1
        return super().step(model, batch)


def run(tmp: Path, name: str, *overrides: str, accelerator: str = "cpu", precision: str = "32-true"):
    path = write_config(tmp, name, "test_graphed", model="{d_model: 16, n_layer: 2, d_state: 4}", max_steps=7,
                        val_every_n_steps=7, log_every_n_steps=1, accelerator=accelerator, precision=precision)
    GraphedTask.python_steps = 0
    return train(load_config(path, list(overrides)))


class StandInCapture:
    """make_graphed_callables' interface: returns the module itself, records the calls."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[tuple[tuple[int, ...], ...]] = []
        self.fail = fail

    def __call__(self, module, sample, *, allow_unused_input):
        assert allow_unused_input and all(isinstance(x, torch.Tensor) for x in sample)
        if self.fail is not None:
            raise RuntimeError(self.fail)
        self.calls.append(tuple(tuple(x.shape) for x in sample))
        return module


def weights(result) -> dict[str, torch.Tensor]:
    return load_checkpoint_weights(result.last_checkpoint)


@pytest.mark.parametrize("accumulate", (1, 2))
def test_graphed_training_reaches_the_same_weights_as_eager(tmp_path, monkeypatch, accumulate):
    capture = StandInCapture()
    monkeypatch.setattr(module_mod, "GraphedTaskStep", functools.partial(GraphedTaskStep, make_graphed=capture))
    monkeypatch.setattr(run_mod, "_check_cuda_graph", lambda trainer, tc: None)
    zeroing = []
    zero_grad = torch.optim.Optimizer.zero_grad
    monkeypatch.setattr(torch.optim.Optimizer, "zero_grad",
                        lambda self, set_to_none=True: zeroing.append(set_to_none) or zero_grad(self, set_to_none))
    eager = run(tmp_path, "eager", f"trainer.accumulate_grad_batches={accumulate}")
    assert zeroing and all(zeroing)
    zeroing.clear()
    graphed = run(tmp_path, "graphed", "trainer.cuda_graph=true", f"trainer.accumulate_grad_batches={accumulate}")
    # Accumulating graphed batches keep their gradient buffers (see GraphedTaskStep).
    assert zeroing and all(set_to_none == (accumulate == 1) for set_to_none in zeroing)
    # Captured once, for the batches of 4 (index, input_ids, labels): the training stream
    # wraps around the epoch, so every batch is full.
    assert capture.calls == [((4,), (4, 13), (4, 13))]
    a, b = weights(eager), weights(graphed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def task_and_model() -> tuple[GraphedTask, torch.nn.Module]:
    task = GraphedTask(GraphedConfig())
    return task, task.build_model(ModelConfig(d_model=16, n_layer=2, d_state=4))


def token_batch(size: int = 4) -> dict[str, torch.Tensor]:
    """input_ids and labels of ``size`` sequences of 13 tokens."""
    data = IndexedSequences(size, seq_len=13, vocab=11, seed=3)
    return {k: torch.stack([data[i][k] for i in range(size)]) for k in ("input_ids", "labels")}


def test_batches_of_other_shapes_run_eagerly_with_one_warning():
    task, model = task_and_model()
    capture = StandInCapture()
    step = GraphedTaskStep(task, model, autocast_dtype=None, make_graphed=capture)
    out = step(token_batch(4))
    assert set(out.metrics) == {"loss", "accuracy"} and out.loss.requires_grad
    with pytest.warns(UserWarning, match=r"a batch of shapes input_ids \[3, 13\] int64, labels \[3, 13\] int64 "
                                         r"differs from the captured input_ids \[4, 13\] int64"):
        short = step(token_batch(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step(token_batch(3))  # warned once per shape
    assert len(capture.calls) == 1
    expected = task.step(model, token_batch(3))
    assert torch.equal(short.loss, expected.loss)


def test_accumulating_steps_give_every_parameter_its_own_gradient_at_capture():
    task, model = task_and_model()
    batch = token_batch()
    GraphedTaskStep(task, model, autocast_dtype=None, make_graphed=StandInCapture())(batch)
    assert all(p.grad is None for p in model.parameters())
    GraphedTaskStep(task, model, autocast_dtype=None, accumulate=True, make_graphed=StandInCapture())(batch)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters() if p.requires_grad)


def test_outputs_outlive_the_next_replay():
    """A replay overwrites the graph's outputs: the step hands out copies."""
    task, model = task_and_model()
    produced = []

    def capture(module, sample, *, allow_unused_input):
        def replay(*tensors):
            loss, metrics = module(*tensors)
            produced.append(loss)
            return loss, metrics
        return replay

    step = GraphedTaskStep(task, model, autocast_dtype=None, make_graphed=capture)
    out = step(token_batch())
    assert out.loss is not produced[0] and torch.equal(out.loss, produced[0])
    out.loss.backward()  # the copy still reaches the parameters
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_a_failed_capture_names_the_option():
    task, model = task_and_model()
    step = GraphedTaskStep(task, model, autocast_dtype=None,
                           make_graphed=StandInCapture(fail="operation not permitted when stream is capturing"))
    with pytest.raises(RuntimeError, match=r"trainer.cuda_graph: capturing task 'test_graphed''s training step failed "
                                           r"\(operation not permitted when stream is capturing\).*trainer.cuda_graph=false"):
        step(token_batch())


def test_batches_must_hold_tensors_only():
    task, model = task_and_model()
    step = GraphedTaskStep(task, model, autocast_dtype=None, make_graphed=StandInCapture())
    with pytest.raises(ValueError, match=r"trainer.cuda_graph: batch\['names'\] is a list, and a captured step "
                                         r"takes tensors only"):
        step({"input_ids": torch.zeros(2, 3, dtype=torch.long), "names": ["a", "b"]})


def test_cuda_graph_refuses_a_cpu_run(tmp_path):
    with pytest.raises(ConfigError, match=r"trainer.cuda_graph: CUDA graphs need a CUDA device, and this run's "
                                          r"accelerator is cpu \(trainer.accelerator=cpu\)"):
        run(tmp_path, "cpu", "trainer.cuda_graph=true")
    assert GraphedTask.python_steps == 0


def test_cuda_graph_refuses_several_processes():
    cuda = SimpleNamespace(accelerator=CUDAAccelerator(), world_size=1)
    run_mod._check_cuda_graph(cuda, TrainerConfig(cuda_graph=True))
    run_mod._check_cuda_graph(cuda, TrainerConfig(cuda_graph=True, accumulate_grad_batches=4))
    with pytest.raises(ConfigError, match=r"this run has 2 processes \(trainer.devices=2\); set trainer.devices=1"):
        run_mod._check_cuda_graph(SimpleNamespace(accelerator=CUDAAccelerator(), world_size=2),
                                  TrainerConfig(cuda_graph=True, devices="2"))
    with pytest.raises(ConfigError, match="accelerator is cpu"):
        run_mod._check_cuda_graph(SimpleNamespace(accelerator=CPUAccelerator(), world_size=1),
                                  TrainerConfig(cuda_graph=True, accelerator="cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision,accumulate", (("32-true", 1), ("bf16-mixed", 1), ("32-true", 2)))
def test_cuda_graphed_training_matches_eager(tmp_path, precision, accumulate):
    """Captured for real: after the capture the step's Python code no longer runs; the
    weights agree with the eager run's (the scan's dB and dC are summed with atomics, so
    not to the bit), also when two batches accumulate into each optimizer step (where a
    gradient handed over as the replay's own buffer would be overwritten by the next)."""
    options = (f"trainer.accumulate_grad_batches={accumulate}",)
    eager = run(tmp_path, "eager", *options, accelerator="gpu", precision=precision)
    eager_steps = GraphedTask.python_steps
    graphed = run(tmp_path, "graphed", "trainer.cuda_graph=true", *options, accelerator="gpu", precision=precision)
    # make_graphed_callables runs the step's Python code in 3 warm-up passes and the
    # capture, then replays.
    assert eager_steps == 7 * accumulate and GraphedTask.python_steps == 3 + 1
    a, b = weights(eager), weights(graphed)
    tol = 1e-4 if precision == "32-true" else 2e-2
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), rtol=tol, atol=tol), name
