"""benchmarks/decode_linear_tuning.py: the launch shapes it tries for out_proj pass its
check against F.linear (here on the CPU, under Triton's interpreter); it needs CUDA to time."""
from __future__ import annotations

import sys

import pytest
import torch
from bench_modules import benchmark_module


@pytest.fixture(scope="module")
def tuning():
    with benchmark_module("decode_linear_tuning") as module:
        yield module


def test_out_proj_launch_shapes_pass_the_check(tuning):
    shapes = tuning.out_proj_launches(3)
    assert len(shapes) == len(set(shapes)) and all(s[0] == 16 for s in shapes)
    for launch in shapes:
        assert tuning.check(launch, 3, 40, k=72, device="cpu") < 1e-2


def test_refuses_to_run_without_cuda(tuning, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["decode_linear_tuning.py"])
    with pytest.raises(SystemExit):
        tuning.main()
