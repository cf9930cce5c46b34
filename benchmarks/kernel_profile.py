"""Where a step's GPU time goes: its kernels ranked by total time, from torch.profiler."""
from __future__ import annotations

from collections.abc import Callable

import torch


def profile_step(step: Callable[[], object]) -> torch.profiler.profile:
    """Runs ``step`` once under torch.profiler, CPU and CUDA activity (CUDA only)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    return prof


def kernel_ms_per_call(call: Callable[[], object], calls: int) -> float:
    """The device's kernel time per call of ``call`` (ms): ``calls`` calls in a row under
    torch.profiler, after as many unprofiled (compilation, allocator). Gaps in which the
    device waits for the host do not count: what a small op's kernels cost, also where
    its launches are slower than its kernels."""

    def in_a_row() -> None:
        for _ in range(calls):
            call()

    in_a_row()
    return sum(us for _, us, _ in rank_kernels(profile_step(in_a_row))) / 1e3 / calls


def rank_kernels(prof: torch.profiler.profile) -> list[tuple[str, float, int]]:
    """(kernel name, total microseconds, launches) per kernel name of a profile, costliest first."""
    kernels: dict[str, list[float]] = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            kernels.setdefault(e.name[:100], []).append(e.device_time_total)
    return sorted(((name, sum(t), len(t)) for name, t in kernels.items()), key=lambda r: -r[1])


def format_kernels(ranked: list[tuple[str, float, int]], rows: int, indent: str = "    ") -> str:
    """The first ``rows`` of a :func:`rank_kernels` ranking as a table (ms, launches, name)."""
    lines = [f"{indent}{'ms':>8} {'calls':>6}  kernel"]
    lines += [f"{indent}{us / 1e3:8.3f} {n:6d}  {name}" for name, us, n in ranked[:rows]]
    return "\n".join(lines)
