"""benchmarks/proj_conv_tuning.py: the launch shapes it sweeps, each checked against the
reference before it is timed (here on the CPU, under Triton's interpreter), and the
unfused steps it times as baselines."""
from __future__ import annotations

import sys

import pytest
import torch
from bench_modules import benchmark_module

from seqmamba.kernels import norm_proj_conv_update


@pytest.fixture(scope="module")
def tuning():
    with benchmark_module("proj_conv_tuning") as module:
        yield module


def test_launch_shapes_pass_the_check(tuning):
    shapes = tuning.launch_shapes(16)
    assert len(shapes) == len(set(shapes)) == 36 and all(s[0] == 16 for s in shapes)
    for launch in (shapes[0], shapes[-1]):  # the smallest and the largest tiles
        assert tuning.check_launch(launch, 3, device="cpu", dim=40, k=72) < 1e-2


def test_the_baselines_equal_the_fused_op():
    gen = torch.Generator().manual_seed(0)
    x, residual, norm_weight = torch.randn(2, 24, generator=gen), torch.randn(2, 24, generator=gen), torch.rand(24) + 0.5
    weight = torch.randn(32, 24, generator=gen)
    state, taps = torch.randn(2, 16, 4, generator=gen), torch.randn(16, 4, generator=gen)
    fused_state = state.clone()
    want = norm_proj_conv_update(x, residual, norm_weight, weight, fused_state, taps, activation="silu",
                                 residual_in_fp32=True)
    with benchmark_module("proj_conv_tuning") as module:
        for baseline in (module.split_step, module.norm_apart_step):
            baseline_state = state.clone()
            got = baseline(x, residual, norm_weight, weight, baseline_state, taps, activation="silu",
                           residual_in_fp32=True)
            torch.testing.assert_close((*got, baseline_state), (*want, fused_state))


def test_refuses_to_run_without_cuda(tuning, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["proj_conv_tuning.py"])
    with pytest.raises(SystemExit):
        tuning.main()
