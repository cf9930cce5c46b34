"""When the kernels take the approximate exp2/log2/division (kernels/triton_math.py)."""
from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

from seqmamba.kernels.triton_math import exp2_fma, fast_math


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


@triton.jit
def _exp2_fma_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, exp2_fma(tl.load(x_ptr + offs, mask=offs < n)), mask=offs < n)


def _exp2_fma_on(x: torch.Tensor) -> torch.Tensor:
    y = torch.empty_like(x)
    _exp2_fma_kernel[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK=1024)
    return y


def _exp2_fma_inputs(device) -> torch.Tensor:
    # Dense over the decays' range, every rounding boundary j +- 1/2 and its neighbours,
    # the clamps and the special values.
    halves = torch.arange(-130, 130, dtype=torch.float64) + 0.5
    near = torch.cat([halves, torch.nextafter(halves.float(), torch.tensor(-1e9)).double(),
                      torch.nextafter(halves.float(), torch.tensor(1e9)).double()])
    x = torch.cat([torch.linspace(-140, 130, 200_001, dtype=torch.float64), near])
    return x.float().to(device)


def _check_exp2_fma(x: torch.Tensor, y: torch.Tensor) -> None:
    x64, y64 = x.double().cpu(), y.double().cpu()
    ref = torch.exp2(x64)
    normal = (x64 >= -125) & (x64 <= 127)
    assert ((y64 - ref).abs() / ref)[normal].max() < 3e-7
    # Below the clamp: a tiny positive number, never a wrapped exponent.
    low = x64 < -125
    assert ((y64[low] > 0) & (y64[low] < 3e-38)).all()
    assert torch.isfinite(y64[x64 > 127]).all() and (y64[x64 > 127] > 1e38).all()
    special = _exp2_fma_on(torch.tensor([float("nan"), float("-inf"), float("inf"), 0.0], device=x.device)).cpu()
    assert torch.isnan(special[0]) and 0 < special[1] < 3e-38 and special[2] > 1e38 and special[3] == 1.0


def test_exp2_fma_matches_exp2():
    """Compiled on a GPU, on the interpreter elsewhere."""
    x = _exp2_fma_inputs("cuda" if torch.cuda.is_available() else "cpu")
    _check_exp2_fma(x, _exp2_fma_on(x))
