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


def test_in_model_shapes_are_valid_launches_that_match_the_reference(tuning):
    shapes = tuning.in_model_shapes()
    assert len(shapes) == len(set(shapes)) and {rows for rows, _, _ in shapes} == {1, 2, 4, 8, 16}
    inputs = tuning.model_step_inputs(9, torch.float32, device="cpu", dim=128)
    ref_state = inputs["state"].clone()
    y_ref = tuning.selective_state_update_reference(**{**inputs, "state": ref_state})
    for rows, block_d, warps in shapes:
        assert rows * block_d * tuning.N_STATE in (512, 1024, 2048) and block_d >= 2
        state = inputs["state"].clone()
        y = tuning.run({**inputs, "state": state}, block_d=block_d, num_warps=warps, block_b=rows)
        assert tuning.rel_err(y, y_ref) < 1e-2 and tuning.rel_err(state, ref_state) < 1e-5
