"""A task's training step (forward and backward) replayed from CUDA graphs.

An eager training step of a Mamba LM launches each of its ~1,500 kernels from Python;
on a GPU that runs them faster than the host queues them, the GPU waits. Captured once
with :func:`torch.cuda.make_graphed_callables`, the step's forward becomes one graph
launch and its backward another, inside Lightning's usual loop: gradient clipping, the
optimizer and the learning-rate schedule stay eager (a handful of multi-tensor kernels).
``seqmamba train`` uses it with ``trainer.cuda_graph=true``
(:class:`~seqmamba.train.module.SequenceModule`).
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from seqmamba.tasks import Metric, StepOutput, Task

Batch = dict[str, torch.Tensor]
BatchKey = tuple[tuple[str, tuple[int, ...], torch.dtype], ...]


class _StepModule(nn.Module):
    """``task.step(model, batch)`` as a module of the batch's tensors (in ``keys``
    order) returning only tensors: ``(loss, {metric: (total, count)})``. The metrics
    are detached: only the loss is differentiated."""

    def __init__(self, task: Task, model: nn.Module, keys: tuple[str, ...]) -> None:
        super().__init__()
        self.task = task
        self.model = model
        self.keys = keys

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        out = self.task.step(self.model, dict(zip(self.keys, tensors, strict=True)))
        metrics = {name: (m.total.detach(), m.count.detach()) for name, m in out.metrics.items()}
        return out.loss, metrics


def batch_key(batch: Batch) -> BatchKey:
    """What a captured step is specific to: each entry's name, shape and dtype."""
    return tuple((name, tuple(x.shape), x.dtype) for name, x in batch.items())


class GraphedTaskStep:
    """Runs ``task.step(model, batch)`` for training from CUDA graphs.

    The first call captures the step for that batch's shapes and dtypes (after a few
    warm-up passes that leave no gradients); later calls with the same shapes replay it,
    and autograd's backward replays the captured backward. A batch of other shapes (a
    last, shorter batch) runs eagerly, with a warning the first time.

    Args:
        task, model: as for ``task.step``; the model must not gain or lose parameters.
        autocast_dtype: the dtype of the run's autocast (bf16-mixed: torch.bfloat16), or
            None without autocast. The capture runs under autocast with its weight cache
            off, which a captured graph needs.
        accumulate: gradients add up over several batches (see below).
        make_graphed: :func:`torch.cuda.make_graphed_callables`, or a stand-in in tests.

    The step must not wait on the GPU (no ``.item()``, no shapes that depend on values):
    a capture fails otherwise, with an error saying so.

    Gradients come back in buffers that the next replay overwrites. Autograd hands such a
    buffer to a parameter whose ``.grad`` is None as the gradient itself, which is right
    when each batch is a whole optimizer step. With ``accumulate=True`` (several batches
    per optimizer step) every trainable parameter gets its own ``.grad`` at capture, and
    the optimizer's zero_grad must keep it (``set_to_none=False``): each replay's
    gradients are then added to it, as eager backward passes do.
    """

    def __init__(
        self,
        task: Task,
        model: nn.Module,
        *,
        autocast_dtype: torch.dtype | None,
        accumulate: bool = False,
        make_graphed: Callable[..., Any] = torch.cuda.make_graphed_callables,
    ) -> None:
        self.task = task
        self.model = model
        self.autocast_dtype = autocast_dtype
        self.accumulate = accumulate
        self._make_graphed = make_graphed
        self._graphed: Callable[..., Any] | None = None
        self._key: BatchKey | None = None
        self._warned: set[BatchKey] = set()

    def __call__(self, batch: Batch) -> StepOutput:
        for name, value in batch.items():
            if not isinstance(value, torch.Tensor):
                raise ValueError(
                    f"trainer.cuda_graph: batch[{name!r}] is a {type(value).__name__}, and a captured step takes "
                    f"tensors only; make the task's batches dicts of tensors or set trainer.cuda_graph=false"
                )
        key = batch_key(batch)
        if self._graphed is None:
            self._capture(batch, key)
        elif key != self._key:
            if key not in self._warned:
                self._warned.add(key)
                warnings.warn(
                    f"trainer.cuda_graph: a batch of shapes {_shapes(key)} differs from the captured "
                    f"{_shapes(self._key)}; such batches run eagerly", stacklevel=2,
                )
            return self.task.step(self.model, batch)
        loss, metrics = self._graphed(*batch.values())
        # The graph's outputs are overwritten by its next replay; the logged values must
        # stay those of this step.
        return StepOutput(
            loss=loss.clone(),
            metrics={name: Metric(total.clone(), count.clone()) for name, (total, count) in metrics.items()},
        )

    def _capture(self, batch: Batch, key: BatchKey) -> None:
        module = _StepModule(self.task, self.model, tuple(batch))
        sample = tuple(x.detach().clone() for x in batch.values())
        autocast = (torch.autocast("cuda", dtype=self.autocast_dtype, cache_enabled=False)
                    if self.autocast_dtype is not None else contextlib.nullcontext())
        try:
            with autocast:
                self._graphed = self._make_graphed(module, sample, allow_unused_input=True)
        except (RuntimeError, AssertionError) as exc:  # make_graphed_callables asserts its preconditions
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RuntimeError(
                f"trainer.cuda_graph: capturing task {self.task.name!r}'s training step failed ({first}); "
                "a captured step must not wait on the GPU (.item(), value-dependent shapes). "
                "Train with trainer.cuda_graph=false."
            ) from exc
        self._key = key
        if self.accumulate:
            for p in self.model.parameters():
                if p.requires_grad and p.grad is None:
                    p.grad = torch.zeros_like(p)


def _shapes(key: BatchKey | None) -> str:
    return ", ".join(f"{name} {list(shape)} {str(dtype).removeprefix('torch.')}" for name, shape, dtype in key or ())
