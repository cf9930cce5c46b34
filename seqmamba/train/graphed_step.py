"""A whole training step (forward, loss, backward, optimizer step) captured in one CUDA graph.

In eager mode the host launches every kernel of a step from Python: for the 130M model
about 1,500 launches, and on a slow host their queueing takes longer than the kernels
run, so the GPU waits. A replayed graph launches them all in one call.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


class CudaGraphStep:
    """Captures ``loss_fn(*inputs)``, its backward and ``optimizer.step()`` once for inputs
    of the example's shapes and dtypes; each call copies new inputs into the captured
    buffers and replays.

        step = CudaGraphStep(loss_fn, optimizer, (ids, labels))
        for ids, labels in batches:
            loss = step(ids, labels)   # the step's loss, a tensor overwritten by the next call

    ``loss_fn`` must return a scalar tensor and must not wait on the GPU (no ``.item()``,
    no branching on tensor values: e.g. ``MambaLM.loss(..., check_labels=False)``, with
    the labels checked before they are passed in); under autocast it must pass
    ``cache_enabled=False`` (cached weight casts do not survive a capture). The
    gradients are those of the step; nothing accumulates across calls.

    The optimizer must be ``torch.optim.Adam`` or ``AdamW`` with ``capturable=True``.
    Capturing needs every kernel compiled and the optimizer's state allocated first, so
    ``warmup`` steps run on the example inputs; afterwards the parameters are restored
    and the optimizer state zeroed (as a fresh optimizer's), so the warm-up leaves no trace.
    """

    def __init__(
        self,
        loss_fn: Callable[..., Tensor],
        optimizer: torch.optim.Optimizer,
        example: Sequence[Tensor],
        *,
        warmup: int = 2,
    ) -> None:
        if not torch.cuda.is_available():
            raise RuntimeError("CudaGraphStep: CUDA graphs need a CUDA device; train eagerly on this machine")
        if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
            raise ValueError(f"CudaGraphStep: optimizer must be torch.optim.Adam or AdamW, got {type(optimizer).__name__}")
        if not all(group.get("capturable", False) for group in optimizer.param_groups):
            raise ValueError(f"CudaGraphStep: create the {type(optimizer).__name__} with capturable=True")
        for i, x in enumerate(example):
            if not isinstance(x, Tensor) or not x.is_cuda:
                raise ValueError(f"CudaGraphStep: example input {i} must be a CUDA tensor, got {_describe(x)}")
        if not isinstance(warmup, int) or warmup < 1:
            raise ValueError(f"CudaGraphStep: warmup must be an integer >= 1, got {warmup!r}")
        self._inputs = [x.detach().clone() for x in example]
        self._optimizer = optimizer
        params = [p for group in optimizer.param_groups for p in group["params"]]
        initial = [p.detach().clone() for p in params]

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self._eager_step(loss_fn)
        torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():
            for p, p0 in zip(params, initial, strict=True):
                p.copy_(p0)
            for state in optimizer.state.values():
                for value in state.values():
                    if isinstance(value, Tensor):
                        value.zero_()
        del initial

        optimizer.zero_grad(set_to_none=True)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._loss = self._eager_step(loss_fn, zero_grad=False)

    def _eager_step(self, loss_fn: Callable[..., Tensor], *, zero_grad: bool = True) -> Tensor:
        if zero_grad:
            self._optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(*self._inputs)
        if not isinstance(loss, Tensor) or loss.dim() != 0:
            raise ValueError(f"CudaGraphStep: loss_fn must return a scalar tensor, got {_describe(loss)}")
        loss.backward()
        self._optimizer.step()
        return loss.detach()

    def __call__(self, *inputs: Tensor) -> Tensor:
        """Runs one step on ``inputs`` (the example's shapes and dtypes); returns its loss."""
        if len(inputs) != len(self._inputs):
            raise ValueError(f"CudaGraphStep: expected {len(self._inputs)} inputs, got {len(inputs)}")
        for i, (buffer, x) in enumerate(zip(self._inputs, inputs)):
            if not isinstance(x, Tensor) or x.shape != buffer.shape or x.dtype != buffer.dtype:
                raise ValueError(
                    f"CudaGraphStep: input {i} must be a tensor of shape {tuple(buffer.shape)} and dtype "
                    f"{buffer.dtype} (as captured), got {_describe(x)}"
                )
            buffer.copy_(x)
        self._graph.replay()
        return self._loss


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"a tensor of shape {tuple(x.shape)}, dtype {x.dtype} on {x.device}"
    return type(x).__name__
