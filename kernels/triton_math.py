"""Triton math helpers shared by the kernels: softplus and sigmoid, exact or fast, and
an exp2 that leaves the multi-function unit alone.

The fast forms use the multi-function unit's exp2 and log2 and an approximate division.
Kernels take them for 16-bit inputs (:func:`fast_math`), whose own rounding is far larger.
:func:`exp2_fma` computes 2^x with FMAs and integer operations instead, for kernels bound
by that unit.
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


# 2^f on [-1/2, 1/2] to within 2.4e-7 relative (float32 Horner; a Lawson fit of the
# relative error), about the 2 ulp of the multi-function unit's ex2.approx.
_EXP2_C1 = tl.constexpr(0.6931469440460205)
_EXP2_C2 = tl.constexpr(0.24022120237350464)
_EXP2_C3 = tl.constexpr(0.05550713092088699)
_EXP2_C4 = tl.constexpr(0.009675540961325169)
_EXP2_C5 = tl.constexpr(0.001327647129073739)
# 1.5 * 2^23: adding it rounds a float32 of magnitude < 2^22 to an integer held in the
# sum's low mantissa bits.
_ROUND_MAGIC = tl.constexpr(12582912.0)


@triton.jit
def exp2_fma(x):
    """2^x (x float32) on the FMA and integer pipes, without the multi-function unit.

    x = j + f with j = round(x), f in [-1/2, 1/2]; 2^f by a degree-5 polynomial, 2^j
    added into its exponent bits. Same accuracy class as tl.exp2 on a GPU (ex2.approx,
    about 2 ulp); about 12 instructions instead of one, so kernels bound by the
    multi-function unit (one exponential per (step, state, channel)) hand it a share of
    their exponentials. x is clamped to [-125, 127] so that the exponent cannot wrap:
    below, 2^x < 3e-38 comes out as about 2^-125 (an absolute error under 3e-38); NaN
    stays NaN.
    """
    x = tl.maximum(x, -125.0, propagate_nan=tl.PropagateNan.ALL)
    x = tl.minimum(x, 127.0, propagate_nan=tl.PropagateNan.ALL)
    t = x + _ROUND_MAGIC
    f = x - (t - _ROUND_MAGIC)
    p = _EXP2_C5 * f + _EXP2_C4
    p = p * f + _EXP2_C3
    p = p * f + _EXP2_C2
    p = p * f + _EXP2_C1
    p = p * f + 1.0
    # t's low bits hold j in two's complement; shifted into the exponent field, the
    # magic's own bits fall off the top.
    bits = p.to(tl.int32, bitcast=True) + (t.to(tl.int32, bitcast=True) << 23)
    return bits.to(tl.float32, bitcast=True)


def fast_math(*tensors) -> bool:
    """Whether the kernels may use approximate exp/log/division: every given tensor
    (None skipped) is 16-bit, so their rounding dwarfs the approximations', and the
    kernels run compiled (the interpreter cannot run inline PTX)."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        return False
    return all(t is None or t.element_size() <= 2 for t in tensors)
