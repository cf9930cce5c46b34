"""seqmamba.tasks: one subpackage per domain, each registering its tasks by name.

Domains are imported only when a config names one of their tasks, so the synthetic
tasks need none of the DNA or audio dependencies.
"""
from __future__ import annotations

import importlib

from .base import IGNORE_INDEX, Metric, Report, StepOutput, Task, TaskConfig

# task name -> module that registers it when imported
_TASK_MODULES: dict[str, str] = {
    "selective_copying": "seqmamba.tasks.synthetic",
    "induction_heads": "seqmamba.tasks.synthetic",
    "dna_pretrain": "seqmamba.tasks.dna",
    "dna_classify": "seqmamba.tasks.dna",
    "text_pretrain": "seqmamba.tasks.text",
    "audio_pretrain": "seqmamba.tasks.audio",
    "audio_classify": "seqmamba.tasks.audio",
}

_REGISTRY: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: makes ``cls`` selectable as ``task.name: <cls.name>``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"two tasks are registered under the name {cls.name!r}")
    _REGISTRY[cls.name] = cls
    return cls


def task_names() -> list[str]:
    """Every task name a config may use."""
    return sorted(set(_TASK_MODULES) | set(_REGISTRY))


def get_task(name: str) -> type[Task]:
    """The task class registered as ``name``; ValueError listing the known names if none."""
    if name not in _REGISTRY and name in _TASK_MODULES:
        importlib.import_module(_TASK_MODULES[name])
    if name not in _REGISTRY:
        raise ValueError(f"task.name: unknown task {name!r}; known tasks: {', '.join(task_names())}")
    return _REGISTRY[name]


__all__ = [
    "IGNORE_INDEX",
    "Metric",
    "Report",
    "StepOutput",
    "Task",
    "TaskConfig",
    "get_task",
    "register_task",
    "task_names",
]
