"""Config loading: schema by task, overrides, and errors that name the key path."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from seqmamba.config import ConfigError, load_config, parse_override, run_dir, to_experiment, to_yaml
from seqmamba.models import ModelConfig
from seqmamba.tasks.synthetic import InductionHeadsConfig, SelectiveCopyingConfig

BASE = """\
name: tiny
model: {d_model: 24, n_layer: 3}
task: {name: induction_heads, batch_size: 5, seq_len: 37}
optimizer: {lr: 2.0e-3, betas: [0.9, 0.98]}
schedule: {warmup_steps: 7, min_lr: 1.0e-5}
trainer: {max_steps: 41, output_dir: out}
"""


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path, overrides: list[str] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_file_values_defaults_and_typed_sections(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    experiment = to_experiment(cfg)
    assert isinstance(experiment.model, ModelConfig)
    assert isinstance(experiment.task, InductionHeadsConfig)  # the task's own schema
    assert (experiment.model.d_model, experiment.model.n_layer, experiment.model.d_state) == (24, 3, 16)
    assert experiment.task.seq_len == 37 and experiment.task.vocab_size == InductionHeadsConfig().vocab_size
    assert experiment.optimizer.betas == [0.9, 0.98] and experiment.optimizer.eps == 1e-8
    assert experiment.schedule.name == "cosine" and experiment.schedule.decay_steps is None
    assert experiment.trainer.max_steps == 41 and experiment.trainer.precision == "32-true"
    assert run_dir(cfg) == Path("out") / "tiny"


def test_overrides_apply_in_order_with_yaml_values(tmp_path):
    path = write(tmp_path, BASE)
    cfg = load_config(path, ["model.d_model=40", "optimizer.betas=[0.8,0.9]", "trainer.max_steps=11",
                             "trainer.max_steps=13", "trainer.resume_from=", "name=other", "task.seq_len=19"])
    experiment = to_experiment(cfg)
    assert experiment.model.d_model == 40
    assert experiment.optimizer.betas == [0.8, 0.9]
    assert experiment.trainer.max_steps == 13  # the last override wins
    assert experiment.trainer.resume_from is None
    assert experiment.name == "other" and experiment.task.seq_len == 19


def test_task_name_override_switches_the_task_schema(tmp_path):
    path = write(tmp_path, BASE.replace(", seq_len: 37", ""))
    cfg = load_config(path, ["task.name=selective_copying", "task.num_data_tokens=3"])
    experiment = to_experiment(cfg)
    assert isinstance(experiment.task, SelectiveCopyingConfig)
    assert experiment.task.num_data_tokens == 3
    # induction heads has no such field
    assert "task.num_data_tokens: unknown key" in error_of(path, ["task.num_data_tokens=3"])


def test_empty_section_keeps_defaults(tmp_path):
    cfg = load_config(write(tmp_path, BASE.replace("schedule: {warmup_steps: 7, min_lr: 1.0e-5}", "schedule:")))
    assert to_experiment(cfg).schedule.warmup_steps == 0


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("max_steps: 41", "max_stepz: 41", "trainer.max_stepz: unknown key; did you mean 'max_steps'?"),
        ("n_layer: 3", "n_layer: 3, zzz: 1", "model.zzz: unknown key (keys allowed in model: d_model, n_layer"),
        ("d_model: 24", "d_model: abc", "model.d_model: expected int, got 'abc'"),
        ("d_model: 24", "d_model: 2.5", "model.d_model: expected int, got 2.5"),
        ("lr: 2.0e-3", "lr: fast", "optimizer.lr: expected float, got 'fast'"),
        ("betas: [0.9, 0.98]", "betas: [0.9, x]", "optimizer.betas[1]: expected float, got 'x'"),
        ("betas: [0.9, 0.98]", "betas: 0.9", "optimizer.betas: expected a list of float, got 0.9"),
        ("seq_len: 37", "seq_len: long", "task.seq_len: expected int, got 'long'"),
        ("trainer: {max_steps: 41, output_dir: out}", "trainer: 5", "trainer: expected a mapping of keys, got 5"),
        ("n_layer: 3", "n_layer: '???'", "missing value for model.n_layer"),
        (", n_layer: 3", "", "missing value for model.n_layer"),
        ("name: induction_heads", "name: nope", "task.name: unknown task 'nope'; known tasks:"),
        ("task: {name: induction_heads, batch_size: 5, seq_len: 37}", "", "missing value for task.name"),
        ("min_lr: 1.0e-5", "min_lr: 1.0", "schedule.min_lr: must be in [0, optimizer.lr=0.002]"),
        ("output_dir: out", "output_dir: out, precision: '16'", "trainer.precision: must be one of 32-true"),
        ("d_model: 24", "d_model: -4", "model.d_model must be a positive integer"),
        ("seq_len: 37", "seq_len: 0", "task.seq_len: must be a positive integer"),
    ],
)
def test_file_errors_name_the_file_and_key_path(tmp_path, old, new, expected):
    assert old in BASE
    path = write(tmp_path, BASE.replace(old, new))
    message = error_of(path)
    assert message.startswith(f"{path}: ")
    assert expected in message


@pytest.mark.parametrize(
    "override, expected",
    [
        ("trainer.max_stepz=3", "override 'trainer.max_stepz=3': trainer.max_stepz: unknown key; did you mean 'max_steps'?"),
        ("model.d_model=abc", "override 'model.d_model=abc': model.d_model: expected int, got 'abc'"),
        ("model.d_model=", "model.d_model: expected int, got null"),
        ("tsk.seq_len=3", "tsk: unknown key; did you mean 'task'?"),
        ("foo", "override 'foo': expected key=value"),
        ("a b=1", "'a b' is not a dotted key path"),
        ("=1", "'' is not a dotted key path"),
        ("model.d_model=[1,", "override 'model.d_model=[1,': cannot parse the value: line 1"),
        ("task.name=nope", "override 'task.name=nope': task.name: unknown task 'nope'; known tasks:"),
        ("trainer.max_steps=0", "with overrides: trainer.max_steps: must be >= 1, got 0"),
        ("schedule.name=linear", "schedule.name: must be one of cosine, constant, got 'linear'"),
    ],
)
def test_override_errors_name_the_override_and_key_path(tmp_path, override, expected):
    assert expected in error_of(write(tmp_path, BASE), [override])


def test_file_level_errors(tmp_path):
    assert error_of(tmp_path / "absent.yaml") == f"{tmp_path / 'absent.yaml'}: config file not found"
    bad_yaml = write(tmp_path, "name: x\nmodel: [1,\n", "bad.yaml")
    assert "not valid YAML: line 3" in error_of(bad_yaml)
    not_mapping = write(tmp_path, "- 1\n- 2\n", "list.yaml")
    assert "must be a mapping of sections" in error_of(not_mapping)


def test_interpolation_is_resolved(tmp_path):
    cfg = load_config(write(tmp_path, BASE.replace("max_steps: 41", "max_steps: '${task.seq_len}'")))
    assert to_experiment(cfg).trainer.max_steps == 37


def test_unresolvable_interpolation_names_the_key(tmp_path):
    path = write(tmp_path, BASE.replace("max_steps: 41", "max_steps: '${task.nope}'"))
    assert "trainer.max_steps: cannot resolve the interpolation: Interpolation key 'task.nope' not found" in error_of(path)


def test_to_yaml_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, BASE), ["model.expand=3", "trainer.seed=5"])
    text = to_yaml(cfg)
    again = load_config(write(tmp_path, text, "resolved.yaml"))
    assert OmegaConf.to_container(again) == OmegaConf.to_container(cfg)
    assert "d_state: 16" in text and "expand: 3" in text


def test_parse_override_uses_yaml_values():
    assert OmegaConf.to_container(parse_override("a.b=[1, 2]")) == {"a": {"b": [1, 2]}}
    assert OmegaConf.to_container(parse_override("x=1.0e-4")) == {"x": 1.0e-4}
    assert OmegaConf.to_container(parse_override("x=a=b")) == {"x": "a=b"}


# Comparisons (configs/compare/) have their own schema; tests/test_compare.py loads them.
SHIPPED = sorted(p for p in (Path(__file__).resolve().parent.parent / "configs").rglob("*.yaml")
                 if p.parent.name != "compare")


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_config_loads(path):
    experiment = to_experiment(load_config(path))
    assert experiment.name and experiment.task.name
