"""When the kernels take the approximate exp2/log2/division (kernels/triton_math.py)."""
from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

from seqmamba.kernels.triton_math import exp2_fma, fast_math


@triton.jit
def _exp2_fma_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, exp2_fma(tl.load(x_ptr + offs, mask=offs < n)), mask=offs < n)


def test_fast_math_only_for_16_bit_inputs_and_never_under_the_interpreter(monkeypatch):
    bf16, fp16, fp32 = (torch.zeros(2, dtype=d) for d in (torch.bfloat16, torch.float16, torch.float32))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert fast_math(bf16, fp16, None)
    assert not fast_math(bf16, fp32)
    assert not fast_math(fp32)
    # Inline PTX (the fast log2) cannot run on the interpreter.
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not fast_math(bf16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fast forms run compiled only (CUDA)")
def test_fast_softplus_and_sigmoid_are_close_to_torch_on_the_gpu():
    import triton
    import triton.language as tl

    from seqmamba.kernels.triton_math import sigmoid, softplus

    @triton.jit
    def _kernel(x_ptr, sp_ptr, sig_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + offs, mask=offs < n)
        tl.store(sp_ptr + offs, softplus(x, True), mask=offs < n)
        tl.store(sig_ptr + offs, sigmoid(x, True), mask=offs < n)

    x = torch.linspace(-30, 30, 100_003, device="cuda")
    sp, sig = torch.empty_like(x), torch.empty_like(x)
    _kernel[(triton.cdiv(x.numel(), 1024),)](x, sp, sig, x.numel(), BLOCK=1024)
    x64 = x.double()
    ref_sp, ref_sig = torch.nn.functional.softplus(x64), torch.sigmoid(x64)
    # Relative 1e-5 where softplus > 0.02, absolute 2e-7 below: far under bf16's 4e-3.
    big = ref_sp > 0.02
    assert ((sp.double() - ref_sp).abs() / ref_sp)[big].max() < 1e-5
    assert (sp.double() - ref_sp).abs()[~big].max() < 2e-7
    assert (sig.double() - ref_sig).abs().max() < 1e-6


def test_exp2_on_the_fma_pipe_is_as_close_as_the_hardware_exp2():
    """exp2_fma (the scan's decays moved off the multi-function unit) against float64:
    under 2.5e-7 relative wherever the result is normal, decays near 1 within two
    ulps of their distance from 1 (no bias at 2^0), and the clamped ends give tiny or huge finite values. Runs compiled
    on a GPU and on the interpreter elsewhere (the function is plain arithmetic)."""
    import triton

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([
        torch.rand(20_000, generator=gen) * 250 - 125,  # the whole clamped range
        -torch.rand(20_000, generator=gen) * 8,  # typical decay arguments
        -torch.rand(5_000, generator=gen) * 1e-3,  # decays within 1e-3 of 1
        torch.tensor([0.0, -0.5, 0.5, -1.5, 1.5, -124.9, 124.9, -1e-30, 1e-30]),
    ]).to(dev)
    y = torch.empty_like(x)
    _exp2_fma_kernel[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK=1024)
    ref = torch.exp2(x.double())
    assert ((y.double() - ref).abs() / ref).max() < 2.5e-7
    near_one = (x > -1e-3) & (x < 0)
    rate, ref_rate = 1 - y.double()[near_one], 1 - ref[near_one]
    assert (rate - ref_rate).abs().max() < 1.2e-7  # two ulps of the fp32 numbers just below 1
    ends = torch.tensor([-200.0, -126.0, 126.0, 200.0], device=dev)
    y_ends = torch.empty_like(ends)
    _exp2_fma_kernel[(1,)](ends, y_ends, 4, BLOCK=4)
    assert torch.equal(y_ends.cpu(), torch.exp2(torch.tensor([-125.0, -125.0, 125.0, 125.0])))


def test_host_size_helpers_agree_with_tritons():
    """kernels.sizes replaces triton.cdiv / next_power_of_2 in host code (they are
    constexpr functions there, several microseconds a call); same values."""
    import triton

    from seqmamba.kernels.sizes import cdiv, next_power_of_2

    for n in range(0, 4100):
        assert next_power_of_2(n) == triton.next_power_of_2(n), n
        for b in (1, 3, 8, 64):
            assert cdiv(n, b) == triton.cdiv(n, b), (n, b)
