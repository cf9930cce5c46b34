"""benchmarks/kernel_profile.py: the critical-path accounting of overlapping kernels."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from bench_modules import benchmark_module


def fake_profile(spans):
    """An object with the profiler's ``events()``: CUDA kernels (name, start us, end us)
    and one CPU event, which must be ignored."""
    cuda, cpu = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU
    events = [SimpleNamespace(name=n, device_type=cuda, time_range=SimpleNamespace(start=s, end=e)) for n, s, e in spans]
    events.append(SimpleNamespace(name="cpu op", device_type=cpu, time_range=SimpleNamespace(start=0.0, end=1e6)))
    return SimpleNamespace(events=lambda: events)


def test_each_kernel_is_charged_what_it_adds_to_the_span():
    # two steps: "a" 0-10, "b" overlaps it (5-12: adds 2), a gap of 3, "c" 15-20;
    # then the same again shifted by 20, with "b" wholly inside "a" (adds nothing)
    spans = [("a", 0, 10), ("b", 5, 12), ("c", 15, 20), ("a", 20, 30), ("b", 21, 29), ("c", 33, 40)]
    with benchmark_module("kernel_profile") as kp:
        table = {name: rest for name, *rest in kp.critical_path(fake_profile(spans), steps=2)}
        assert table["a"] == [1, 10.0, 10.0, 0.0]
        assert table["b"] == [1, pytest.approx(7.5), 1.0, 0.0]
        assert table["c"] == [1, 6.0, 6.0, 3.0]
        covered = sum(r[2] for r in table.values())
        gaps = sum(r[3] for r in table.values())
        assert (covered + gaps) * 2 == 40  # the span of both steps
        text = kp.format_critical_path(kp.critical_path(fake_profile(spans), steps=2))
        assert "total per step: 20.00 us" in text
