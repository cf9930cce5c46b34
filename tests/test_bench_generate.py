"""benchmarks/bench_generate.py runs its tiny CPU mode, reports what it promises, and
refuses to time a decoder whose cached path disagrees with its full forward."""
from __future__ import annotations

import json

import pytest
from bench_modules import benchmark_module


@pytest.fixture(scope="module")
def bench():
    with benchmark_module("bench_generate") as module:
        yield module


def test_tiny_cpu_run_reports_speed_and_decode_state(bench, tmp_path, capsys):
    out = tmp_path / "generate.json"
    assert bench.main(["--device", "cpu", "--tiny", "--repeats", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "skipping mamba_ssm: mamba_ssm runs on CUDA only" in printed
    assert "decode state per sequence: Mamba 6.0 KiB at any context length; Transformer 512 B per token" in printed
    records = json.loads(out.read_text())["records"]
    workloads = bench.WORKLOADS["tiny"]
    assert [(r["batch"], r["prompt"], r["new"]) for r in records[::3]] == workloads
    assert [r["impl"] for r in records] == ["ours", "ours_lowp", "transformer"] * len(workloads)
    ours = [r for r in records if r["impl"] == "ours"]
    theirs = [r for r in records if r["impl"] == "transformer"]
    # Mamba: conv windows (fp32, 2 layers x 64 channels x 4) and SSM states (2 x 64 x 8, fp32).
    assert {r["state_bytes_per_seq"] for r in ours} == {2 * (64 * 4 * 4 + 64 * 8 * 4)}
    # Transformer: keys and values, 2 layers x 32 features x fp32, per token of context.
    assert [r["state_bytes_per_seq"] for r in theirs] == [2 * 2 * 32 * 4 * (p + n) for _, p, n in workloads]
    assert all(r["prefill_ms"] > 0 for r in records)
    assert all(r["tokens_per_s"] > 0 and r["ms_per_step"] > 0 for r in records if "tokens_per_s" in r)


def test_state_in_the_model_dtype_halves_the_ssm_state(bench, tmp_path):
    """ours_lowp keeps the SSM states in bf16, as mamba_ssm's cache does; ours in fp32."""
    out = tmp_path / "generate.json"
    argv = ["--device", "cpu", "--tiny", "--dtype", "bf16", "--repeats", "1", "--impls", "ours,ours_lowp",
            "--workloads", "2x5x3", "--out", str(out)]
    assert bench.main(argv) == 0
    state = {r["impl"]: r["state_bytes_per_seq"] for r in json.loads(out.read_text())["records"]}
    conv = 2 * 64 * 4 * 2  # 2 layers x 64 channels x 4 taps, bf16
    assert state == {"ours": conv + 2 * 64 * 8 * 4, "ours_lowp": conv + 2 * 64 * 8 * 2}


def test_workloads_option_and_a_wrong_decoder_is_refused(bench, monkeypatch, capsys):
    assert bench.main(["--device", "cpu", "--tiny", "--repeats", "1", "--impls", "ours",
                       "--workloads", "2x5x3"]) == 0
    assert "|     2 |      5 |   3 | ours |" in capsys.readouterr().out

    real_step = bench.decode_step
    monkeypatch.setattr(bench, "decode_step", lambda model, ids, cache: real_step(model, ids, cache) * 1.01)
    assert bench.main(["--device", "cpu", "--tiny", "--impls", "ours,transformer"]) == 1
    err = capsys.readouterr().err
    assert "MISMATCH: ours: relative error" in err and "transformer" not in err


def test_bad_arguments_exit_with_a_usage_error(bench):
    for argv in (["--workloads", "1x2"], ["--impls", "ours,gpt"], ["--repeats", "0"], ["--workloads", "1x4x1"]):
        with pytest.raises(SystemExit) as info:
            bench.main(["--device", "cpu", "--tiny", *argv])
        assert info.value.code == 2
    assert bench.parse_args(["--device", "cpu", "--tiny"]).dtype == "fp32"


def test_profile_is_refused_without_cuda(bench):
    with pytest.raises(SystemExit) as info:
        bench.main(["--device", "cpu", "--tiny", "--profile", "5"])
    assert info.value.code == 2


def test_profiled_steps_continue_the_prompt(bench):
    """Each implementation's --profile step is one decode step after the prefilled prompt:
    its logits are the full forward's at the next position."""
    import torch

    from seqmamba.models import MambaLM

    torch.manual_seed(0)
    mamba = MambaLM(bench.MAMBA["tiny"]).eval()
    transformer = bench.Transformer(bench.TRANSFORMER["tiny"], max_len=16).eval()
    ids = torch.randint(0, 60, (3, 9))
    longer = torch.cat([ids, ids[:, -1:]], dim=1)
    impls = {"ours": (bench.mamba_impl(mamba), mamba), "ours_lowp": (bench.mamba_impl(mamba, None), mamba),
             "transformer": (bench.transformer_impl(transformer, 1), transformer)}
    with torch.inference_mode():
        for name, (impl, model) in impls.items():
            logits = impl.step(ids)()
            expected = model(longer)[:, -1]
            assert bench.rel_err(logits[:, : expected.shape[-1]], expected) < 1e-5, name


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="profiles CUDA kernels")
def test_profile_prints_the_decode_step_kernels(bench, capsys):
    assert bench.main(["--tiny", "--impls", "ours", "--workloads", "2x5x3", "--repeats", "1", "--profile", "10"]) == 0
    printed = capsys.readouterr().out
    assert "one eager decode step of ours at batch 2:" in printed
    assert "_selective_state_update_kernel" in printed


def test_transformer_greedy_generation_equals_rerunning_its_forward(bench):
    """The baseline's decoder (its step taking its own argmax and advancing its position)
    continues a prompt as greedy decoding with the full forward does, twice in a row
    (the kept decoder starts again from a fresh prefill)."""
    import torch

    torch.manual_seed(1)
    model = bench.Transformer(bench.TRANSFORMER["tiny"], max_len=32).eval()
    prompt = torch.randint(0, 60, (2, 7))
    expected = prompt
    with torch.inference_mode():
        for _ in range(6):
            expected = torch.cat([expected, model(expected)[:, -1].argmax(-1, keepdim=True)], dim=1)
        generate = bench.TransformerGreedy(model)
        assert torch.equal(generate(prompt, 6), expected)
        assert torch.equal(generate(prompt, 6), expected)
        assert len(generate.decoders) == 1


def test_torch_argmax_in_the_greedy_steps_gives_the_same_generations(bench, tmp_path, capsys):
    """--argmax torch: both models' greedy steps take torch's argmax instead of the
    default row_argmax (on the CPU its reference); the generated tokens are the same,
    and the switch is undone afterwards."""
    import torch

    from seqmamba.kernels import row_argmax
    from seqmamba.models import graphs

    assert graphs.argmax_into is row_argmax
    seen = []
    real = graphs.torch_argmax_into

    def counting(x, out):
        seen.append(x.shape)
        return real(x, out)

    bench.ARGMAX["torch"] = counting
    try:
        assert bench.main(["--device", "cpu", "--tiny", "--repeats", "1", "--workloads", "2x5x6",
                           "--impls", "ours,transformer", "--argmax", "torch"]) == 0
    finally:
        bench.ARGMAX["torch"] = real
    assert seen and graphs.argmax_into is row_argmax
    torch.manual_seed(2)
    mamba = bench.MambaLM(bench.MAMBA["tiny"]).eval()
    prompt = torch.randint(0, 60, (2, 5))
    with torch.inference_mode():
        want = mamba.generate(prompt, 6, temperature=0)
        graphs.argmax_into = real
        try:
            got = mamba.generate(prompt, 6, temperature=0)
        finally:
            graphs.argmax_into = row_argmax
    assert torch.equal(got, want)
