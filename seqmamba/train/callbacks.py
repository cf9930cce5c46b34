"""Trainer callbacks for step-based training on an endless data stream."""
from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar


class ValidateAtEnd(L.Callback):
    """Runs a last validation (and so a last checkpoint) at ``max_steps`` when it is
    not a multiple of the validation interval.

    An endless training stream has no epoch end, so Lightning would otherwise finish
    without validating the final weights. Asking the trainer to stop makes its epoch
    loop validate once more before it ends.
    """

    def __init__(self, val_every_n_steps: int) -> None:
        self.val_every_n_steps = val_every_n_steps

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        step = trainer.global_step
        if step >= trainer.max_steps and step % self.val_every_n_steps != 0:
            trainer.should_stop = True


class StepProgressBar(TQDMProgressBar):
    """A progress bar over optimizer steps (``global_step / max_steps``), which an
    endless stream cannot give per epoch, without Lightning's ``v_num`` field."""

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps)
        bar.initial = 0
        bar.n = trainer.global_step
        bar.set_description("train")
        bar.refresh()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if self._should_update(step, trainer.max_steps):
            self.train_progress_bar.n = step
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))
            self.train_progress_bar.refresh()

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


class Throughput(L.Callback):
    """Training tokens per second, over the steps' wall time only.

    The clock runs from the end of one training batch to the end of the next, so it
    covers data loading, forward, backward and the optimizer step; it stops at each
    validation (and the checkpoint after it) and at the end of training, and restarts
    one batch later, so validation, checkpointing and the first step (compilation,
    autotuning) are left out. On CUDA the device is synchronised where the clock stops.

    Args:
        tokens_per_batch: tokens in one micro-batch of all processes together.
    """

    def __init__(self, tokens_per_batch: int) -> None:
        self.tokens_per_batch = tokens_per_batch
        self.seconds = 0.0
        self.batches = 0
        self._start: float | None = None
        self._pending = 0

    @property
    def tokens_per_second(self) -> float:
        """Measured tokens/s (0.0 before two batches ran back to back)."""
        return self.batches * self.tokens_per_batch / self.seconds if self.seconds > 0 else 0.0

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self._start is None:
            self._start = self._now(trainer)
            self._pending = 0
        else:
            self._pending += 1

    def on_validation_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._stop(trainer)

    def on_train_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._stop(trainer)

    def _stop(self, trainer: L.Trainer) -> None:
        if self._start is not None and self._pending:
            self.seconds += self._now(trainer) - self._start
            self.batches += self._pending
        self._start = None
        self._pending = 0

    @staticmethod
    def _now(trainer: L.Trainer) -> float:
        device = trainer.strategy.root_device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()
