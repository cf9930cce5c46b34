"""benchmarks/gpu_refresh.sh: the steps it knows, and clear refusals (its GPU steps run elsewhere)."""
from __future__ import annotations

import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_refresh.sh"


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)


def test_unknown_step_is_refused_with_the_list_of_steps(tmp_path):
    result = run(str(tmp_path), "bogus")
    assert result.returncode == 2
    assert "unknown step 'bogus'" in result.stderr and "tests tests_scan tuning scan scanprofile scanab ops conv train" in result.stderr


def test_anchor_step_needs_the_source_distributions(tmp_path):
    result = run(str(tmp_path), "anchor", env={"PATH": "/usr/bin:/bin"})
    assert result.returncode != 0
    assert "set ANCHOR_SDIST" in result.stderr


def test_wait_reads_the_build_log_outside_the_output_folder(tmp_path):
    """The build's log lives outside OUT_DIR (emptied between calls on some machines);
    wait finds the build finished there and copies the log into OUT_DIR."""
    log = tmp_path / "anchor.log"
    log.write_text("causal_conv1d built in 265 s\nanchor ok\n")
    out = tmp_path / "out"
    result = run(str(out), "wait", env={"PATH": "/usr/bin:/bin", "ANCHOR_LOG": str(log)})
    assert result.returncode == 0, result.stderr
    assert (out / "anchor.txt").read_text() == log.read_text() and "anchor ok" in result.stdout


def _run_with_stand_in(tmp_path, step: str, program: str, script: str, **env: str):
    """Runs ``step`` with a shell script standing in for ``program`` on the PATH; returns
    (result, OUT_DIR)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / program).write_text(f"#!/bin/sh\n{script}\n")
    (bin_dir / program).chmod(0o755)
    out = tmp_path / "out"
    return run(str(out), step, env={"PATH": f"{bin_dir}:/usr/bin:/bin", **env}), out


def test_scanprofile_runs_ncu_on_each_scan_kernel_of_one_shape(tmp_path):
    """Each kernel gets its own ncu run (a stand-in ncu records its arguments here), on the
    shape PROFILE_SHAPE names, its output in OUT_DIR/ncu_fwd.txt and ncu_bwd.txt."""
    result, out = _run_with_stand_in(tmp_path, "scanprofile", "ncu", 'echo "ncu $*"', PROFILE_SHAPE="1,64,512,16")
    assert result.returncode == 0, result.stderr
    for kernel in ("fwd", "bwd"):
        args = (out / f"ncu_{kernel}.txt").read_text()
        assert f"-k regex:^_{kernel}_kernel -c 1" in args and "--clock-control none" in args, args
        assert "benchmarks/scan_tuning.py --shapes 1,64,512,16 --configs auto --bwd-configs auto --untimed 1" in args


def test_tuning_passes_each_shape_as_its_own_argument(tmp_path):
    """TUNING_SHAPES is space-separated and scan_tuning takes each shape as one argument;
    the default lists name the candidates of the notes (a stand-in python3 records its
    arguments, one a line)."""
    result, out = _run_with_stand_in(tmp_path, "tuning", "python3", 'for a in "$@"; do echo "[$a]"; done',
                                     TUNING_SHAPES="1,64,512,16 2,64,256,16")
    assert result.returncode == 0, result.stderr
    args = (out / "tuning.txt").read_text()
    assert "[--shapes]\n[1,64,512,16]\n[2,64,256,16]\n[--configs]" in args, args
    assert "[auto,autox,autoxy,autoe,autoxe,2x16x1G,4x16x1g]" in args and "[auto,autoj,autojk]" in args


def test_every_step_in_the_header_is_handled():
    text = SCRIPT.read_text()
    header_steps = ["setup", "anchor", "wait", "tests", "tests_scan", "tuning", "scan", "scanprofile", "scanab", "ops",
                    "train", "long", "generate", "decode", "decodelinear", "projconv", "decodeab"]
    for step in header_steps:
        assert f"\n#   {step} " in text, step
        assert f"        {step})" in text, step
