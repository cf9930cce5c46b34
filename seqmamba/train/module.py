"""The one LightningModule: any task's model, loss, metrics and optimizer."""
from __future__ import annotations

import contextlib
from typing import Any

import lightning as L
import torch

from seqmamba.config import build_config, to_experiment
from seqmamba.kernels.cross_entropy.op import labels_checked_on_host
from seqmamba.tasks import Metric, get_task

from .evaluation import autocast_dtype
from .graphed_task_step import GraphedTaskStep
from .optim import build_optimizer, build_scheduler, param_groups
from .strategy import is_fsdp

PLACEMENT_KEY = "seqmamba_data_placement"
"""Checkpoint entry recording how the training stream was split: ``world_size``,
``batch_size`` (per process) and ``accumulate_grad_batches``."""


class SequenceModule(L.LightningModule):
    """Wraps ``task.build_model(cfg.model)`` and trains it with ``task.step``.

    Logged metrics: ``train/loss`` and ``train/lr`` every step, ``train/<metric>``
    (each of the step's metrics, averaged over the batch; with several processes, the
    loss and metrics are the average over processes), and after each validation
    ``val/<metric>`` = sum of totals / sum of counts over all validation batches of all
    processes (exact, not an average of batch averages).

    Args:
        config: the resolved experiment config as plain dicts (``to_container``). It is
            saved as the checkpoint's hyper-parameters, so a checkpoint alone rebuilds
            this module (``SequenceModule.load_from_checkpoint(path)``).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.experiment = to_experiment(build_config(config, source="config"))
        self.task = get_task(self.experiment.task.name)(self.experiment.task)
        self.model = self.task.build_model(self.experiment.model)
        # Decided on the unwrapped model: under FSDP every parameter becomes a flat view.
        self._param_groups = param_groups(self.model, self.experiment.optimizer.weight_decay)
        self._val_sums: dict[str, list[torch.Tensor]] = {}
        self._batch_checked_on_host = False
        self._graphed_step: GraphedTaskStep | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Token ids are checked here, on the host, where reading them costs nothing; the
        # step then skips the loss's own check, which on the GPU would read the labels
        # back and keep the host from queueing ahead of the kernels (see
        # labels_checked_on_host). Batches already on a device keep the loss's check.
        self._batch_checked_on_host = isinstance(batch, dict) and all(
            v.device.type == "cpu" for v in batch.values() if isinstance(v, torch.Tensor)
        )
        if self._batch_checked_on_host:
            self.task.check_batch(batch)
        return batch

    def _step(self, batch: dict[str, torch.Tensor], *, graphed: bool = False) -> Any:
        checked = labels_checked_on_host() if self._batch_checked_on_host else contextlib.nullcontext()
        with checked:
            if graphed:
                return self._graphed_task_step()(batch)
            return self.task.step(self.model, batch)

    def _graphed_task_step(self) -> GraphedTaskStep:
        if self._graphed_step is None:
            self._graphed_step = GraphedTaskStep(
                self.task, self.model, autocast_dtype=autocast_dtype(self.trainer.precision),
                accumulate=self._graphed_grads_accumulate(),
            )
        return self._graphed_step

    def _graphed_grads_accumulate(self) -> bool:
        return self.experiment.trainer.cuda_graph and self.trainer.accumulate_grad_batches > 1

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: torch.optim.Optimizer) -> None:
        # Graphed batches accumulating into one step add their gradients to buffers of
        # the parameters' own, which must survive (see GraphedTaskStep).
        optimizer.zero_grad(set_to_none=not self._graphed_grads_accumulate())

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self._step(batch, graphed=self.experiment.trainer.cuda_graph)
        # Averaged over processes (as is each metric), so that a run on N devices logs
        # the loss of the same global batch as one device would (a no-op on one process).
        self.log("train/loss", out.loss.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=1,
                 sync_dist=True)
        for name, metric in out.metrics.items():
            if name != "loss":
                value = metric.total.detach().float() / metric.count.clamp(min=1)
                self.log(f"train/{name}", value, on_step=True, on_epoch=False, batch_size=1, sync_dist=True)
        # A host tensor: Lightning would turn a Python number into a GPU tensor, a copy
        # from host memory that waits for the kernels queued before it.
        lr = torch.tensor(float(self.trainer.optimizers[0].param_groups[0]["lr"]))
        self.log("train/lr", lr, on_step=True, on_epoch=False, batch_size=1)
        return out.loss

    def on_validation_epoch_start(self) -> None:
        self._val_sums = {}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self._step(batch)
        metrics = dict(out.metrics)
        if "loss" not in metrics:  # a task without a per-item loss: average the batch losses
            metrics["loss"] = Metric(out.loss.detach(), torch.ones((), device=out.loss.device))
        for name, metric in metrics.items():
            sums = self._val_sums.setdefault(name, [torch.zeros((), dtype=torch.float64, device=self.device)] * 2)
            sums[0] = sums[0] + metric.total.detach().to(torch.float64)
            sums[1] = sums[1] + metric.count.detach().to(torch.float64)

    def on_validation_epoch_end(self) -> None:
        values = {}
        for name in sorted(self._val_sums):
            total, count = self._val_sums[name]
            # Exact over processes: sum the totals and the counts, then divide.
            total = self.trainer.strategy.reduce(total, reduce_op="sum")
            count = self.trainer.strategy.reduce(count, reduce_op="sum")
            values[f"val/{name}"] = (total / count.clamp(min=1)).float()
        # The values are equal on every process already; sync_dist only keeps Lightning
        # from asking for it.
        self.log_dict(values, prog_bar=True, sync_dist=True)

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        strategy = self.trainer.strategy
        if gradient_clip_val and is_fsdp(strategy):
            # The norm of sharded gradients needs every shard: FSDP's root module computes
            # it (Lightning's own clipping refuses FSDP).
            strategy.model.clip_grad_norm_(gradient_clip_val)
            return
        self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Where the data stream stands depends on the global batch; a resume checks it.
        checkpoint[PLACEMENT_KEY] = {
            "world_size": self.trainer.world_size,
            "batch_size": self.experiment.task.batch_size,
            "accumulate_grad_batches": self.trainer.accumulate_grad_batches,
        }

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self._param_groups, self.experiment.optimizer)
        scheduler = build_scheduler(
            optimizer, self.experiment.schedule, lr=self.experiment.optimizer.lr,
            max_steps=self.experiment.trainer.max_steps,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}
