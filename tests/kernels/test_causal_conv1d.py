"""causal_conv1d: Triton kernel against the reference (outputs, final state, every gradient),
the reference against F.conv1d, state chaining, layouts, custom-op registration and errors.

Tensors live on DEVICE: the GPU when there is one, else the CPU, where the kernels run on
the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1). Random values are drawn
from CPU generators, so both see the same numbers, then moved.
"""
from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from fake_check import assert_fake_matches_real

from seqmamba.kernels import causal_conv1d
from seqmamba.kernels.causal_conv1d import kernel as conv_kernel
from seqmamba.kernels.causal_conv1d.autograd import causal_conv1d_fwd
from seqmamba.kernels.causal_conv1d.reference import causal_conv1d_reference, final_conv_state

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}
# Channel tiles of 32 on the interpreter, 8 to 64 on a GPU: the last one is partly masked.
DIM = 40
# The interpreter pays per program, so long sequences are kept for the GPU.
LONG_LENGTHS = (1000, 4099) if ON_GPU else ()


def make_inputs(seed, *, batch=2, dim=DIM, length=7, width=4, dtype=torch.float32, bias=True, init=True,
                channel_last=False, param_dtype=None):
    gen = torch.Generator().manual_seed(seed)
    param_dtype = param_dtype or dtype

    def rand(*shape, dt=dtype):
        return torch.randn(*shape, generator=gen).to(DEVICE, dt)

    if channel_last:
        # As the Mamba block slices its projection: (batch, L, 2D) -> (batch, D, L) view, stride 1 over D.
        x = rand(batch, length, 2 * dim)[..., :dim].transpose(1, 2)
        assert x.stride(1) == 1
    else:
        x = rand(batch, dim, length)
    tensors = {
        "x": x,
        "weight": rand(dim, width, dt=param_dtype) / math.sqrt(width),
        "bias": rand(dim, dt=param_dtype) if bias else None,
        "initial_state": rand(batch, dim, width - 1) if init else None,
    }
    return {k: v.requires_grad_() if v is not None else None for k, v in tensors.items()}


def run(backend, inputs, *, activation, seed=1, transposed_grad=False):
    """(out, final_state) and the gradients of a random linear loss on both."""
    out, state = causal_conv1d(**inputs, activation=activation, return_final_state=True, backend=backend)
    gen = torch.Generator().manual_seed(seed)
    g_out = torch.randn(out.shape, generator=gen).to(DEVICE)
    g_state = torch.randn(state.shape, generator=gen).to(DEVICE)
    if transposed_grad:  # the next op reads out channel-last: its gradient arrives strided
        loss = (out.transpose(1, 2).float() * g_out.transpose(1, 2)).sum()
    else:
        loss = (out.float() * g_out).sum()
    loss = loss + (state.float() * g_state).sum()
    leaves = {k: v for k, v in inputs.items() if v is not None}
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return {"out": out, "final_state": state} | {f"d{k}": g for k, g in zip(leaves, grads)}


def assert_close(actual, expected, dtype):
    assert actual.keys() == expected.keys()
    for name in expected:
        a, e = actual[name], expected[name]
        assert a.dtype == e.dtype and a.shape == e.shape, name
        assert torch.isfinite(a).all(), f"{name} has non-finite elements (unwritten?)"
        tol = TOL[dtype]
        scale = e.abs().max().item() if e.numel() else 0.0
        torch.testing.assert_close(a, e, rtol=tol, atol=tol * max(scale, 1.0), msg=lambda m: f"{name}: {m}")


def compare(seed, activation="silu", transposed_grad=False, **shape):
    inputs = make_inputs(seed, **shape)
    expected = run("reference", inputs, activation=activation, transposed_grad=transposed_grad)
    actual = run("triton", inputs, activation=activation, transposed_grad=transposed_grad)
    assert_close(actual, expected, inputs["x"].dtype)


# --- Triton against the reference ---------------------------------------------------


@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("length", [1, 2, 3, 7, 129, *LONG_LENGTHS])
def test_triton_matches_reference_fp32(nan_empty, width, length):
    compare(width * 1000 + length, length=length, width=width)


@pytest.mark.parametrize("width", [2, 3, 4])
def test_triton_matches_reference_without_options(nan_empty, width):
    compare(width, activation=None, length=129, width=width, bias=False, init=False)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("init", [True, False])
def test_triton_matches_reference_every_option(nan_empty, bias, activation, init):
    compare(11, activation=activation, length=5, width=3, bias=bias, init=init)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("width,length", [(2, 3), (4, 129), (3, 1)])
def test_triton_matches_reference_low_precision(nan_empty, dtype, width, length):
    compare(21 + length, length=length, width=width, dtype=dtype)


def test_triton_low_precision_input_with_fp32_parameters(nan_empty):
    compare(22, length=9, width=4, dtype=torch.bfloat16, param_dtype=torch.float32)


def test_triton_matches_reference_fp64(nan_empty):
    compare(23, length=9, width=4, dtype=torch.float64)


@pytest.mark.parametrize("width,length", [(4, 7), (2, 129), (3, 2)])
def test_channel_last_input_and_strided_gradient(nan_empty, width, length):
    compare(31 + width, length=length, width=width, channel_last=True, transposed_grad=True)


def test_outputs_are_laid_out_like_x(nan_empty):
    """x as a Mamba block slices it from its in_proj product, (D, batch, L) in memory: out
    and dx come out in that layout (so the next projection reads out without a copy) and
    equal the reference; a channel-last x gives channel-last outputs."""
    batch, dim, length = 2, 12, 9
    for x_of, order in (
        (lambda t: t.reshape(2 * dim, batch, length).permute(1, 0, 2)[:, :dim], (1, 0, 2)),
        (lambda t: t.reshape(batch, length, 2 * dim).transpose(1, 2)[:, :dim], (0, 2, 1)),
    ):
        inputs = make_inputs(51, batch=batch, dim=dim, length=length)
        x = x_of(torch.randn(2 * dim * batch * length, generator=torch.Generator().manual_seed(52)).to(DEVICE))
        inputs["x"] = x.requires_grad_()
        expected = run("reference", inputs, activation="silu")
        actual = run("triton", inputs, activation="silu")
        assert_close(actual, expected, torch.float32)
        # dx as the kernel returns it (run's dx also holds the final state's gradient, added by autograd).
        dx = conv_kernel.causal_conv1d_backward(
            torch.randn(x.shape).to(DEVICE), x.detach(), inputs["weight"].detach(), None, None, silu=True
        )[0]
        for name, tensor in (("out", actual["out"]), ("dx", dx)):
            strides = tensor.stride()
            assert sorted(range(3), key=lambda i: -strides[i]) == list(order), (name, strides)


def test_long_sequence_several_length_tiles(nan_empty):
    if ON_GPU:
        compare(41, length=5000, width=4, batch=2, dim=200)
    else:
        compare(41, length=300, width=4, batch=1, dim=8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # 16-byte loads of 4 and 8 positions
@pytest.mark.parametrize("channel_last", [False, True])
def test_gpu_tile_shapes(nan_empty, monkeypatch, channel_last, dtype):
    # The interpreter gets other tiles and launches; check the GPU's here once.
    # On a GPU the patch changes nothing: compiled kernels use GPU_TILES anyway.
    monkeypatch.setattr(conv_kernel, "INTERPRETER_TILES", conv_kernel.GPU_TILES)
    monkeypatch.setattr(conv_kernel, "INTERPRETER_BWD_LAUNCH", conv_kernel.GPU_BWD_LAUNCH)
    compare(42, length=70, width=4, dim=20, dtype=dtype, channel_last=channel_last, transposed_grad=channel_last)


def test_output_layout_and_dtype():
    inputs = make_inputs(51, dtype=torch.bfloat16, channel_last=True)
    out, state = causal_conv1d(**inputs, activation="silu", return_final_state=True, backend="triton")
    assert out.stride(1) == 1 and out.dtype == torch.bfloat16  # laid out like x: channel-last
    assert state.is_contiguous() and state.dtype == torch.bfloat16
    assert causal_conv1d(**inputs, backend="triton").shape == inputs["x"].shape


# --- states ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["triton", "reference"])
@pytest.mark.parametrize("width,length", [(2, 1), (3, 1), (3, 2), (4, 1), (4, 2), (4, 3), (4, 7)])
def test_final_state_is_last_columns_of_state_and_input(backend, width, length):
    inputs = make_inputs(61, length=length, width=width, init=True)
    _, state = causal_conv1d(**inputs, return_final_state=True, backend=backend)
    xp = torch.cat([inputs["initial_state"], inputs["x"]], dim=-1)
    torch.testing.assert_close(state, xp[..., -(width - 1):], rtol=0, atol=0)
    # Without a state the missing history is zeros.
    _, state = causal_conv1d(inputs["x"], inputs["weight"], return_final_state=True, backend=backend)
    xp = F.pad(inputs["x"], (width - 1, 0))
    torch.testing.assert_close(state, xp[..., -(width - 1):], rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["triton", "reference"])
@pytest.mark.parametrize("width,split", [(4, 1), (4, 2), (3, 6), (2, 8)])  # first part shorter than the state, or not
def test_chained_calls_equal_one_call(backend, width, split):
    length = 9
    inputs = make_inputs(71 + split, length=length, width=width)
    x, weight, bias, state0 = inputs["x"], inputs["weight"], inputs["bias"], inputs["initial_state"]
    leaves = [x, weight, bias, state0]
    kw = dict(activation="silu", return_final_state=True, backend=backend)

    out_a, state_a = causal_conv1d(x[..., :split], weight, bias, initial_state=state0, **kw)
    out_b, state_b = causal_conv1d(x[..., split:], weight, bias, initial_state=state_a, **kw)
    chained = torch.cat([out_a, out_b], dim=-1)
    whole, state = causal_conv1d(x, weight, bias, initial_state=state0, **kw)
    torch.testing.assert_close(chained, whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state_b, state, rtol=0, atol=0)

    g_out = torch.randn(whole.shape, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    grads_chained = torch.autograd.grad((chained * g_out).sum() + state_b.sum(), leaves)
    grads_whole = torch.autograd.grad((whole * g_out).sum() + state.sum(), leaves)
    for g_c, g_w in zip(grads_chained, grads_whole):
        torch.testing.assert_close(g_c, g_w, rtol=1e-5, atol=1e-5)


# --- the reference itself ---------------------------------------------------------------


@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("length", [1, 3, 17])
def test_reference_is_the_layer_conv1d(width, length):
    inputs = make_inputs(81, length=length, width=width, dtype=torch.float64, init=False)
    x, weight, bias = inputs["x"], inputs["weight"], inputs["bias"]
    layer = F.conv1d(x, weight[:, None, :], bias, padding=width - 1, groups=DIM)[..., :length]
    torch.testing.assert_close(causal_conv1d_reference(x, weight, bias), layer, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(causal_conv1d_reference(x, weight, bias, silu=True), F.silu(layer),
                               rtol=1e-12, atol=1e-12)
    zeros = torch.zeros(x.shape[0], DIM, width - 1, dtype=x.dtype, device=DEVICE)
    torch.testing.assert_close(causal_conv1d_reference(x, weight, bias, initial_state=zeros), layer,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("width", [2, 4])
def test_reference_state_continues_a_longer_sequence(width):
    history, length = 6, 5
    inputs = make_inputs(91, length=history + length, width=width, dtype=torch.float64, init=False)
    full, weight, bias = inputs["x"], inputs["weight"], inputs["bias"]
    whole = F.conv1d(full, weight[:, None, :], bias, padding=width - 1, groups=DIM)[..., history:history + length]
    state = final_conv_state(full[..., :history], None, width)
    continued = causal_conv1d_reference(full[..., history:], weight, bias, initial_state=state)
    torch.testing.assert_close(continued, whole, rtol=1e-12, atol=1e-12)


# --- torch.library registration --------------------------------------------------------


def test_custom_op_registration_passes_opcheck():
    inputs = make_inputs(101, length=5, width=4, dim=6)
    args = (inputs["x"], inputs["weight"], inputs["bias"], inputs["initial_state"], True)
    torch.library.opcheck(causal_conv1d_fwd.op, args)


def test_custom_op_compiles_without_graph_breaks():
    inputs = make_inputs(102, length=5, width=3, dim=6, bias=False, init=False)

    def loss(x, weight):
        out = causal_conv1d_fwd(x, weight, None, None, False)
        return (out * out).sum() + final_conv_state(x, None, weight.shape[1]).sum()

    args = [inputs["x"], inputs["weight"]]
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    grads_compiled = torch.autograd.grad(compiled(*args), args)
    grads_eager = torch.autograd.grad(loss(*args), args)
    for g_c, g_e in zip(grads_compiled, grads_eager):
        torch.testing.assert_close(g_c, g_e)


# --- input errors --------------------------------------------------------------------


def test_bad_inputs_raise_value_errors_naming_the_argument():
    inputs = make_inputs(111, length=5, width=4, init=False)
    x, weight, bias = (inputs[k].detach() for k in ("x", "weight", "bias"))
    cases = [
        (dict(weight=torch.randn(DIM, 1, device=DEVICE)), "weight has width 1"),
        (dict(weight=torch.randn(DIM, 5, device=DEVICE)), "weight has width 5"),
        (dict(weight=torch.randn(DIM + 1, 4, device=DEVICE)), "weight must have shape"),
        (dict(weight=torch.randn(DIM, device=DEVICE)), "weight must have shape"),
        (dict(x=x[0]), "x must have shape"),
        (dict(x=x.to(torch.int32)), "x has dtype torch.int32"),
        (dict(x=x[..., :0]), "x must have batch, D and L of at least 1"),
        (dict(bias=torch.randn(DIM + 1, device=DEVICE)), "bias must have shape"),
        (dict(initial_state=torch.randn(2, DIM, 4, device=DEVICE)), "initial_state must have shape"),
        (dict(initial_state=torch.randn(2, DIM, 3, dtype=torch.float64, device=DEVICE)),
         "initial_state has dtype torch.float64"),
        (dict(activation="relu"), "activation must be None or 'silu'"),
        (dict(activation="SiLU"), "activation must be None or 'silu'"),
        (dict(backend="cuda"), "unknown backend 'cuda'"),
    ]
    if ON_GPU:
        cases.append((dict(weight=weight.cpu()), "weight is on cpu but the other inputs are on cuda:0"))
    for overrides, message in cases:
        kwargs = dict(x=x, weight=weight, bias=bias) | overrides
        with pytest.raises(ValueError, match=re.escape(f"causal_conv1d: {message}")):
            causal_conv1d(**kwargs)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("channel_last", [False, True])
def test_fake_implementations_give_the_kernels_shapes_strides_and_dtypes(channel_last, dtype):
    inputs = make_inputs(71, dtype=dtype, channel_last=channel_last)
    args = [v.detach() if v is not None else None for v in inputs.values()] + [True]  # x, weight, bias, init, silu
    out = torch.ops.seqmamba.causal_conv1d_fwd.default(*args)
    assert_fake_matches_real(torch.ops.seqmamba.causal_conv1d_fwd.default, args)
    bwd_args = [torch.randn_like(out)] + args + [None, None]  # dout2, dx_out
    assert_fake_matches_real(torch.ops.seqmamba.causal_conv1d_bwd.default, bwd_args)
    buffer = torch.empty((2, 2 * DIM, out.shape[-1]), dtype=dtype, device=DEVICE)
    bwd_args[-2:] = [torch.randn_like(out), buffer[:, :DIM]]
    assert_fake_matches_real(torch.ops.seqmamba.causal_conv1d_bwd.default, bwd_args)


@pytest.mark.parametrize("channel_last", [False, True])
@pytest.mark.parametrize("length", [5, 37])
def test_backward_adds_a_second_output_gradient_and_writes_into_a_given_buffer(channel_last, length):
    # The Mamba block's backward: d out arrives in two parts (the scan's and x_proj's),
    # and d x goes into one half of the in_proj output's gradient buffer.
    from seqmamba.kernels.causal_conv1d.autograd import causal_conv1d_bwd

    inputs = {k: v.detach() for k, v in make_inputs(81, length=length, channel_last=channel_last).items()}
    gen = torch.Generator().manual_seed(82)
    g1, g2 = (torch.randn(inputs["x"].shape, generator=gen).to(DEVICE) for _ in range(2))
    args = (inputs["x"], inputs["weight"], inputs["bias"], inputs["initial_state"], True)
    want = causal_conv1d_bwd(g1 + g2, *args, None, None)
    buffer = torch.full((2, 2 * DIM, length), float("nan"), device=DEVICE)
    dx_slot = buffer[:, :DIM]
    got = causal_conv1d_bwd(g1, *args, g2, dx_slot)
    assert got[0].numel() == 0  # d x went into the buffer
    torch.testing.assert_close(dx_slot, want[0], rtol=1e-5, atol=1e-5)
    for g, w in zip(got[1:], want[1:]):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    assert buffer[:, DIM:].isnan().all()  # the other half untouched
