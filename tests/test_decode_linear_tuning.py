"""benchmarks/decode_linear_tuning.py: the launch shapes it tries for the wide products pass its
check against F.linear (here on the CPU, under Triton's interpreter), and in_proj is among its choices
only where the decode step runs it as a product of its own. And every decode
tuning script refuses to run without CUDA, with a usage error rather than a traceback."""
from __future__ import annotations

import sys

import pytest
import torch
from bench_modules import benchmark_module


def test_wide_launch_shapes_pass_the_check():
    with benchmark_module("decode_linear_tuning") as tuning:
        shapes = tuning.wide_launches(3)
        assert len(shapes) == len(set(shapes)) and all(s[0] == 16 for s in shapes)
        for launch in shapes:
            assert tuning.check(launch, 3, 40, k=72, device="cpu") < 1e-2


def test_in_proj_is_a_choice_only_where_it_runs_alone():
    with benchmark_module("decode_linear_tuning") as tuning:
        def widths(batch):
            return {n for _, launches in tuning.choices(batch) for n in launches}

        assert tuning.IN_PROJ_N not in widths(tuning.FUSED_MAX_BATCH)
        assert tuning.IN_PROJ_N in widths(tuning.FUSED_MAX_BATCH + 1)
        # every choice that names in_proj leaves the other two products to the rule
        assert all(set(launches) == {tuning.IN_PROJ_N} for label, launches in tuning.choices(64) if "in_proj" in label)


@pytest.mark.parametrize("script", ["decode_linear_tuning", "proj_conv_tuning", "state_update_tuning"])
def test_tuning_scripts_refuse_to_run_without_cuda(script, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", [f"{script}.py"])
    with benchmark_module(script) as tuning, pytest.raises(SystemExit) as info:
        tuning.main()
    assert info.value.code == 2
