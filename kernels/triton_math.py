"""Triton math helpers shared by the kernels: softplus and sigmoid, exact or fast, and
exp2 on the FMA pipe.

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


# exp2_fma: 2^f on f in [-1/2, 1/2] as 1 + f (c1 + f (c2 + ...)), a degree-5 fit of the
# relative error with the constant term held at exactly 1 (so decays near 1 keep their
# distance from 1): 1.9e-7 relative at most in fp32 arithmetic, 6e-8 for |f| < 1e-3,
# the accuracy class of the multi-function unit's ex2.approx.
_EXP2_C1 = tl.constexpr(0.6931470036506653)
_EXP2_C2 = tl.constexpr(0.24022242426872253)
_EXP2_C3 = tl.constexpr(0.05550733581185341)
_EXP2_C4 = tl.constexpr(0.009671512991189957)
_EXP2_C5 = tl.constexpr(0.001326472731307149)
# 1.5 * 2^23: x + ROUNDER rounds x to an integer held in the sum's low mantissa bits.
_EXP2_ROUNDER = tl.constexpr(12582912.0)


@triton.jit
def exp2_fma(x):
    """2^x for fp32 x, on the FMA pipe: about 11 instructions of the pipe that does the
    multiplies and adds, where tl.exp2 takes one of the multi-function unit, which serves
    a quarter as many lanes a clock. A kernel whose exponentials bind that unit moves
    part of them here. x is clamped to [-125, 125] (2^-125 stands in for anything
    smaller, where exp2 returns 0 or a denormal; beyond 125 it is not for overflow).
    Exact arithmetic on every backend, so the interpreter runs it too."""
    x = tl.minimum(tl.maximum(x, -125.0), 125.0)
    t = x + _EXP2_ROUNDER
    j = t - _EXP2_ROUNDER  # round(x); x - j is exact (Sterbenz)
    f = x - j
    p = 1.0 + f * (_EXP2_C1 + f * (_EXP2_C2 + f * (_EXP2_C3 + f * (_EXP2_C4 + f * _EXP2_C5))))
    # 2^j * p: j added to p's exponent field. t's bits end in j (two's complement), and
    # shifting them left by 23 leaves exactly j << 23.
    bits = p.to(tl.int32, bitcast=True) + (t.to(tl.int32, bitcast=True) << 23)
    return bits.to(tl.float32, bitcast=True)


def fast_math(*tensors) -> bool:
    """Whether the kernels may use approximate exp/log/division: every given tensor
    (None skipped) is 16-bit, so their rounding dwarfs the approximations', and the
    kernels run compiled (the interpreter cannot run inline PTX)."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        return False
    return all(t is None or t.element_size() <= 2 for t in tensors)
