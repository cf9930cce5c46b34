"""The seqmamba command line: help, config printing, train, evaluate, and user errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from seqmamba.cli import COMMANDS, main

TINY = """\
name: cli_tiny
model: {d_model: 8, n_layer: 1, d_state: 4}
task:
  name: induction_heads
  batch_size: 4
  eval_batch_size: 8
  seq_len: 11
  val_size: 9
  test_size: 5
  test_lengths: [19]
optimizer: {lr: 3.0e-3}
schedule: {warmup_steps: 1, min_lr: 1.0e-4}
trainer: {max_steps: 3, val_every_n_steps: 2, log_every_n_steps: 1, accelerator: cpu, devices: 1, progress_bar: false}
"""


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.replace("progress_bar: false}", f"progress_bar: false, output_dir: {tmp_path / 'runs'}}}"))
    return path


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", [[], *[[name] for name in COMMANDS]])
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: seqmamba")
    if command:
        assert "examples:" in out and f"seqmamba {command[0]} " in out
    else:
        assert all(name in out for name in COMMANDS)


def test_config_prints_the_resolved_yaml(config, capsys):
    code, out, err = run_main(["config", str(config), "model.d_model=12", "trainer.seed=7"], capsys)
    assert code == 0 and err == ""
    printed = OmegaConf.create(out)
    assert printed.model.d_model == 12 and printed.trainer.seed == 7
    assert printed.model.d_conv == 4 and printed.optimizer.weight_decay == 0.1  # defaults filled in
    assert printed.task.test_lengths == [19] and printed.task.vocab_size == 16


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["config", "{config}", "foo"], "error: override 'foo': expected key=value"),
        (["config", "{config}", "trainer.max_stepz=3"], "trainer.max_stepz: unknown key; did you mean 'max_steps'?"),
        (["config", "{config}", "model.d_model=abc"], "model.d_model: expected int, got 'abc'"),
        (["config", "{missing}"], "config file not found"),
        (["train", "{config}", "task.name=unknown"], "task.name: unknown task 'unknown'"),
        (["evaluate", "{config}"], "error: evaluate needs ckpt=PATH"),
        (["evaluate", "{config}", "ckpt=last"], "ckpt=last: no last checkpoint in"),
        (["evaluate", "{config}", "ckpt={missing}"], "ckpt: no checkpoint at"),
        (["train", "{config}", "trainer.resume_from={missing}"], "trainer.resume_from: no checkpoint at"),
        (["train", "{config}", "trainer.accelerator=abacus"], "trainer: You selected an invalid accelerator name"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(argv, expected, config, tmp_path, capsys):
    argv = [a.format(config=config, missing=tmp_path / "absent.yaml") for a in argv]
    code, out, err = run_main(argv, capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert expected in err


def test_traceback_flag_shows_the_exception(config):
    with pytest.raises(ValueError, match="expected key=value"):
        main(["--traceback", "config", str(config), "foo"])


def test_train_then_evaluate(config, tmp_path, capsys):
    code, out, _ = run_main(["train", str(config), "trainer.max_steps=3"], capsys)
    assert code == 0
    run = tmp_path / "runs" / "cli_tiny"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "config.yaml").is_file()
    report = (run / "eval.txt").read_text().strip()
    assert report.startswith("Induction heads") and "accuracy@19" in report
    assert report in out and f"last checkpoint: {run / 'checkpoints' / 'last.ckpt'}" in out

    code, out, err = run_main(["evaluate", str(config), "ckpt=last"], capsys)
    assert code == 0 and err == ""
    assert out.strip() == report  # same weights, same evaluation

    code, out, err = run_main(["evaluate", str(run / "config.yaml"), f"ckpt={run / 'checkpoints' / 'last.ckpt'}",
                               "model.d_model=16", "task.test_lengths=[13]"], capsys)
    assert code == 0 and "accuracy@13" in out
    assert "model is built from the config saved in" in err

    # A second fresh run into the same run directory is refused; resuming continues.
    code, _, err = run_main(["train", str(config)], capsys)
    assert code == 2 and "trainer.resume_from=last" in err
    code, out, _ = run_main(["train", str(config), "trainer.resume_from=last", "trainer.max_steps=4",
                             "trainer.evaluate=false"], capsys)
    assert code == 0 and "Induction heads" not in out


def test_console_script_runs(config):
    script = Path(sys.executable).parent / "seqmamba"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "seqmamba.cli"]
    done = subprocess.run([*command, "config", str(config), "name=from_script"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert OmegaConf.create(done.stdout).name == "from_script"
    bad = subprocess.run([*command, "config", str(config), "oops"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


def test_parser_imports_no_task_package():
    # Every command builds the whole parser; a machine for one domain (text without
    # pyfaidx or soundfile, say) must still run `seqmamba train`.
    code = ("import sys; from seqmamba.cli import build_parser; build_parser(); "
            "print(sorted(m for m in sys.modules if m in ('pyfaidx', 'soundfile') or m.startswith('seqmamba.tasks.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_data_defaults_match_the_tasks():
    from seqmamba.commands.data import PIANO_SOUNDFONT, SPECIES_SOURCE
    from seqmamba.tasks.audio.piano import DEFAULT_SOUNDFONT
    from seqmamba.tasks.dna.species import DEFAULT_SOURCE

    assert SPECIES_SOURCE == DEFAULT_SOURCE
    assert PIANO_SOUNDFONT == DEFAULT_SOUNDFONT
