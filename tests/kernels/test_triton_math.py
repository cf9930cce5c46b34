"""When the kernels take the approximate exp2/log2/division (kernels/triton_math.py)."""
from __future__ import annotations

import pytest
import torch

from seqmamba.kernels.triton_math import fast_math


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


def test_host_size_helpers_agree_with_tritons():
    """kernels.sizes replaces triton.cdiv / next_power_of_2 in host code (they are
    constexpr functions there, several microseconds a call); same values."""
    import triton

    from seqmamba.kernels.sizes import cdiv, next_power_of_2

    for n in range(0, 4100):
        assert next_power_of_2(n) == triton.next_power_of_2(n), n
        for b in (1, 3, 8, 64):
            assert cdiv(n, b) == triton.cdiv(n, b), (n, b)
