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


def critical_path(prof: torch.profiler.profile, steps: int) -> list[tuple[str, int, float, float, float]]:
    """Where the time of ``steps`` back-to-back replays of a step goes, per kernel name.

    Kernels that overlap (dependent launches start before their predecessor ends) make
    summed durations exceed the wall time; here each kernel is charged only the time by
    which it moves the end of all work so far (``covered``), and the idle time before
    it starts, when nothing runs, is charged to it as ``gap``. covered + gap over all
    kernels is the span of the replays. Returns (kernel name, launches per step, mean
    duration us, covered us per step, gap us per step), costliest first.
    """
    spans = sorted((e.time_range.start, e.time_range.end, e.name[:100]) for e in prof.events()
                   if e.device_type == torch.autograd.DeviceType.CUDA)
    rows: dict[str, list[float]] = {}
    frontier = spans[0][0] if spans else 0.0
    for start, end, name in spans:
        row = rows.setdefault(name, [0, 0.0, 0.0, 0.0])
        row[0] += 1
        row[1] += end - start
        row[2] += max(0.0, end - max(frontier, start))
        row[3] += max(0.0, start - frontier)
        frontier = max(frontier, end)
    table = [(name, n // steps, dur / n, covered / steps, gap / steps) for name, (n, dur, covered, gap) in rows.items()]
    return sorted(table, key=lambda r: -(r[3] + r[4]))


def format_critical_path(table: list[tuple[str, int, float, float, float]], indent: str = "    ") -> str:
    """:func:`critical_path` as a table, with its totals."""
    lines = [f"{indent}{'covered us':>10} {'gap us':>7} {'calls':>5} {'mean us':>8}  kernel"]
    lines += [f"{indent}{c:10.2f} {g:7.2f} {n:5d} {d:8.2f}  {name}" for name, n, d, c, g in table]
    covered, gap = sum(r[3] for r in table), sum(r[4] for r in table)
    lines.append(f"{indent}{covered:10.2f} {gap:7.2f}  total per step: {covered + gap:.2f} us")
    return "\n".join(lines)
