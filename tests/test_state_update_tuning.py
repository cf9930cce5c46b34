"""benchmarks/state_update_tuning.py checks every launch shape it times against the
reference (here on the CPU, under Triton's interpreter, with a stand-in timer)."""
from __future__ import annotations


import pytest
import torch
from bench_modules import benchmark_module


@pytest.fixture(scope="module")
def tuning():
    with benchmark_module("state_update_tuning") as module:
        yield module


def test_every_launch_shape_is_checked_and_timed(tuning, capsys):
    timed = []

    def timer(fn):
        fn()
        timed.append(fn)
        return float(len(timed))  # the first shape is the "fastest"

    timings = tuning.sweep(3, torch.float32, 2, device="cpu", dim=40, timer=timer)
    shapes = tuning.launch_shapes(40)
    assert shapes and [cfg for _, cfg, _ in timings] == shapes and len(timed) == len(shapes)
    assert all(block_d <= 40 and block_d * tuning.N_STATE >= 128 * warps for block_d, warps in shapes)
    # bf16 inputs and output against the float32 reference: within bf16's rounding.
    assert all(err < 1e-2 for _, _, err in timings)
    printed = capsys.readouterr().out
    assert printed.startswith("batch 3, state fp32, one step from a CUDA graph: rule (") and "BLOCK_D   16" in printed
