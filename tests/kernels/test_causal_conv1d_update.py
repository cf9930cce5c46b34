"""``causal_conv1d_update`` (one decoding step, window updated in place): the Triton
kernel against the reference, and steps against the whole-sequence convolution."""
from __future__ import annotations

import math

import pytest
import torch

from seqmamba.kernels import causal_conv1d, causal_conv1d_update
from seqmamba.kernels.causal_conv1d.update import causal_conv1d_update_op

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}
DIM = 300 if ON_GPU else 150  # more than one 128-channel block, the last one partial


def make(seed, *, batch=3, dim=DIM, width=4, dtype=torch.float32, bias=True, strided_x=False):
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, dt=dtype):
        return torch.randn(*shape, generator=gen).to(DEVICE, dt)

    # As the decode step slices its projection: x is a strided view of (batch, 2 * D).
    x = rand(batch, 2 * dim)[:, :dim] if strided_x else rand(batch, dim)
    return dict(x=x, conv_state=rand(batch, dim, width), weight=rand(dim, width) / math.sqrt(width),
                bias=rand(dim) if bias else None)


@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("bias", "activation"), [(True, "silu"), (False, None)])
def test_triton_step_matches_reference(width, dtype, bias, activation):
    inputs = make(width, width=width, dtype=dtype, bias=bias, strided_x=True)
    state_ref = inputs["conv_state"].clone()
    state_tri = inputs["conv_state"].clone()
    want = causal_conv1d_update(**{**inputs, "conv_state": state_ref}, activation=activation, backend="reference")
    got = causal_conv1d_update(**{**inputs, "conv_state": state_tri}, activation=activation, backend="triton")
    assert got.dtype == dtype and got.shape == inputs["x"].shape
    torch.testing.assert_close(got.float(), want.float(), rtol=TOL[dtype], atol=TOL[dtype])
    torch.testing.assert_close(state_tri, state_ref, rtol=0, atol=0)  # a pure shift: exact
    torch.testing.assert_close(state_ref[..., :-1], inputs["conv_state"][..., 1:], rtol=0, atol=0)
    torch.testing.assert_close(state_ref[..., -1], inputs["x"], rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("width", [2, 4])
def test_steps_reproduce_the_sequence_convolution(backend, width):
    """Stepping from a window whose columns 1.. hold the previous inputs equals one
    causal_conv1d call with that initial state, output by output; column 0 is ignored."""
    gen = torch.Generator().manual_seed(7)
    batch, dim, length = 2, 70, 9
    x = torch.randn(batch, dim, length, generator=gen, dtype=torch.float64).to(DEVICE)
    weight = torch.randn(dim, width, generator=gen, dtype=torch.float64).to(DEVICE)
    bias = torch.randn(dim, generator=gen, dtype=torch.float64).to(DEVICE)
    init = torch.randn(batch, dim, width - 1, generator=gen, dtype=torch.float64).to(DEVICE)
    want = causal_conv1d(x, weight, bias, "silu", initial_state=init, backend="reference")
    dtype = torch.float64 if backend == "reference" else torch.float32
    window = torch.cat([torch.full((batch, dim, 1), 1e6, dtype=torch.float64, device=DEVICE), init], dim=-1).to(dtype)
    outs = [causal_conv1d_update(x[..., t].to(dtype), window, weight.to(dtype), bias.to(dtype), "silu", backend=backend)
            for t in range(length)]
    torch.testing.assert_close(torch.stack(outs, dim=-1).double(), want, rtol=TOL[dtype], atol=TOL[dtype])
    torch.testing.assert_close(window[..., 1:].double(), x[..., -(width - 1):])


def test_custom_op_passes_opcheck_and_compiles():
    inputs = make(3, dim=20)
    args = (inputs["x"], inputs["conv_state"].clone(), inputs["weight"], inputs["bias"], True)
    torch.library.opcheck(causal_conv1d_update_op, args)

    def step(x, state, weight, bias):
        return causal_conv1d_update_op(x, state, weight, bias, True) * 2

    state_c, state_e = inputs["conv_state"].clone(), inputs["conv_state"].clone()
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    out_c = compiled(inputs["x"], state_c, inputs["weight"], inputs["bias"])
    out_e = step(inputs["x"], state_e, inputs["weight"], inputs["bias"])
    torch.testing.assert_close(out_c, out_e)
    torch.testing.assert_close(state_c, state_e)  # the in-place update survives compilation


def test_bad_inputs_raise_value_errors_naming_the_argument():
    good = make(4, dim=8)
    cases = [
        (dict(x=good["x"][0]), r"causal_conv1d_update: x must have shape \(batch, D\)"),
        (dict(conv_state=good["conv_state"][..., :3]), r"conv_state must have shape \(batch, D, width\) = \(3, 8, 4\), got \(3, 8, 3\)"),
        (dict(conv_state=good["conv_state"].double()), r"conv_state has dtype torch.float64; supported: torch.float32"),
        (dict(weight=torch.randn(8, 5, device=DEVICE)), r"weight has width 5"),
        (dict(bias=torch.randn(7, device=DEVICE)), r"bias must have shape \(D,\) = \(8\), got \(7,\)"),
        (dict(conv_state=good["conv_state"][:1].expand(3, 8, 4)), r"conv_state .* overlapping elements"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            causal_conv1d_update(**{**good, **change})
    with pytest.raises(ValueError, match=r"activation must be None or 'silu', got 'relu'"):
        causal_conv1d_update(**good, activation="relu")
