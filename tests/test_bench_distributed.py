"""The two-GPU benchmark runs on the CPU in its tiny mode (one process against two gloo
processes), so it cannot rot between GPU runs."""
from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_distributed", ROOT / "benchmarks" / "bench_distributed.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_distributed"] = module
    spec.loader.exec_module(module)
    return module


def test_tiny_run_compares_two_processes_with_one(bench, tmp_path, capsys):
    bench.main(["--tiny", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = {row["run"]: row for row in summary["rows"]}
    assert list(rows) == ["1gpu", "ddp2"]
    assert rows["ddp2"]["batch"] == "4 x 2" and rows["1gpu"]["batch"] == "8 x 1"
    # Same global batches in the same order: the curves agree far below the batch noise.
    assert rows["ddp2"]["max_gap"] < 1e-4 < rows["1gpu"]["noise"]
    assert len(summary["runs"][1]["losses"]) == 8 and all(r["tokens_per_s"] > 0 for r in summary["runs"])
    assert "ddp2: loss curve within the 1gpu step-to-step noise" in out
    assert (tmp_path / "summary.md").read_text().count("\n| ") == 3  # the header and two runs
    assert (tmp_path / "loss_curves.png").stat().st_size > 5000


def test_distance_to_the_first_run_and_speedup(bench):
    runs = [dict(name="1gpu", devices=1, strategy="auto", batch_per_device=8, tokens_per_s=100.0,
                 losses=[3.0, 2.9, 2.95, 2.7]),
            dict(name="ddp2", devices=2, strategy="ddp", batch_per_device=4, tokens_per_s=190.0,
                 losses=[3.0, 2.91, 2.95, 2.69])]
    rows = bench.compare_runs(runs)
    assert rows[1]["speedup"] == pytest.approx(1.9)
    assert rows[1]["max_gap"] == pytest.approx(0.01) and rows[1]["mean_gap"] == pytest.approx(0.005)
    assert rows[0]["noise"] == pytest.approx(0.1)  # median of 0.1, 0.05, 0.25
