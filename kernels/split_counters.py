"""Zero-filled int32 counters for kernels whose last program of a group finishes the work.

Split kernels (decode_linear over K, row_argmax over the vocabulary) let every program
of a group write a partial result, then count themselves in with an acquire-release
atomic; the program that finds itself last combines the partials and sets the counter
back to 0, so every launch leaves the counters as it found them. One buffer per device:
two split launches must not run at the same time on one device (two streams), or they
would share counters; a decode step's kernels run one after another.
"""
from __future__ import annotations

import torch

_COUNTERS: dict[torch.device, torch.Tensor] = {}
MAX_GROUPS = 4096


def split_counters(op: str, device: torch.device, groups: int) -> torch.Tensor:
    """The device's counters, at least ``groups`` of them (raises beyond MAX_GROUPS)."""
    if groups > MAX_GROUPS:
        raise ValueError(f"{op}: a split launch of {groups} groups exceeds {MAX_GROUPS}; "
                         f"use larger blocks or no split")
    if device not in _COUNTERS:
        _COUNTERS[device] = torch.zeros(MAX_GROUPS, dtype=torch.int32, device=device)
    return _COUNTERS[device]
