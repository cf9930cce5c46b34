"""The typed schema of an experiment: what a YAML config may say, with defaults.

A config file has six top-level sections::

    name: induction_heads          # run name: outputs go to <trainer.output_dir>/<name>/
    model: {d_model: 64, n_layer: 2}          # ModelConfig (vocab_size is set by the task)
    task: {name: induction_heads, ...}        # the task's own TaskConfig subclass
    optimizer: {lr: 1.0e-3, weight_decay: 0.1}
    schedule: {name: cosine, warmup_steps: 100, min_lr: 1.0e-5}
    trainer: {max_steps: 1000, precision: 32-true, ...}

The ``task`` section's fields depend on ``task.name``: the loader looks the task up
and uses its ``config_class`` (see :mod:`seqmamba.config.loader`).
"""
# No ``from __future__ import annotations``: OmegaConf reads these annotations at runtime.
from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import MISSING

from seqmamba.models import ModelConfig
from seqmamba.tasks import TaskConfig

SCHEDULES = ("cosine", "constant")
"""Allowed values of ``schedule.name``."""

PRECISIONS = ("32-true", "64-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true")
"""Allowed values of ``trainer.precision`` (Lightning's names)."""

FSDP_SHARDING = ("FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD")
"""Allowed values of ``trainer.fsdp.sharding_strategy`` (PyTorch FSDP's names)."""


@dataclass
class OptimizerConfig:
    """AdamW. Weight decay applies to the weight matrices of linear and embedding
    layers only; norms, biases and each mixer's A_log and D are never decayed.

    Attributes:
        lr: peak learning rate (reached at the end of the warmup).
        betas: AdamW's (beta1, beta2).
        eps: AdamW's epsilon.
        weight_decay: decoupled weight decay of the decayed group.
    """

    lr: float = 1e-3
    betas: List[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1


@dataclass
class ScheduleConfig:
    """Learning rate per optimizer step: a linear warmup to ``optimizer.lr``, then
    ``cosine`` decay to ``min_lr`` or ``constant``.

    Attributes:
        name: ``cosine`` or ``constant``.
        warmup_steps: optimizer steps of linear warmup (0 for none).
        min_lr: learning rate at the end of the cosine decay.
        decay_steps: step at which the cosine reaches ``min_lr`` (it stays there
            after); ``null`` means ``trainer.max_steps``.
    """

    name: str = "cosine"
    warmup_steps: int = 0
    min_lr: float = 0.0
    decay_steps: Optional[int] = None


@dataclass
class FSDPConfig:
    """Options of ``trainer.strategy: fsdp``.

    Attributes:
        sharding_strategy: PyTorch FSDP's ``FULL_SHARD`` (parameters, gradients and
            optimizer state sharded), ``SHARD_GRAD_OP`` (parameters kept whole between
            forward and backward), ``NO_SHARD`` (like DDP) or ``HYBRID_SHARD``.
    """

    sharding_strategy: str = "FULL_SHARD"


@dataclass
class TrainerConfig:
    """How to train: length, precision, devices, logging, checkpoints.

    Attributes:
        max_steps: optimizer steps to train for.
        precision: Lightning precision, e.g. ``32-true``, ``bf16-mixed``.
        grad_clip: clip the global gradient norm to this (0 disables clipping).
        accumulate_grad_batches: micro-batches per optimizer step.
        devices: Lightning ``devices`` (``auto``, a count such as ``2``, or ids ``0,1``).
        accelerator: Lightning ``accelerator`` (``auto``, ``cpu``, ``gpu``).
        strategy: Lightning ``strategy``: ``auto``, ``ddp`` (data parallel) or ``fsdp``
            (sharded data parallel, GPUs only); see :mod:`seqmamba.train.strategy`.
            ``task.batch_size`` is per process: the global batch is ``task.batch_size
            * processes * accumulate_grad_batches``.
        fsdp: options of ``strategy: fsdp``.
        seed: seeds the model initialisation and the training data order.
        deterministic: ask torch for deterministic algorithms.
        output_dir: runs are written to ``<output_dir>/<name>/``.
        val_every_n_steps: validate (and checkpoint) every this many optimizer steps,
            and once more at the end of training.
        limit_val_batches: validate on at most this many batches (``null``: all): the
            first ``limit_val_batches * task.eval_batch_size`` items, shared out among
            the processes, so any number of devices validates on the same items.
        log_every_n_steps: write training metrics (and refresh the progress bar) every
            this many optimizer steps; each time, the host waits for the GPU to finish
            the step, so a small value slows training on a fast GPU.
        progress_bar: show a progress bar.
        resume_from: checkpoint to continue from (same global step, same data
            position); ``last`` means ``<output_dir>/<name>/checkpoints/last.ckpt``.
        overwrite: allow starting a fresh run in a run directory that already has
            checkpoints (they may be replaced).
        evaluate: run the task's full evaluation after training.
        cuda_graph: capture the training step's forward and backward in CUDA graphs
            and replay them (:mod:`seqmamba.train.graphed_task_step`), so the host
            launches two graphs instead of every kernel: faster where the host, not
            the GPU, sets the pace. One CUDA device; batches of other shapes than the
            first run eagerly.
    """

    max_steps: int = 1000
    precision: str = "32-true"
    grad_clip: float = 1.0
    accumulate_grad_batches: int = 1
    devices: str = "auto"
    accelerator: str = "auto"
    strategy: str = "auto"
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)
    seed: int = 0
    deterministic: bool = False
    output_dir: str = "runs"
    val_every_n_steps: int = 200
    limit_val_batches: Optional[int] = None
    log_every_n_steps: int = 10
    progress_bar: bool = True
    resume_from: Optional[str] = None
    overwrite: bool = False
    evaluate: bool = True
    cuda_graph: bool = False


@dataclass
class ExperimentConfig:
    """A whole experiment. ``task`` holds the task's own ``TaskConfig`` subclass."""

    name: str = MISSING
    model: ModelConfig = MISSING
    task: TaskConfig = MISSING
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
