"""Programmatic dependent launch (Hopper and later) for the decode step's small kernels.

A decode step is ~150 kernels of a few microseconds each, and a replayed CUDA graph still
leaves a gap between consecutive kernels (the next grid is launched only once the
previous one has finished). A kernel launched with the programmatic-stream-serialization
attribute may be scheduled while the kernel before it is still draining; it must then
wait (``griddepcontrol.wait``) before it touches memory, which returns once every earlier
kernel has completed and its writes are visible. Every kernel here waits first thing,
before any load, so the result is the same as an ordinary launch, whatever precedes it:
only the launch itself overlaps. Right after its wait a kernel also signals that its own
dependants may be scheduled. In a kernel, with ``PDL`` the launch's flag:

    if PDL:  # inline: a nested jit call costs the interpreter milliseconds per call
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()

``SEQMAMBA_DEPENDENT_LAUNCH=0`` turns it off (for measurements, or a driver that
mishandles it); it is never used on devices before compute capability 9.0 nor under the
Triton interpreter.
"""
from __future__ import annotations

import functools
import os

import torch

from .backend import triton_interpreter_enabled

ENV = "SEQMAMBA_DEPENDENT_LAUNCH"
# Read once: a lookup per launch would cost host time on every kernel call.
ENABLED = os.environ.get(ENV, "1") != "0"


@functools.cache
def _capable(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index)[0] >= 9


def enabled_for(device: torch.device) -> bool:
    """Whether kernels for tensors on ``device`` are launched as dependent launches."""
    if device.type != "cuda" or not ENABLED or triton_interpreter_enabled():
        return False
    return _capable(device.index if device.index is not None else torch.cuda.current_device())
