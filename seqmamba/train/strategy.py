"""Lightning's accelerator and strategy for a run, and how many processes it trains on.

``trainer.strategy`` takes Lightning's names. Two are the project's multi-device paths:

* ``ddp``: every process holds the whole model and optimizer; gradients are averaged.
* ``fsdp``: the model, its gradients and optimizer state are sharded over the processes
  (PyTorch FSDP through Lightning). Each Mamba block is its own FSDP unit, so only one
  block's parameters are gathered at a time; the embedding, final norm and LM head form
  the root unit (a tied embedding and head stay in one unit). Checkpoints are written
  as one full state dict by rank 0, so a run written by N processes resumes on M and
  ``evaluate``/``generate``/``embed`` read it like any other checkpoint.

With either, each process reads its own slice of every global batch
(:mod:`seqmamba.train.data`): ``task.batch_size`` is per process, and the global batch
is ``task.batch_size * processes * trainer.accumulate_grad_batches``.
"""
from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.strategies import FSDPStrategy, Strategy

from seqmamba.config import ConfigError, TrainerConfig
from seqmamba.models import Block

def accelerator_and_strategy(tc: TrainerConfig) -> tuple[str, str | Strategy]:
    """Lightning's ``accelerator`` and ``strategy`` arguments for ``tc``.

    ``fsdp`` becomes an FSDPStrategy that wraps each :class:`Block`; it needs CUDA
    (PyTorch's FSDP refuses CPU tensors), which is checked here so that the user sees
    one line instead of an error from inside the first forward.
    """
    if tc.strategy != "fsdp":
        return tc.accelerator, tc.strategy
    if tc.accelerator == "cpu" or (tc.accelerator in ("auto", "gpu", "cuda") and not torch.cuda.is_available()):
        raise ConfigError(
            "trainer.strategy: fsdp shards the model over GPUs and cannot run on the CPU (PyTorch's FSDP needs "
            "CUDA devices); use trainer.strategy=ddp to train on several CPU processes"
        )
    strategy = FSDPStrategy(
        auto_wrap_policy={Block},
        sharding_strategy=tc.fsdp.sharding_strategy,  # type: ignore[arg-type]
        # One file that any number of processes (or none) can read back.
        state_dict_type="full",
    )
    # Lightning accepts an FSDP strategy object only with an explicit GPU accelerator.
    return "gpu", strategy


def is_fsdp(strategy: Any) -> bool:
    """Whether a trainer's strategy shards the model (its module's parameters are then
    shards, and the full weights exist only in a checkpoint)."""
    return isinstance(strategy, FSDPStrategy)


def planned_world_size(tc: TrainerConfig) -> int:
    """How many processes ``tc`` will train on (one node), before a Trainer exists.

    ``devices`` is a count, a list of ids (``0,1``) or ``auto``: every GPU when the
    run uses CUDA, else one process (Lightning's choice for the CPU).
    """
    text = tc.devices.strip()
    if text.lstrip("-").isdigit():
        count = int(text)
        if count == -1:
            return _auto_devices(tc)
        return count
    if text == "auto":
        return _auto_devices(tc)
    return len([part for part in text.split(",") if part.strip()])


def _auto_devices(tc: TrainerConfig) -> int:
    uses_cuda = tc.accelerator in ("gpu", "cuda") or (tc.accelerator == "auto" and torch.cuda.is_available())
    return max(1, torch.cuda.device_count()) if uses_cuda else 1
