"""Loading a config: YAML file, then ``key=value`` overrides, checked against the schema.

Order: read ``task.name`` (an override wins over the file), look up that task's
``config_class``, build the structured schema of :class:`ExperimentConfig` with it,
merge the file, then each override in order (OmegaConf dotlist semantics: dotted
keys, values parsed as YAML, ``key=`` sets null). Every problem (unknown key, wrong
type, missing value, bad override, unknown task, invalid value) raises
:class:`ConfigError` (a ValueError) naming the source and the full key path.

The run directory of a config is ``<trainer.output_dir>/<name>``.
"""
from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from seqmamba.models import ModelConfig
from seqmamba.tasks import get_task

from .errors import ConfigError, describe_merge_error
from .schema import FSDP_SHARDING, PRECISIONS, SCHEDULES, ExperimentConfig, OptimizerConfig, ScheduleConfig, TrainerConfig

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """The resolved, checked config of the YAML file ``path`` with ``overrides``
    (``["trainer.max_steps=100", "task.name=selective_copying"]``) applied.

    Returns a structured DictConfig typed by :class:`ExperimentConfig` (use
    :func:`to_experiment` for plain dataclasses). Raises ConfigError (ValueError).
    """
    data = read_config_file(path)
    if "tasks" in data and "task" not in data:
        raise ConfigError(f"{path}: a comparison of several tasks (it has 'tasks:'); run it with 'seqmamba compare {path}'")
    return build_config(data, source=str(path), overrides=overrides)


def read_config_file(path: str | Path) -> DictConfig:
    """The YAML mapping in ``path``, unchecked; ConfigError if it is missing or not YAML."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(data, DictConfig):
        raise ConfigError(f"{path}: a config file must be a mapping of sections (name, model, task, ...)")
    return data


def build_config(data: Mapping[str, Any] | DictConfig, *, source: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Like :func:`load_config` for an already-parsed mapping (e.g. the config saved in
    a checkpoint); ``source`` names it in error messages."""
    # A private copy: empty sections are dropped from it while merging.
    data = OmegaConf.create(copy.deepcopy(data) if isinstance(data, DictConfig) else dict(data))
    parsed = [(text, parse_override(text)) for text in overrides]
    task_name, task_source = _task_name(data, source, parsed)
    try:
        task_cls = get_task(task_name)
    except ValueError as exc:
        raise ConfigError(f"{task_source}: {exc}") from None
    schema = experiment_schema(task_cls.config_class)

    cfg = merge_config(schema, data, source)
    for text, override in parsed:
        cfg = merge_config(cfg, override, f"override {text!r}")
    # Past this point a problem may come from the file or from an override.
    where = f"{source} with overrides" if overrides else source
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        path = _unresolvable_key(cfg, prefix="") or "?"
        problem = " ".join(str(exc).split())
        raise ConfigError(f"{where}: {path}: cannot resolve the interpolation: {problem}") from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"{where}: missing value for {', '.join(missing)} (set it in the file or as key=value on the command line)"
        )
    try:
        validate(to_experiment(cfg))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return cfg


def experiment_schema(task_config_class: type) -> DictConfig:
    """The structured config of :class:`ExperimentConfig` whose ``task`` section has the
    fields of ``task_config_class`` (a TaskConfig subclass), with every default filled."""
    schema = OmegaConf.structured(ExperimentConfig)
    schema.model = OmegaConf.structured(ModelConfig)
    schema.task = OmegaConf.structured(task_config_class)
    return schema


def parse_override(text: str) -> DictConfig:
    """``"trainer.max_steps=100"`` -> ``{trainer: {max_steps: 100}}`` (value parsed as YAML)."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. trainer.max_steps=100")
    if not _KEY.fullmatch(key):
        raise ConfigError(f"override {text!r}: {key!r} is not a dotted key path such as trainer.max_steps")
    try:
        return OmegaConf.from_dotlist([f"{key}={value}"])
    except (yaml.YAMLError, OmegaConfBaseException) as exc:
        raise ConfigError(f"override {text!r}: cannot parse the value: {_yaml_problem(exc)}") from None


def to_experiment(cfg: DictConfig) -> ExperimentConfig:
    """The config as dataclasses: ``.model`` a ModelConfig, ``.task`` the task's TaskConfig."""
    experiment = OmegaConf.to_object(cfg)
    assert isinstance(experiment, ExperimentConfig)
    return experiment


def to_yaml(cfg: DictConfig) -> str:
    """The config as YAML text (every field, defaults included)."""
    return OmegaConf.to_yaml(cfg)


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain dicts and lists (for checkpoints and loggers)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    return container


def run_dir(cfg: DictConfig | ExperimentConfig) -> Path:
    """Where a run writes everything: ``<trainer.output_dir>/<name>``."""
    return Path(cfg.trainer.output_dir) / cfg.name


def validate(experiment: ExperimentConfig) -> None:
    """Values that have the right type but cannot run; ValueError naming the key."""
    if not experiment.name or "/" in experiment.name or experiment.name in (".", ".."):
        raise ValueError(f"name: {experiment.name!r} is not a usable run name (non-empty, no '/')")
    # The task sets vocab_size; check every other model field now, before any work.
    model = experiment.model
    dataclasses.replace(model, vocab_size=1 if model.vocab_size is None else model.vocab_size).validate()
    task_validate = getattr(experiment.task, "validate", None)
    if callable(task_validate):
        task_validate()
    _validate_optimizer(experiment.optimizer)
    _validate_schedule(experiment.schedule, experiment.optimizer, experiment.trainer)
    _validate_trainer(experiment.trainer)


def _validate_optimizer(opt: OptimizerConfig) -> None:
    if not opt.lr > 0:
        raise ValueError(f"optimizer.lr: must be > 0, got {opt.lr}")
    if len(opt.betas) != 2 or not all(0 <= b < 1 for b in opt.betas):
        raise ValueError(f"optimizer.betas: must be two numbers in [0, 1), got {list(opt.betas)}")
    if not opt.eps > 0:
        raise ValueError(f"optimizer.eps: must be > 0, got {opt.eps}")
    if opt.weight_decay < 0:
        raise ValueError(f"optimizer.weight_decay: must be >= 0, got {opt.weight_decay}")


def _validate_schedule(schedule: ScheduleConfig, opt: OptimizerConfig, trainer: TrainerConfig) -> None:
    if schedule.name not in SCHEDULES:
        raise ValueError(f"schedule.name: must be one of {', '.join(SCHEDULES)}, got {schedule.name!r}")
    if schedule.warmup_steps < 0:
        raise ValueError(f"schedule.warmup_steps: must be >= 0, got {schedule.warmup_steps}")
    if not 0 <= schedule.min_lr <= opt.lr:
        raise ValueError(f"schedule.min_lr: must be in [0, optimizer.lr={opt.lr}], got {schedule.min_lr}")
    if schedule.decay_steps is not None and schedule.decay_steps <= schedule.warmup_steps:
        raise ValueError(
            f"schedule.decay_steps: must exceed schedule.warmup_steps ({schedule.warmup_steps}), got {schedule.decay_steps}"
        )


def _validate_trainer(trainer: TrainerConfig) -> None:
    for key in ("max_steps", "accumulate_grad_batches", "val_every_n_steps", "log_every_n_steps"):
        if getattr(trainer, key) < 1:
            raise ValueError(f"trainer.{key}: must be >= 1, got {getattr(trainer, key)}")
    if trainer.precision not in PRECISIONS:
        raise ValueError(f"trainer.precision: must be one of {', '.join(PRECISIONS)}, got {trainer.precision!r}")
    if trainer.grad_clip < 0:
        raise ValueError(f"trainer.grad_clip: must be >= 0 (0 disables clipping), got {trainer.grad_clip}")
    if trainer.limit_val_batches is not None and trainer.limit_val_batches < 1:
        raise ValueError(f"trainer.limit_val_batches: must be >= 1 or null (all), got {trainer.limit_val_batches}")
    if not trainer.output_dir:
        raise ValueError("trainer.output_dir: must not be empty")
    if trainer.fsdp.sharding_strategy not in FSDP_SHARDING:
        raise ValueError(
            f"trainer.fsdp.sharding_strategy: must be one of {', '.join(FSDP_SHARDING)}, "
            f"got {trainer.fsdp.sharding_strategy!r}"
        )


def _task_name(data: DictConfig, source: str, parsed: list[tuple[str, DictConfig]]) -> tuple[str, str]:
    """``task.name`` and where it came from: the last override that sets it, else the file."""
    for text, override in reversed(parsed):
        task = override.get("task")
        if isinstance(task, DictConfig) and "name" in task:
            name = task.name
            if not isinstance(name, str) or not name:
                raise ConfigError(f"override {text!r}: task.name: expected a task name, got {name!r}")
            return name, f"override {text!r}"
    missing = ConfigError(f"{source}: missing value for task.name (every config names its task)")
    if "task" not in data or OmegaConf.is_missing(data, "task") or data.task is None:
        raise missing
    task = data.task
    if not isinstance(task, DictConfig):
        raise ConfigError(f"{source}: task: expected a mapping of keys, got {task!r}")
    if "name" not in task or OmegaConf.is_missing(task, "name") or task.name is None:
        raise missing
    name = task.name
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{source}: task.name: expected a task name, got {name!r}")
    return name, source


def _unresolvable_key(node: DictConfig | ListConfig, *, prefix: str) -> str | None:
    """The path of the first value whose ``${...}`` interpolation does not resolve
    (OmegaConf.resolve does not say which one)."""
    keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
    for key in keys:
        path = f"{prefix}.{key}" if isinstance(key, str) and prefix else f"{prefix}[{key}]" if prefix else str(key)
        if OmegaConf.is_missing(node, key):
            continue
        try:
            child = node[key]
        except OmegaConfBaseException:
            return path
        if isinstance(child, (DictConfig, ListConfig)):
            found = _unresolvable_key(child, prefix=path)
            if found:
                return found
    return None


def _yaml_problem(exc: Exception) -> str:
    """One line: what the YAML parser objected to, and where."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        return f"{where}{exc.problem or exc.context}"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def merge_config(base: DictConfig, data: DictConfig, source: str) -> DictConfig:
    """``data`` merged into the (structured) ``base``; ConfigError naming ``source`` and
    the key path for an unknown key, a wrong type or a section that is not a mapping."""
    _check_sections(base, data, source, prefix="")
    try:
        merged = OmegaConf.merge(base, data)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{source}: {describe_merge_error(exc, base, data)}") from None
    assert isinstance(merged, DictConfig)
    return merged


def _check_sections(schema: DictConfig, data: Any, source: str, prefix: str) -> None:
    """A section (``trainer:``) must be a mapping; an empty one means all defaults.

    OmegaConf's own message for ``trainer: 5`` has no key path, so check first.
    """
    if not isinstance(data, DictConfig):
        return
    for key in list(data.keys()):
        if key not in schema.keys() or not isinstance(schema._get_node(key), DictConfig):
            continue
        if OmegaConf.is_missing(data, key):
            continue
        value = data._get_node(key)
        path = f"{prefix}{key}"
        if value is None or (not isinstance(value, DictConfig) and value._value() is None):
            del data[key]  # `schedule:` with nothing under it: keep the defaults
        elif not isinstance(value, DictConfig):
            raise ConfigError(f"{source}: {path}: expected a mapping of keys, got {value._value()!r}")
        else:
            _check_sections(schema._get_node(key), value, source, prefix=f"{path}.")
