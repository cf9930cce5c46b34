"""benchmarks/decode_linear_tuning.py: the launch shapes it tries for out_proj pass its
check against F.linear (here on the CPU, under Triton's interpreter). And every decode
tuning script refuses to run without CUDA, with a usage error rather than a traceback."""
from __future__ import annotations

import sys

import pytest
import torch
from bench_modules import benchmark_module


def test_out_proj_launch_shapes_pass_the_check():
    with benchmark_module("decode_linear_tuning") as tuning:
        shapes = tuning.out_proj_launches(3)
        assert len(shapes) == len(set(shapes)) and all(s[0] == 16 for s in shapes)
        for launch in shapes:
            assert tuning.check(launch, 3, 40, k=72, device="cpu") < 1e-2


@pytest.mark.parametrize("script", ["decode_linear_tuning", "proj_conv_tuning", "state_update_tuning"])
def test_tuning_scripts_refuse_to_run_without_cuda(script, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", [f"{script}.py"])
    with benchmark_module(script) as tuning, pytest.raises(SystemExit) as info:
        tuning.main()
    assert info.value.code == 2
