"""The typed config of ``seqmamba compare``: one backbone, several tasks, one budget.

A comparison file looks like a training config whose ``task`` section became a
``tasks`` mapping, plus the token budget::

    name: compare_quick
    model: {d_model: 64, n_layer: 2}            # the backbone shape every task trains
    tokens: 500000                              # training tokens per task
    evals: 6                                    # validations per task (loss curve points)
    tasks:
      induction_heads:                          # a label of your choice
        task: {name: induction_heads, seq_len: 64, batch_size: 32}
      dna:
        task: {name: dna_pretrain, fasta: data/dna_species/genomes.fa, ...}
        needs: [data/dna_species/genomes.fa]    # skipped with `build` shown when missing
        build: seqmamba data dna-species data/dna_species
    optimizer: {...}                            # shared by every task
    schedule: {...}
    trainer: {...}                              # shared; max_steps and val_every_n_steps
                                                # follow from tokens and evals

Each ``tasks.<label>.task`` section is typed by its ``name``'s own config class, like
the ``task`` section of a training config. Overrides are dotted keys as for ``train``:
``tokens=100000``, ``tasks.dna.task.batch_size=4``, ``select=[induction_heads]``.
"""
# No ``from __future__ import annotations`` here: OmegaConf reads these annotations at
# runtime.
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence

from omegaconf import MISSING, DictConfig, OmegaConf

from seqmamba.config import (
    ConfigError,
    OptimizerConfig,
    ScheduleConfig,
    TrainerConfig,
    build_config,
    merge_config,
    parse_override,
    read_config_file,
)
from seqmamba.models import ModelConfig
from seqmamba.tasks import TaskConfig, get_task

SET_PER_TASK = ("max_steps", "val_every_n_steps")
"""Trainer keys a comparison derives per task from ``tokens`` and ``evals``."""


@dataclass
class CompareTask:
    """One task of a comparison.

    Attributes:
        task: the task section, as in a training config (fields follow ``task.name``).
        needs: files or folders the task reads; if one is missing the task is skipped,
            and the report and the console say which and print ``build``.
        build: the command that creates what ``needs`` lists.
    """

    task: TaskConfig = MISSING
    needs: List[str] = field(default_factory=list)
    build: str = ""


@dataclass
class CompareConfig:
    """A comparison of tasks on one backbone shape and one token budget.

    Attributes:
        name: outputs go to ``<trainer.output_dir>/<name>/``: ``report.md``, the plots,
            and one run folder per task (``<label>/``, as ``seqmamba train`` writes).
        model: the backbone every task trains (each task sets the vocabulary and head).
        tokens: training tokens per task: input positions of every sequence of every
            step, all processes together. A task trains ``ceil(tokens / tokens per
            step)`` optimizer steps.
        evals: validations per task, evenly spaced (the points of the loss curves).
        select: labels of ``tasks`` to run, in this order (empty: all, in file order).
        context_batches: validation batches scored for accuracy by position in the
            sequence, for tasks whose evaluation has no length sweep of its own.
        tasks: label -> task to train.
        optimizer, schedule, trainer: shared by every task.
    """

    name: str = MISSING
    model: ModelConfig = MISSING
    tokens: int = MISSING
    evals: int = 8
    select: List[str] = field(default_factory=list)
    context_batches: int = 4
    tasks: Dict[str, CompareTask] = MISSING
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def labels(self) -> list[str]:
        """The labels of the tasks to run, in order."""
        return list(self.select) if self.select else list(self.tasks)

    def run_root(self) -> Path:
        """``<trainer.output_dir>/<name>``: the report, plots and task run folders."""
        return Path(self.trainer.output_dir) / self.name


def load_compare_config(path: str | Path, overrides: Sequence[str] = ()) -> CompareConfig:
    """The checked comparison in ``path`` with ``key=value`` overrides; ConfigError
    (a ValueError naming the file and key path) for anything that cannot run."""
    source = str(path)
    data = read_config_file(path)
    parsed = [(text, parse_override(text)) for text in overrides]
    given = OmegaConf.merge(data, *[override for _, override in parsed]) if parsed else data
    schema = _schema(given, source)
    cfg = merge_config(schema, data, source)
    for text, override in parsed:
        cfg = merge_config(cfg, override, f"override {text!r}")
    where = f"{source} with overrides" if overrides else source
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{where}: missing value for {', '.join(missing)} (set it in the file or as key=value)")
    trainer = given.get("trainer")
    for key in SET_PER_TASK:
        if isinstance(trainer, DictConfig) and key in trainer:
            raise ConfigError(f"{where}: trainer.{key}: set per task from 'tokens' and 'evals'; leave it out")
    compare = OmegaConf.to_object(cfg)
    assert isinstance(compare, CompareConfig)
    _validate(compare, where)
    for label in compare.labels():  # every task's own checks, before anything trains
        task_experiment(compare, label, max_steps=1, val_every_n_steps=1, source=source)
    return compare


def task_experiment(
    cfg: CompareConfig, label: str, *, max_steps: int, val_every_n_steps: int, source: str
) -> DictConfig:
    """The training config of task ``label``: the shared sections, its task section and
    the given step counts; its run folder is ``<run_root>/<label>``."""
    trainer = dataclasses.asdict(cfg.trainer)
    trainer.update(output_dir=str(cfg.run_root()), max_steps=max_steps, val_every_n_steps=val_every_n_steps)
    data = {
        "name": label,
        "model": dataclasses.asdict(cfg.model),
        "task": dataclasses.asdict(cfg.tasks[label].task),
        "optimizer": dataclasses.asdict(cfg.optimizer),
        "schedule": dataclasses.asdict(cfg.schedule),
        "trainer": trainer,
    }
    return build_config(data, source=f"{source}: tasks.{label}")


def _schema(given: DictConfig, source: str) -> DictConfig:
    """The structured schema with one typed entry per task label of ``given``."""
    schema = OmegaConf.structured(CompareConfig)
    schema.model = OmegaConf.structured(ModelConfig)
    tasks = given.get("tasks")
    if not isinstance(tasks, DictConfig) or not tasks:
        raise ConfigError(f"{source}: tasks: expected a mapping of labels to task entries (each with a 'task' section)")
    entries = {}
    for label, entry in tasks.items():
        name = entry.get("task", {}).get("name") if isinstance(entry, DictConfig) else None
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{source}: tasks.{label}.task.name: every task entry names its task")
        try:
            task_class = get_task(name)
        except ValueError as exc:
            raise ConfigError(f"{source}: tasks.{label}.{exc}") from None
        node = OmegaConf.structured(CompareTask)
        node.task = OmegaConf.structured(task_class.config_class)
        entries[str(label)] = node
    schema.tasks = entries
    return schema


def _validate(cfg: CompareConfig, where: str) -> None:
    if not cfg.name or "/" in cfg.name or cfg.name in (".", ".."):
        raise ConfigError(f"{where}: name: {cfg.name!r} is not a usable run name (non-empty, no '/')")
    for key in ("tokens", "evals", "context_batches"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{where}: {key}: must be a positive integer, got {getattr(cfg, key)}")
    unknown = [label for label in cfg.select if label not in cfg.tasks]
    if unknown:
        raise ConfigError(f"{where}: select: no task labelled {unknown[0]!r}; labels: {', '.join(cfg.tasks)}")
    if len(set(cfg.select)) != len(cfg.select):
        raise ConfigError(f"{where}: select: a label is listed twice: {list(cfg.select)}")
    for label, entry in cfg.tasks.items():
        if entry.needs and not entry.build:
            raise ConfigError(f"{where}: tasks.{label}.build: say which command creates {', '.join(entry.needs)}")
