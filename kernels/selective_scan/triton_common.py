"""Small Triton helpers shared by the forward and backward selective-scan kernels."""
from __future__ import annotations

import triton
import triton.language as tl

from ..sizes import cdiv


@triton.jit
def scan_combine(a_left, b_left, a_right, b_right):
    """Composes two steps of h -> a * h + b: first (a_left, b_left), then (a_right, b_right)."""
    return a_left * a_right, b_left * a_right + b_right


@triton.jit
def in_step_layout(x, steps):
    """x (BLOCK_N, BLOCK_D), unchanged, in the register layout of one step of the
    (CHUNK, BLOCK_N, BLOCK_D) tiles. A state loaded from memory comes in the layout of
    its coalesced load; a step loop carrying it would otherwise convert every step's
    decay and input to that layout and the state back (round trips through shared
    memory or shuffles at every step)."""
    return tl.sum(tl.where(steps[:, None, None] == 0, x[None, :, :], 0.0), axis=0)


@triton.jit
def load(ptr, mask):
    """tl.load in the stored dtype; ``mask=None`` loads unmasked, which lets full tiles vectorize."""
    if mask is None:
        x = tl.load(ptr)
    else:
        x = tl.load(ptr, mask=mask, other=0.0)
    return x


@triton.jit
def load_f32(ptr, mask):
    """:func:`load` as fp32."""
    return load(ptr, mask).to(tl.float32)


def split_length(programs: int, length: int, align: int, *, target: int, min_len: int) -> int | None:
    """Steps per segment when L is split across programs; None for a single segment.

    programs: programs launched without a split; the segments bring them to about
    ``target``, each segment at least ``min_len`` steps and a multiple of ``align``.
    """
    seg_len = max(min_len, cdiv(length, cdiv(target, programs)))
    seg_len = cdiv(seg_len, align) * align
    return seg_len if seg_len < length else None


@triton.jit
def prefetch_lines(ptrs, mask, L2: tl.constexpr):
    """Asks the cache (L1, or L2 with ``L2``) for the lines holding ``ptrs`` (any shape)
    where ``mask``. Only a hint: it writes no register, so no later instruction waits on
    it. A load issued early for the same purpose holds one of the few scoreboards, which
    ptxas may then share with nearer loads (shared memory, the multi-function unit): their
    users then wait for the far load too (ncu: the forward's largest single stall).
    Inline PTX: GPU only (callers pass no lines under TRITON_INTERPRET)."""
    if L2:
        tl.inline_asm_elementwise(
            "{ .reg .pred p; setp.ne.b32 p, $2, 0; @p prefetch.global.L2 [$1]; mov.u32 $0, 0; }",
            "=r,l,r", [ptrs, mask.to(tl.int32)], dtype=tl.int32, is_pure=False, pack=1,
        )
    else:
        tl.inline_asm_elementwise(
            "{ .reg .pred p; setp.ne.b32 p, $2, 0; @p prefetch.global.L1 [$1]; mov.u32 $0, 0; }",
            "=r,l,r", [ptrs, mask.to(tl.int32)], dtype=tl.int32, is_pure=False, pack=1,
        )


@triton.jit
def prefetch_rows(rows, t0, count, stride, mask, L2: tl.constexpr):
    """Asks the cache (:func:`prefetch_lines`) for the steps t0 .. t0 + count - 1 of each
    row in ``rows`` (pointers to step 0, any shape) where ``mask``: the lines of the span's
    first and last step, all of it for spans of up to two lines (a 16-step bf16 row is
    32 bytes, a 64-step one 128)."""
    prefetch_lines(rows + t0 * stride, mask, L2)
    prefetch_lines(rows + (t0 + count - 1) * stride, mask, L2)
