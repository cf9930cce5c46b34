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
    assert "unknown step 'bogus'" in result.stderr and "tests tests_scan tuning scan scanab ops conv train" in result.stderr


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


def test_every_step_in_the_header_is_handled():
    text = SCRIPT.read_text()
    header_steps = ["setup", "anchor", "wait", "tests", "tests_scan", "tuning", "scan", "scanab", "ops", "train", "long",
                    "generate", "decode", "decodelinear", "projconv", "decodeab"]
    for step in header_steps:
        assert f"\n#   {step} " in text, step
        assert f"        {step})" in text, step
