"""benchmarks/proj_conv_tuning.py: the launch shapes it sweeps, each checked against the
reference before it is timed (here on the CPU, under Triton's interpreter), and the
two-kernel step it times as the baseline."""
from __future__ import annotations


import pytest
import torch
from bench_modules import benchmark_module

from seqmamba.kernels import proj_conv_update


@pytest.fixture(scope="module")
def tuning():
    with benchmark_module("proj_conv_tuning") as module:
        yield module


def test_launch_shapes_pass_the_check(tuning):
    shapes = tuning.launch_shapes(16)
    assert len(shapes) == len(set(shapes)) == 36 and all(s[0] == 16 for s in shapes)
    for launch in (shapes[0], shapes[-1]):  # the smallest and the largest tiles
        assert tuning.check_launch(launch, 3, device="cpu", dim=40, k=72) < 1e-2


def test_the_split_baseline_equals_the_fused_op():
    gen = torch.Generator().manual_seed(0)
    hidden, weight = torch.randn(2, 24, generator=gen), torch.randn(32, 24, generator=gen)
    state, taps = torch.randn(2, 16, 4, generator=gen), torch.randn(16, 4, generator=gen)
    with benchmark_module("proj_conv_tuning") as module:
        split_state, fused_state = state.clone(), state.clone()
        x_split, z_split = module.split_step(hidden, weight, split_state, taps, activation="silu")
    x, z = proj_conv_update(hidden, weight, fused_state, taps, activation="silu")
    torch.testing.assert_close((x_split, z_split, split_state), (x, z, fused_state))
