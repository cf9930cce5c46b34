"""Experiment configs: typed dataclasses merged with YAML files and ``key=value``
overrides through OmegaConf, with errors that name the key path."""
from .errors import ConfigError
from .loader import (
    build_config,
    experiment_schema,
    load_config,
    merge_config,
    parse_override,
    read_config_file,
    run_dir,
    to_container,
    to_experiment,
    to_yaml,
    validate,
)
from .schema import (
    FSDP_SHARDING,
    PRECISIONS,
    SCHEDULES,
    ExperimentConfig,
    FSDPConfig,
    OptimizerConfig,
    ScheduleConfig,
    TrainerConfig,
)

__all__ = [
    "FSDP_SHARDING",
    "PRECISIONS",
    "SCHEDULES",
    "ConfigError",
    "ExperimentConfig",
    "FSDPConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "TrainerConfig",
    "build_config",
    "experiment_schema",
    "load_config",
    "merge_config",
    "parse_override",
    "read_config_file",
    "run_dir",
    "to_container",
    "to_experiment",
    "to_yaml",
    "validate",
]
