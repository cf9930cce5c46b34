"""The selective-scan benchmark runs on the CPU (reference only) and its checks can fail.

Keeps benchmarks/bench_scan.py from rotting between GPU runs: its smallest
configuration runs here, and a deliberately wrong implementation must be flagged.
"""
from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import pytest
import torch
from bench_modules import benchmark_module

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    with benchmark_module("bench_scan") as module:
        yield module


def test_cpu_smoke_run_writes_table_and_json(bench, tmp_path, capsys):
    out = tmp_path / "scan.json"
    assert bench.main(["--device", "cpu", "--shapes", "tiny", "--impls", "reference", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| batch, D, L, N | impl | fwd ms |" in printed
    result = json.loads(out.read_text())
    (rec,) = result["records"]
    assert rec["impl"] == "reference" and tuple(rec["shape"]) == bench.SHAPES["tiny"]
    assert rec["fwd_ms"] > 0 and rec["fwdbwd_ms"] > 0
    assert rec["fwd_gbps"] == pytest.approx(bench.forward_bytes(bench.SHAPES["tiny"]) / rec["fwd_ms"] / 1e6)
    assert result["environment"]["device"] == "cpu"


def test_unavailable_implementations_are_skipped_with_a_reason(bench, capsys):
    assert bench.main(["--device", "cpu", "--shapes", "tiny", "--impls", "mamba_ssm,reference", "--modes", "fwd"]) == 0
    assert "skipping mamba_ssm: mamba_ssm runs on CUDA only" in capsys.readouterr().out


def test_nothing_available_fails(bench, capsys):
    assert bench.main(["--device", "cpu", "--shapes", "tiny", "--impls", "mamba_ssm"]) == 1
    assert "nothing to run" in capsys.readouterr().err


def _gradient_off(bench):
    """Right forward, wrong du: adds 0.1 * grad_out to u's gradient."""

    def run(x):
        return bench.run_reference(x) + 0.1 * (x.u - x.u.detach())

    return run


@pytest.mark.parametrize(
    "make_impl, ok",
    [
        (lambda bench: bench.run_reference, True),
        (lambda bench: lambda x: bench.run_reference(x) * 1.05, False),
        (_gradient_off, False),
    ],
    ids=["same-function", "forward-off-5pct", "gradient-off"],
)
def test_check_against_reference_flags_wrong_implementations(bench, monkeypatch, tmp_path, make_impl, ok):
    monkeypatch.setitem(bench.RUNNERS, "ours", make_impl(bench))
    out = tmp_path / "scan.json"
    argv = ["--device", "cpu", "--shapes", "3x8x29x4", "--impls", "ours,reference", "--modes", "fwd", "--out", str(out)]
    assert bench.main(argv) == (0 if ok else 1)
    ours = next(r for r in json.loads(out.read_text())["records"] if r["impl"] == "ours")
    assert ours["ok"] is ok
    assert (ours["fwd_err"] <= bench.FWD_TOL and ours["grad_err"] <= bench.GRAD_TOL) is ok


def test_forward_only_implementation_is_checked_and_timed_forward_only(bench, monkeypatch, tmp_path, capsys):
    # A kernel without a backward yet (its output does not require grad).
    monkeypatch.setitem(bench.RUNNERS, "ours", lambda x: bench.run_reference(x).detach())
    out = tmp_path / "scan.json"
    argv = ["--device", "cpu", "--shapes", "2x8x21x4", "--impls", "ours,reference", "--out", str(out)]
    assert bench.main(argv) == 0
    assert "checking and timing the forward only" in capsys.readouterr().out
    ours = next(r for r in json.loads(out.read_text())["records"] if r["impl"] == "ours")
    assert ours["ok"] and ours["grad_err"] is None and ours["fwd_err"] <= bench.FWD_TOL
    assert ours["fwd_ms"] > 0 and "fwdbwd_ms" not in ours


def test_rows_with_other_launch_shapes_run_our_scan_with_them(bench, monkeypatch, tmp_path):
    """--ours-launch FWD/BWD,...: one more row of our scan per pair, run (checked and timed)
    with those launch shapes; the other rows, and everything after, with the defaults'."""
    from seqmamba.kernels.selective_scan import triton_bwd, triton_fwd

    defaults = triton_fwd.fwd_config, triton_bwd.bwd_config
    in_effect = []

    def ours(x):  # the reference's numbers; records the launch shapes a kernel would get
        in_effect.append((triton_fwd.fwd_config(2, 8, 4, length=29), triton_bwd.bwd_config(2, 8, 4, length=29)))
        return bench.run_reference(x)

    monkeypatch.setitem(bench.RUNNERS, "ours", ours)
    out = tmp_path / "scan.json"
    argv = ["--device", "cpu", "--shapes", "2x8x29x4", "--impls", "ours", "--ours-launch", "/4x8x1a,16x8x1pa/",
            "--out", str(out)]
    assert bench.main(argv) == 0
    records = json.loads(out.read_text())["records"]
    assert [r["impl"] for r in records] == ["ours", "ours[/4x8x1a]", "ours[16x8x1pa/]"]
    assert all(r["ok"] and r["fwd_ms"] > 0 and r["fwdbwd_ms"] > 0 for r in records)
    default = defaults[0](2, 8, 4, length=29), defaults[1](2, 8, 4, length=29)
    fwd_named = triton_fwd.FwdConfig(16, 8, 1, prefetch=True, delta_ahead=True)
    bwd_named = triton_bwd.BwdConfig(4, 8, 1, delta_ahead=True)
    assert set(in_effect) == {default, (default[0], bwd_named), (fwd_named, default[1])}
    assert (triton_fwd.fwd_config, triton_bwd.bwd_config) == defaults


def test_inputs_are_random_and_shaped_like_a_trained_layer(bench):
    x = bench.make_inputs((2, 16, 37, 8), "cpu", seed=3)
    assert x.u.shape == x.delta.shape == x.z.shape == (2, 16, 37)
    assert x.B.shape == x.C.shape == (2, 8, 37)
    assert all(t.count_nonzero() == t.numel() for t in (x.A, x.D, x.delta_bias))
    assert (x.A < 0).all()
    dt = bench.torch.nn.functional.softplus(x.delta_bias)
    assert ((dt > 0.9e-3) & (dt < 0.11)).all()


@pytest.mark.parametrize("flag", [["--shapes", "2x3x4"], ["--impls", "cuda_scan"], ["--modes", "bwd"],
                                  ["--ours-launch", "autoa"], ["--ours-launch", "autoa/8x8"], ["--profile", "5"]])
def test_bad_flags_exit_with_a_message(bench, flag, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--device", "cpu", *flag])
    assert "error:" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="ranks CUDA kernels")
def test_profile_ranks_the_kernels_of_a_forward_backward(bench, capsys):
    assert bench.main(["--shapes", "2x64x300x16", "--impls", "ours", "--modes", "fwdbwd", "--profile", "4"]) == 0
    printed = capsys.readouterr().out
    assert "one forward + backward of ours at (2, 64, 300, 16):" in printed
    assert "_bwd_kernel" in printed and "_fwd_kernel" in printed


@pytest.fixture(scope="module")
def bench_step():
    # The script imports its timing helpers from bench_scan, as it does when run from benchmarks/.
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("bench_state_update", ROOT / "benchmarks" / "bench_state_update.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def test_state_update_benchmark_cpu_smoke_run(bench_step, tmp_path, capsys):
    out = tmp_path / "step.json"
    argv = ["--device", "cpu", "--batches", "1,3", "--dim", "24", "--n-state", "4", "--impls", "reference",
            "--out", str(out)]
    assert bench_step.main(argv) == 0
    assert "| batch, D, N | impl | eager us |" in capsys.readouterr().out
    records = json.loads(out.read_text())["records"]
    assert [r["batch"] for r in records] == [1, 3]
    assert all(r["ok"] and r["eager_us"] > 0 for r in records)


def test_state_update_benchmark_flags_a_wrong_step(bench_step, monkeypatch, tmp_path):
    def off(inputs):
        y = bench_step.run_reference(inputs)
        inputs["state"].mul_(1.05)
        return y

    monkeypatch.setitem(bench_step.RUNNERS, "ours", off)
    out = tmp_path / "step.json"
    argv = ["--device", "cpu", "--batches", "2", "--dim", "16", "--n-state", "4", "--impls", "ours,reference",
            "--out", str(out)]
    assert bench_step.main(argv) == 1
    ours = next(r for r in json.loads(out.read_text())["records"] if r["impl"] == "ours")
    assert not ours["ok"] and ours["state_err"] > bench_step.TOL and ours["y_err"] == 0


def test_scan_tuning_parses_launch_shapes():
    """benchmarks/scan_tuning.py's launch-shape strings, auto[letters] or
    BLOCKDxCHUNKxWARPS[xSEGLEN][letters] (a GPU-only script)."""
    with benchmark_module("scan_tuning") as tuning:
        check_launch_shape_strings(tuning)


def check_launch_shape_strings(tuning) -> None:
    from seqmamba.kernels.selective_scan.triton_bwd import BwdConfig
    from seqmamba.kernels.selective_scan.triton_fwd import FwdConfig

    assert tuning.parse_config(FwdConfig, "auto") is None
    assert tuning.parse_config(FwdConfig, "16x16x1p") == FwdConfig(16, 16, 1, prefetch=True)
    assert tuning.parse_config(FwdConfig, "32x8x1x2048") == FwdConfig(32, 8, 1, seg_len=2048)
    assert tuning.parse_config(BwdConfig, "8x8x1x2048") == BwdConfig(8, 8, 1, seg_len=2048)
    assert tuning.parse_config(BwdConfig, "8x4x1") == BwdConfig(8, 4, 1)
    assert tuning.parse_config(BwdConfig, "16x4x1x1024s") == BwdConfig(16, 4, 1, seg_len=1024, scattered_sums=True)
    # 'auto' with letters: the defaults' choice for the inputs, changed.
    auto_s = tuning.parse_config(BwdConfig, "autos")
    chosen = tuning.resolve(auto_s, lambda: BwdConfig(8, 8, 1, seg_len=3072))
    assert chosen == BwdConfig(8, 8, 1, seg_len=3072, scattered_sums=True)
    assert tuning.resolve(None, lambda: BwdConfig(8, 8, 1)) is None
    assert tuning.variant_name("bwd", auto_s) == "bwd auto +s" and tuning.variant_name("fwd", None) == "fwd auto"
    assert tuning.variant_name("fwd", FwdConfig(16, 16, 1, seg_len=2048, prefetch=True)) == "fwd bd16 T16 w1 S2048 pf"
    # '@REGS' caps the registers; 'a' makes each chunk's delta an iteration ahead, 'n' next to its use.
    assert tuning.parse_config(FwdConfig, "8x16x1pa@128") == FwdConfig(8, 16, 1, prefetch=True, maxnreg=128,
                                                                       delta_ahead=True)
    capped = tuning.parse_config(BwdConfig, "auto@168")
    assert tuning.resolve(capped, lambda: BwdConfig(8, 8, 1)) == BwdConfig(8, 8, 1, maxnreg=168)
    assert tuning.variant_name("bwd", capped) == "bwd auto r168"
    assert tuning.variant_name("fwd", tuning.parse_config(FwdConfig, "autoa")) == "fwd auto +a"
    assert tuning.parse_config(FwdConfig, "auton").changes == (("delta_ahead", False),)
    assert tuning.variant_name("fwd", tuning.parse_config(FwdConfig, "auton")) == "fwd auto +n"


def test_host_benchmark_cpu_smoke_run(capsys):
    spec = importlib.util.spec_from_file_location("bench_host", ROOT / "benchmarks" / "bench_host.py")
    bench_host = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_host)
    assert bench_host.main(["--device", "cpu", "--tiny", "--calls", "2"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split("|")[1].strip() for r in rows] == [
        "selective_scan fwd", "selective_scan fwd+bwd", "causal_conv1d fwd", "causal_conv1d fwd+bwd",
        "rms_norm fwd", "rms_norm fwd+bwd",
    ]
    for row in rows:
        host, done = (float(v) for v in row.split("|")[2:4])
        assert 0 < host <= done
