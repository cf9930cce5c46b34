"""Triton math helpers shared by the kernels: softplus and sigmoid, exact or fast.

The fast forms use the multi-function unit's exp2 and log2 and an approximate division.
Kernels take them for 16-bit inputs (:func:`fast_math`), whose own rounding is far larger.
"""
from __future__ import annotations

import os

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)


LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def _log2_approx(x):
    """The multi-function unit's log2 (lg2.approx; tl.log2 is a libdevice polynomial).
    Inline PTX: GPU only, so FAST paths are never taken under TRITON_INTERPRET."""
    return tl.inline_asm_elementwise("lg2.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def softplus(x, FAST: tl.constexpr = False):
    """softplus(x) = log(1 + exp(x)), computed as max(x, 0) + log1p(exp(-|x|)).

    Exact path: log1p(w) for w in (0, 1] uses Kahan's correction
    log(1 + w) * w / ((1 + w) - 1), so very negative x keep their relative precision
    (softplus(x) ~ exp(x) there); its log is a ~40-instruction libdevice polynomial.
    FAST: the hardware's approximate exp2 and log2 (about 1e-6 relative error where
    softplus(x) > 0.02, an absolute error of about 1e-7 below): for 16-bit inputs, which
    carry 4e-3 (bf16) or 5e-4 (fp16) themselves; mamba_ssm builds with fast math too.
    """
    if FAST:
        r = tl.maximum(x, 0.0) + LN2 * _log2_approx(1.0 + tl.exp2(-tl.abs(x) * LOG2E))
    else:
        w = tl.exp(-tl.abs(x))
        v = 1.0 + w
        log1p_w = tl.where(v == 1.0, w, tl.log(v) * (w / (v - 1.0)))
        r = tl.maximum(x, 0.0) + log1p_w
    return r


@triton.jit
def sigmoid(x, FAST: tl.constexpr = False):
    """1 / (1 + exp(-x)); FAST: approximate exp2 and division (see softplus)."""
    if FAST:
        r = tl.fdiv(1.0, 1.0 + tl.exp2(-x * LOG2E), ieee_rounding=False)
    else:
        r = 1.0 / (1.0 + tl.exp(-x))
    return r


def fast_math(*tensors) -> bool:
    """Whether the kernels may use approximate exp/log/division: every given tensor
    (None skipped) is 16-bit, so their rounding dwarfs the approximations', and the
    kernels run compiled (the interpreter cannot run inline PTX)."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        return False
    return all(t is None or t.element_size() <= 2 for t in tensors)
