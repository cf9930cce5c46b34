"""AdamW with a decayed and a non-decayed parameter group, and the learning rate schedule.

Weight decay applies to the weight matrices of linear and embedding layers. Norm
gains, biases and each Mamba mixer's ``A_log`` and ``D`` are never decayed (as in the
Mamba paper's training recipe): decay would pull A_log and D towards zero, which
changes what the SSM computes rather than regularising it.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from seqmamba.config import OptimizerConfig, ScheduleConfig
from seqmamba.models import no_weight_decay_param_names


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: ``{"params": decayed, "weight_decay": weight_decay}`` and
    ``{"params": others, "weight_decay": 0.0}``; each group also lists its
    ``param_names``. Tied parameters appear once.

    Not decayed: :func:`no_weight_decay_param_names`, any parameter marked with a
    true ``_no_weight_decay`` attribute, and any parameter with fewer than 2 dims
    (a bias or gain a task head may add).
    """
    exempt = no_weight_decay_param_names(model)
    decay: list[tuple[str, nn.Parameter]] = []
    no_decay: list[tuple[str, nn.Parameter]] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name in exempt or getattr(param, "_no_weight_decay", False) or param.ndim < 2:
            no_decay.append((name, param))
        else:
            decay.append((name, param))
    return [
        {"params": [p for _, p in decay], "param_names": [n for n, _ in decay], "weight_decay": weight_decay},
        {"params": [p for _, p in no_decay], "param_names": [n for n, _ in no_decay], "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module | list[dict], cfg: OptimizerConfig) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` of ``model``, or over groups computed earlier.

    Pass groups computed before the model was wrapped for sharded training (FSDP): a
    sharded parameter is a flat 1-D view, so its shape no longer tells a weight matrix
    from a gain, but it is the same Parameter object.
    """
    groups = param_groups(model, cfg.weight_decay) if isinstance(model, nn.Module) else model
    groups = [group for group in groups if group["params"]]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.betas[0], cfg.betas[1]), eps=cfg.eps)


class LRSchedule:
    """Learning rate after ``step`` optimizer steps: linear warmup then cosine or constant.

    Warmup: ``lr * (step + 1) / (warmup_steps + 1)`` for ``step < warmup_steps`` (the
    very first update is already non-zero). Cosine: from ``lr`` at ``warmup_steps`` to
    ``min_lr`` at ``decay_steps``, then ``min_lr``. Constant: ``lr`` after warmup.
    """

    def __init__(self, cfg: ScheduleConfig, *, lr: float, max_steps: int) -> None:
        self.name = cfg.name
        self.lr = lr
        self.min_lr = cfg.min_lr
        self.warmup_steps = cfg.warmup_steps
        self.decay_steps = cfg.decay_steps if cfg.decay_steps is not None else max_steps

    def lr_at(self, step: int) -> float:
        """The learning rate used by the update after ``step`` completed updates."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / (self.warmup_steps + 1)
        if self.name == "constant":
            return self.lr
        span = max(1, self.decay_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def __call__(self, step: int) -> float:
        """LambdaLR's multiplier of the base learning rate."""
        return self.lr_at(step) / self.lr


class StepLambdaLR(torch.optim.lr_scheduler.LambdaLR):
    """A LambdaLR whose checkpoint restores only the step count.

    On resume the schedule (peak lr, warmup, decay length) follows the config of the
    resumed run, not the one saved in the checkpoint, so a run can be extended with a
    larger ``trainer.max_steps``. With an unchanged config this is exactly LambdaLR.
    """

    def load_state_dict(self, state_dict: dict) -> None:
        self.last_epoch = state_dict["last_epoch"]
        self._step_count = state_dict["_step_count"]
        lrs = [base * fn(self.last_epoch) for base, fn in zip(self.base_lrs, self.lr_lambdas)]
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = lrs


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, *, lr: float, max_steps: int
) -> StepLambdaLR:
    """A LambdaLR stepped once per optimizer step following :class:`LRSchedule`."""
    return StepLambdaLR(optimizer, LRSchedule(cfg, lr=lr, max_steps=max_steps))
