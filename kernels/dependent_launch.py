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

What a kernel reads that the kernel just before it does not write (weights, the
states of its own layer, the residual from layers back) it may request into L2 before
it waits, with :func:`prefetch_l2`: those loads then overlap the previous kernel's
tail instead of following it. ``SEQMAMBA_PREFETCH=0`` turns that off alone.

A kernel whose caller knows more may load such inputs into registers before the wait:
the SSM step, told that only Δ, B and C come from the product just before it, reads the
state and the rest early. That is safe because every kernel here waits before it signals:
when a kernel starts, the one two launches back has finished. ``SEQMAMBA_EARLY_LOADS=0``
turns that off alone.

``SEQMAMBA_DEPENDENT_LAUNCH=0`` turns it all off (for measurements, or a driver that
mishandles it); it is never used on devices before compute capability 9.0 nor under the
Triton interpreter.
"""
from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

from .backend import triton_interpreter_enabled
from .sizes import cdiv, next_power_of_2

ENV = "SEQMAMBA_DEPENDENT_LAUNCH"
# Read once: a lookup per launch would cost host time on every kernel call.
ENABLED = os.environ.get(ENV, "1") != "0"
PREFETCH_ENV = "SEQMAMBA_PREFETCH"
PREFETCH = os.environ.get(PREFETCH_ENV, "1") != "0"
EARLY_LOADS_ENV = "SEQMAMBA_EARLY_LOADS"
EARLY_LOADS = os.environ.get(EARLY_LOADS_ENV, "1") != "0"
_LINE_BYTES: tl.constexpr = tl.constexpr(128)


@functools.cache
def _capable(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index)[0] >= 9


def enabled_for(device: torch.device) -> bool:
    """Whether kernels for tensors on ``device`` are launched as dependent launches."""
    if device.type != "cuda" or not ENABLED or triton_interpreter_enabled():
        return False
    return _capable(device.index if device.index is not None else torch.cuda.current_device())


def prefetch_for(device: torch.device) -> bool:
    """Whether dependent launches on ``device`` prefetch their inputs before they wait."""
    return PREFETCH and enabled_for(device)


def early_loads_for(device: torch.device, promised: bool) -> bool:
    """Whether a kernel on ``device`` whose caller ``promised`` that the kernel before it
    writes only some of its inputs reads the others before it waits."""
    return promised and EARLY_LOADS and enabled_for(device)


def prefetch_lines(elements: int, *dtypes: torch.dtype) -> int:
    """``LINES`` for :func:`prefetch_l2` over rows of up to ``elements`` contiguous
    elements of the widest of ``dtypes``: the lines such a row can touch, wherever it
    starts."""
    itemsize = max(dtype.itemsize for dtype in dtypes)
    return next_power_of_2(cdiv(elements * itemsize, _LINE_BYTES.value) + 1)


@triton.jit
def prefetch_l2(row_ptrs, row_mask, count, stride, LINES: tl.constexpr):
    """Ask L2 for the rows ``row_ptrs[i][0 : count * stride : stride]`` where
    ``row_mask[i]`` (any shape, flattened), one 128-byte line at a time, at most
    ``LINES`` lines a row.

    Only a hint: it returns at once and loads nothing into registers. L2 is where every
    SM's writes land, so a line fetched before an earlier kernel rewrites it is updated
    there, never read stale: that is what makes it safe before ``gdc_wait``.
    """
    row_bytes = ((count - 1) * stride + 1) * (row_ptrs.dtype.element_ty.primitive_bitwidth // 8)
    # Line j at byte j * 128 of the row, the last one at its last byte: every line the row
    # touches, wherever in a line it starts.
    j = tl.arange(0, LINES) * _LINE_BYTES
    offs = tl.minimum(j, row_bytes - 1)
    rows = tl.reshape(row_ptrs, [row_ptrs.numel]).to(tl.pointer_type(tl.int8))
    ptrs = rows[:, None] + offs[None, :]
    mask = tl.reshape(row_mask, [row_mask.numel])[:, None] & (j < row_bytes + _LINE_BYTES)[None, :]
    # The asm's result is a dummy (inline asm must return one); not pure, so it is kept.
    tl.inline_asm_elementwise(
        "{ .reg .pred p; setp.ne.b32 p, $2, 0; @p prefetch.global.L2 [$1]; mov.u32 $0, 0; }",
        "=r,l,r", [ptrs, mask.to(tl.int32)], dtype=tl.int32, is_pure=False, pack=1,
    )
