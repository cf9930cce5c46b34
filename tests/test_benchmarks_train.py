"""The training benchmark runs on the CPU in its tiny mode, so it cannot rot between GPU runs.

Also: out-of-memory is reported and ends a variant's length sweep, a first-loss
disagreement between seqmamba and mamba_ssm fails the run, and the Transformer
reference is causal.
"""
from __future__ import annotations

import importlib.util
import json
import math
import pathlib
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return load("bench_train")


@pytest.fixture
def one_thread():
    """Tiny matmuls run faster on one thread than on cores other work also uses."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tiny_cpu_run_prints_a_table_and_writes_json(bench, tmp_path, capsys, one_thread):
    out = tmp_path / "train.json"
    argv = ["--device", "cpu", "--tiny", "--long-exponents", "5,7", "--length", "17", "--steps", "1", "--out", str(out)]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("| section"))
    assert [c.strip() for c in header.strip("|").split("|")][2:6] == ["batch x L", "tokens/s", "step ms", "peak GiB"]
    records = {(r["section"], r["name"], r["length"]): r for r in json.loads(out.read_text())["records"]}
    assert records["lm", "mamba_ssm", 17]["status"] == "skipped: mamba_ssm runs on CUDA only"
    for name in ("seqmamba, CUDA graph", "seqmamba, graphed forward and backward"):
        assert records["lm", name, 17]["status"] == "skipped: CUDA graphs run on CUDA only"
    lm_names = (
        "seqmamba", "seqmamba, labels checked on the host", "seqmamba recompute", "seqmamba, logits loss",
        "transformer (2L d32 2h)",
    )
    long_keys = [("long", name, 2**e) for name in bench.LONG_VARIANTS for e in (5, 7)]
    for key in [("lm", name, 17) for name in lm_names] + long_keys:
        r = records[key]
        assert r["status"] == "ok", key
        assert r["tokens_per_s"] > 0 and r["step_ms"] > 0 and r["peak_gib"] is None, key
        assert math.isfinite(r["first_loss"]) and math.isfinite(r["last_loss"]), key
    # The recomputing mixer trains the same model: same losses from the same weights.
    plain, recompute = records["lm", "seqmamba", 17], records["lm", "seqmamba recompute", 17]
    assert recompute["first_loss"] == pytest.approx(plain["first_loss"], rel=1e-3)
    assert recompute["last_loss"] == pytest.approx(plain["last_loss"], rel=1e-3)
    # Skipping the GPU-side label check changes nothing but the wait.
    host_checked = records["lm", "seqmamba, labels checked on the host", 17]
    assert host_checked["first_loss"] == plain["first_loss"] and host_checked["last_loss"] == plain["last_loss"]
    # The fused loss is the logits' cross-entropy.
    logits = records["lm", "seqmamba, logits loss", 17]
    assert logits["first_loss"] == pytest.approx(plain["first_loss"], rel=1e-5)
    assert logits["last_loss"] == pytest.approx(plain["last_loss"], rel=1e-3)
    assert records["lm", "seqmamba", 17]["first_loss"] == pytest.approx(math.log(64), rel=0.1)


def test_out_of_memory_is_reported_and_ends_the_variant(bench, monkeypatch, capsys):
    def train(case, settings):
        if case.length > 2**6:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return bench.Record(case.section, case.name, case.batch, case.length, "ok", 1.0, case.length / 1e-3, None, 1, 1)

    monkeypatch.setattr(bench, "train", train)
    args = bench.parse_args(["--device", "cpu", "--tiny", "--long-exponents", "5,7,8"])
    records = bench.run_long(args, bench.Settings(device="cpu", autocast=False, warmup=1, steps=1))
    statuses = [(r.name, r.length, r.status) for r in records]
    for name in bench.LONG_VARIANTS:
        assert (name, 32, "ok") in statuses
        assert (name, 128, "OOM") in statuses
        assert (name, 256, "skipped: OOM at L=2^7") in statuses
    assert "1x128: OOM" in capsys.readouterr().out


def test_a_failing_case_is_reported_and_fails_the_run(bench, monkeypatch, capsys):
    def train(case, settings):
        raise RuntimeError("expected m1 and m2 to have the same dtype\nmore detail")

    monkeypatch.setattr(bench, "train", train)
    assert bench.main(["--device", "cpu", "--tiny", "--sections", "lm"]) == 1
    captured = capsys.readouterr()
    assert "failed: RuntimeError: expected m1 and m2 to have the same dtype |" in captured.out
    assert "failed: lm seqmamba 2x64" in captured.err


def test_first_loss_disagreement_fails(bench):
    def record(name, first_loss):
        return bench.Record("lm", name, 1, 8, "ok", 1.0, 8.0, None, first_loss, first_loss)

    assert bench.first_losses_agree([record("seqmamba", 10.8), record("mamba_ssm", 10.81)])
    assert not bench.first_losses_agree([record("seqmamba", 10.8), record("mamba_ssm", 11.3)])
    assert bench.first_losses_agree([record("seqmamba", 10.8)])  # nothing to compare with


def test_unknown_section_is_a_usage_error(bench, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--device", "cpu", "--sections", "lm,decode"])
    assert "unknown ['decode']" in capsys.readouterr().err


def test_transformer_reference_is_causal_and_uses_positions():
    neox = load("gpt_neox")
    torch.manual_seed(0)
    model = neox.NeoXLM(neox.NeoXConfig(vocab_size=50, d_model=32, n_layer=2, n_head=2))
    ids = torch.randint(0, 50, (2, 13))
    changed = ids.clone()
    changed[:, 7] = (ids[:, 7] + 1) % 50
    with torch.no_grad():
        before, after = model(ids), model(changed)
        torch.testing.assert_close(after[:, :7], before[:, :7])
        assert (after[:, 7:] - before[:, 7:]).abs().amax() > 1e-4

    # Rotary embeddings: the attention score of a query and a key depends on their offset only.
    cos, sin = neox.rotary_tables(12, 8, 10000.0, torch.device("cpu"))
    q, k = torch.randn(2, 16), torch.randn(2, 16)

    def score(m: int, n: int) -> torch.Tensor:
        qm = neox.apply_rotary(q[None, None, None, 0], cos[m : m + 1], sin[m : m + 1])
        kn = neox.apply_rotary(k[None, None, None, 0], cos[n : n + 1], sin[n : n + 1])
        return (qm * kn).sum()

    torch.testing.assert_close(score(5, 2), score(9, 6))
    assert (score(5, 2) - score(5, 4)).abs() > 1e-4


def test_profile_prints_the_costliest_operators(bench, capsys, one_thread):
    argv = ["--device", "cpu", "--tiny", "--sections", "lm", "--length", "17", "--steps", "1", "--profile", "5"]
    assert bench.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  profile of one seqmamba step:"))
    assert lines[start + 1].split()[:3] == ["ms", "calls", "operator"]
    rows = lines[start + 2 : start + 7]
    assert len(rows) == 5 and all(float(row.split()[0]) > 0 and int(row.split()[1]) > 0 for row in rows)
    times = [float(row.split()[0]) for row in rows]
    assert times == sorted(times, reverse=True)


def test_long_variants_are_chosen_by_key(bench, monkeypatch):
    def train(case, settings):
        return bench.Record(case.section, case.name, case.batch, case.length, "ok", 1.0, case.length / 1e-3, None, 1, 1)

    monkeypatch.setattr(bench, "train", train)
    args = bench.parse_args(["--device", "cpu", "--tiny", "--long-exponents", "5", "--long-variants", "chunked,plain"])
    records = bench.run_long(args, bench.Settings(device="cpu", autocast=False, warmup=1, steps=1))
    assert [r.name for r in records] == ["seqmamba chunked", "seqmamba"]
    with pytest.raises(SystemExit):
        bench.parse_args(["--device", "cpu", "--long-variants", "checkpoint,fast"])
