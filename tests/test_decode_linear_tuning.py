"""benchmarks/decode_linear_tuning.py: the launches it tries for each product pass its
check against F.linear (here on the CPU, under Triton's interpreter), and in_proj is among its choices
only where the decode step runs it as a product of its own. And every decode
tuning script refuses to run without CUDA, with a usage error rather than a traceback."""
from __future__ import annotations

import sys

import pytest
import torch
from bench_modules import benchmark_module


@pytest.mark.parametrize("n", [80, 768, 3072, 50280])
def test_candidate_launches_pass_the_check(n):
    with benchmark_module("decode_linear_tuning") as tuning:
        launches = tuning.candidates(3, n)
        assert None in launches and len(launches) == len(set(launches))
        if n != tuning.HEAD_N:
            assert any(len(launch) == 6 for launch in launches if launch)  # splits of K are among them
        for launch in launches:
            if launch is not None:
                assert launch[0] == 16
                assert tuning.check(launch, 3, 40, k=300, device="cpu") < 1e-2


def test_in_proj_is_a_product_only_where_it_runs_alone():
    with benchmark_module("decode_linear_tuning") as tuning:
        assert tuning.IN_PROJ_N not in tuning.widths(tuning.FUSED_MAX_BATCH)
        assert tuning.IN_PROJ_N in tuning.widths(tuning.FUSED_MAX_BATCH + 1)
        assert tuning.widths(1)[-1] == tuning.widths(64)[-1] == tuning.HEAD_N
        assert tuning.describe((64, 32, 256, 4, 3, 6)) == "M64 N32 K256 w4 s3 split 6"
        assert tuning.describe(None) == "cuBLAS"


@pytest.mark.parametrize("script", ["decode_linear_tuning", "proj_conv_tuning", "state_update_tuning"])
def test_tuning_scripts_refuse_to_run_without_cuda(script, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", [f"{script}.py"])
    with benchmark_module(script) as tuning, pytest.raises(SystemExit) as info:
        tuning.main()
    assert info.value.code == 2
