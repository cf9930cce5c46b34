"""Training and evaluation runs: the Trainer, its callbacks and loggers, the run directory.

A run writes everything under ``<trainer.output_dir>/<name>/``::

    config.yaml                 the resolved config (also inside every checkpoint)
    checkpoints/last.ckpt       the latest weights and training state (resume from it)
    checkpoints/best-step<N>.ckpt   the lowest val/loss so far
    logs/csv/version_<k>/metrics.csv, logs/tensorboard/version_<k>/   (k: one per launch)
    eval.txt, eval.json         the task's evaluation of the final weights
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from omegaconf import DictConfig

from seqmamba.config import ConfigError, ExperimentConfig, TrainerConfig, run_dir, to_container, to_experiment, to_yaml
from seqmamba.tasks import Report, Task, get_task

from .callbacks import StepProgressBar, ValidateAtEnd
from .checkpoint import check_resumable, load_checkpoint_config, load_checkpoint_weights
from .data import SequenceDataModule
from .evaluation import evaluate_model
from .module import PLACEMENT_KEY, SequenceModule
from .quiet import quiet_lightning
from .strategy import accelerator_and_strategy, is_fsdp


@dataclass
class TrainResult:
    """Where a finished run left its outputs. ``report`` is None on every process but
    the first of a multi-device run (``is_global_zero``), or without an evaluation."""

    run_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    report: Report | None
    is_global_zero: bool = True


def train(cfg: DictConfig, *, callbacks: Sequence[L.Callback] = ()) -> TrainResult:
    """Train the experiment ``cfg`` (from :func:`seqmamba.config.load_config`), then run
    the task's evaluation of the final weights (unless ``trainer.evaluate`` is false).

    With ``trainer.resume_from`` (a path, or ``last``) training continues from that
    checkpoint at the same global step and the same position in the data, on any
    number of processes as long as the global batch is the same. ``callbacks`` are
    added to the Trainer's own.
    """
    experiment = to_experiment(cfg)
    directory = run_dir(experiment)
    resume = _resume_path(experiment, directory)
    if resume is not None:
        check_resumable(resume, experiment)
    else:
        _prepare_fresh_run(directory, overwrite=experiment.trainer.overwrite)
    quiet_lightning()
    L.seed_everything(experiment.trainer.seed, workers=True, verbose=False)

    checkpoints = directory / "checkpoints"
    best = ModelCheckpoint(dirpath=checkpoints, filename="best-step{step}", monitor="val/loss", mode="min",
                           save_top_k=1, auto_insert_metric_name=False)
    # `last.ckpt` is written after every validation, including the one ValidateAtEnd
    # adds at max_steps, so the end of a run is always resumable.
    last = ModelCheckpoint(dirpath=checkpoints, save_last=True, save_top_k=0)
    trainer = _build_trainer(experiment, directory, callbacks=[best, last, *callbacks])
    if experiment.trainer.cuda_graph:
        _check_cuda_graph(trainer, experiment.trainer)
    if resume is not None:
        _check_global_batch(resume, experiment, world_size=trainer.num_devices * trainer.num_nodes)
    module = SequenceModule(to_container(cfg))
    datamodule = SequenceDataModule(module.task, seed=experiment.trainer.seed,
                                    limit_val_batches=experiment.trainer.limit_val_batches)

    if trainer.is_global_zero:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.yaml").write_text(to_yaml(cfg))
        print(f"run directory: {directory}" + (f" (resuming from {resume})" if resume else ""), flush=True)
    trainer.fit(module, datamodule=datamodule, ckpt_path=None if resume is None else str(resume))

    report = None
    if experiment.trainer.evaluate and trainer.is_global_zero:
        device = trainer.strategy.root_device
        model = module.model
        if is_fsdp(trainer.strategy):
            # Each process holds shards only; the checkpoint holds the whole final model.
            model = module.task.build_model(experiment.model)
            model.load_state_dict(load_checkpoint_weights(checkpoints / "last.ckpt"))
        report = evaluate_model(module.task, model, device=device, precision=experiment.trainer.precision)
        (directory / "eval.txt").write_text(report.format() + "\n")
        (directory / "eval.json").write_text(json.dumps(asdict(report), indent=2, default=str) + "\n")
    best_path = Path(best.best_model_path) if best.best_model_path else None
    return TrainResult(run_dir=directory, last_checkpoint=checkpoints / "last.ckpt", best_checkpoint=best_path,
                       report=report, is_global_zero=trainer.is_global_zero)


def evaluate(cfg: DictConfig, checkpoint: str | Path) -> tuple[Report, list[str]]:
    """The task's evaluation of the weights in ``checkpoint``.

    The model is rebuilt from the ``model`` section saved in the checkpoint (so it fits
    the weights); the task (and so what is evaluated) comes from ``cfg``. Returns the
    report and notes for the user (e.g. that the config's model section was ignored).
    """
    experiment = to_experiment(cfg)
    trained = load_trained_model(cfg, checkpoint)
    report = evaluate_model(trained.task, trained.model, device=trained.device, precision=experiment.trainer.precision)
    return report, trained.notes


@dataclass
class TrainedModel:
    """A task and its model with a checkpoint's weights, on the CPU, and the device
    (from ``trainer.accelerator``) to run it on."""

    task: Task
    model: torch.nn.Module
    device: torch.device
    notes: list[str]


def load_trained_model(cfg: DictConfig, checkpoint: str | Path) -> TrainedModel:
    """The task of ``cfg`` with the model trained in ``checkpoint``.

    The model is rebuilt from the ``model`` section saved in the checkpoint (so it fits
    the weights); the task comes from ``cfg``. ``notes`` tell the user, e.g., that the
    config's model section was ignored.
    """
    experiment = to_experiment(cfg)
    saved = load_checkpoint_config(checkpoint)
    notes = []
    if saved.model != experiment.model:
        notes.append(f"note: the model is built from the config saved in {checkpoint}, not from the given config")
    quiet_lightning()
    L.seed_everything(experiment.trainer.seed, workers=True, verbose=False)
    task = get_task(experiment.task.name)(experiment.task)
    model = task.build_model(saved.model)
    weights = load_checkpoint_weights(checkpoint)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(
            f"ckpt: the weights in {checkpoint} do not fit the model of task {experiment.task.name!r}: {first}"
        ) from None
    return TrainedModel(task=task, model=model, device=_eval_device(experiment.trainer.accelerator), notes=notes)


def _build_trainer(experiment: ExperimentConfig, directory: Path, *, callbacks: list[L.Callback]) -> L.Trainer:
    tc = experiment.trainer
    callbacks = [*callbacks, ValidateAtEnd(tc.val_every_n_steps)]
    if tc.progress_bar:
        # Each refresh reads the step's loss back from the GPU, a wait for every queued
        # kernel: at every step that would keep the host from queueing ahead.
        callbacks.append(StepProgressBar(refresh_rate=tc.log_every_n_steps))
    loggers = [
        CSVLogger(save_dir=directory / "logs", name="csv"),
        TensorBoardLogger(save_dir=directory / "logs", name="tensorboard", default_hp_metric=False),
    ]
    try:
        return _trainer(tc, directory, callbacks=callbacks, loggers=loggers)
    except (MisconfigurationException, ValueError, TypeError) as exc:
        # Lightning's word on accelerator, devices, strategy or precision, as one line.
        raise ConfigError(f"trainer: {' '.join(str(exc).split())}") from None


def _trainer(tc: TrainerConfig, directory: Path, *, callbacks: list[L.Callback], loggers: list[Any]) -> L.Trainer:
    accumulate = tc.accumulate_grad_batches
    accelerator, strategy = accelerator_and_strategy(tc)
    return L.Trainer(
        accelerator=accelerator,
        devices=_devices(tc.devices),
        strategy=strategy,
        precision=tc.precision,  # type: ignore[arg-type]
        max_steps=tc.max_steps,
        gradient_clip_val=tc.grad_clip if tc.grad_clip > 0 else None,
        accumulate_grad_batches=accumulate,
        # Lightning counts these in micro-batches; the config counts optimizer steps.
        val_check_interval=tc.val_every_n_steps * accumulate,
        check_val_every_n_epoch=None,
        # The data module applies trainer.limit_val_batches to the whole validation set,
        # so that any number of processes validates on the same items.
        log_every_n_steps=tc.log_every_n_steps,
        enable_progress_bar=tc.progress_bar,
        deterministic=tc.deterministic,
        callbacks=callbacks,
        logger=loggers,
        default_root_dir=directory,
        # The data module shards by rank itself (see seqmamba.train.data).
        use_distributed_sampler=False,
    )


def _check_cuda_graph(trainer: L.Trainer, tc: TrainerConfig) -> None:
    """ConfigError unless a captured training step can run: one CUDA device (see
    GraphedTaskStep)."""
    if not isinstance(trainer.accelerator, CUDAAccelerator):
        raise ConfigError(
            f"trainer.cuda_graph: CUDA graphs need a CUDA device, and this run's accelerator is "
            f"{type(trainer.accelerator).__name__.removesuffix('Accelerator').lower()} "
            f"(trainer.accelerator={tc.accelerator}); set trainer.cuda_graph=false"
        )
    if trainer.world_size > 1:
        raise ConfigError(
            f"trainer.cuda_graph: a captured step runs on one device, this run has {trainer.world_size} processes "
            f"(trainer.devices={tc.devices}); set trainer.devices=1 or trainer.cuda_graph=false"
        )


def _devices(value: str) -> Any:
    """Lightning's ``devices`` from the config's string: ``auto``, a count, or ids ``0,1``."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    return text


def _eval_device(accelerator: str) -> torch.device:
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _check_global_batch(path: Path, experiment: ExperimentConfig, *, world_size: int) -> None:
    """ConfigError if this run's global batch differs from the checkpoint's: the data
    stream would not continue where it stopped (see :mod:`seqmamba.train.data`)."""
    saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get(PLACEMENT_KEY)
    if saved is None:  # written before checkpoints recorded it: nothing to compare
        return
    tc = experiment.trainer
    batch, accumulate = experiment.task.batch_size, tc.accumulate_grad_batches
    before = saved["batch_size"] * saved["world_size"] * saved["accumulate_grad_batches"]
    now = batch * world_size * accumulate
    if before != now:
        raise ConfigError(
            f"trainer.resume_from: {path} was trained with a global batch of {before} (task.batch_size="
            f"{saved['batch_size']} x {saved['world_size']} processes x accumulate_grad_batches="
            f"{saved['accumulate_grad_batches']}), this run has {now} (task.batch_size={batch} x {world_size} "
            f"processes x accumulate_grad_batches={accumulate}); choose task.batch_size or "
            "trainer.accumulate_grad_batches so that they match, and the data continues where it stopped"
        )


def _resume_path(experiment: ExperimentConfig, directory: Path) -> Path | None:
    value = experiment.trainer.resume_from
    if value is None:
        return None
    path = directory / "checkpoints" / "last.ckpt" if value == "last" else Path(value)
    if not path.is_file():
        raise ConfigError(f"trainer.resume_from: no checkpoint at {path}")
    return path


def _prepare_fresh_run(directory: Path, *, overwrite: bool) -> None:
    """A new run must not mix its checkpoints with an earlier run's."""
    old = sorted((directory / "checkpoints").glob("*.ckpt"))
    if not old:
        return
    if not overwrite:
        raise ConfigError(
            f"{directory} already holds checkpoints of a run named {directory.name!r}: continue it with "
            "trainer.resume_from=last, start it over with trainer.overwrite=true, or pick another name=..."
        )
    for path in old:
        path.unlink()
