"""Dependent launches of the decode step's kernels (kernels/dependent_launch.py): off
where they cannot run, and on the GPU a CUDA-graphed decode with them gives the same
tokens and logits as one without. (That each kernel waits before it loads is checked
on its sm_90 build: tests/test_sass_report.py.)"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from seqmamba.kernels import dependent_launch


def test_off_for_cpu_tensors():
    assert not dependent_launch.enabled_for(torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_off_when_switched_off(monkeypatch):
    monkeypatch.setattr(dependent_launch, "ENABLED", False)
    assert not dependent_launch.enabled_for(torch.device("cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("batch", [1, 3, 24, 40])
def test_graphed_decode_matches_ordinary_launches(monkeypatch, batch):
    from seqmamba.models import MambaLM, ModelConfig
    from seqmamba.models.graphs import graph_decoders

    torch.manual_seed(0)
    config = ModelConfig(d_model=128, n_layer=3, vocab_size=256)
    model = MambaLM(config).to("cuda", torch.bfloat16).eval()
    prompt = torch.randint(0, 256, (batch, 9), device="cuda")

    def generate(enabled: bool) -> torch.Tensor:
        monkeypatch.setattr(dependent_launch, "ENABLED", enabled)
        graph_decoders(model).clear()
        return model.generate(prompt, 24, temperature=0, cuda_graph=True)

    with torch.no_grad():
        assert dependent_launch.enabled_for(prompt.device) == (torch.cuda.get_device_capability()[0] >= 9)
        torch.testing.assert_close(generate(True), generate(False), rtol=0, atol=0)


@pytest.mark.parametrize(("variable", "flag"), [(dependent_launch.ENV, "ENABLED"),
                                                (dependent_launch.PREFETCH_ENV, "PREFETCH")])
def test_switched_off_by_the_environment_variable(variable, flag):
    """Read once at import: the variable must be set before seqmamba is imported."""
    code = f"from seqmamba.kernels import dependent_launch as d; print(d.{flag})"
    env = {**os.environ, variable: "0"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
    assert getattr(dependent_launch, flag) == (os.environ.get(variable, "1") != "0")


def test_prefetch_follows_dependent_launch():
    """Prefetching happens before a kernel's wait, so only in dependent launches."""
    assert not dependent_launch.prefetch_for(torch.device("cpu"))
