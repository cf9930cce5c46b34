"""``proj_conv_update`` (the decode step's input projection with the conv step as its
epilogue): the Triton kernel against the reference, and the reference against the
unfused product and conv step it replaces."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from seqmamba.kernels import causal_conv1d_update, proj_conv_update
from seqmamba.kernels.proj_conv_update.op import proj_conv_update_op

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 1e-2}
# More than one block of channels with the last one partial, K not a multiple of the K block.
DIM, K = (300, 200) if ON_GPU else (40, 72)


def make(seed, *, batch=3, dim=DIM, k=K, width=4, dtype=torch.float32, state_dtype=None, bias=True,
         proj_bias=False, strided_hidden=False):
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, dt=dtype, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(DEVICE, dt)

    # As the decode step gets it from the norm: hidden may be a strided view.
    hidden = rand(batch, 2 * k)[:, ::2] if strided_hidden else rand(batch, k)
    return dict(
        hidden=hidden,
        proj_weight=rand(2 * dim, k, scale=1 / math.sqrt(k)),
        conv_state=rand(batch, dim, width, dt=state_dtype or dtype),
        conv_weight=rand(dim, width, scale=1 / math.sqrt(width)),
        conv_bias=rand(dim) if bias else None,
        proj_bias=rand(2 * dim) if proj_bias else None,
    )


def run(inputs, backend, activation="silu"):
    state = inputs["conv_state"].clone()
    x, z = proj_conv_update(**{**inputs, "conv_state": state}, activation=activation, backend=backend)
    return x, z, state


@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize(("dtype", "state_dtype"), [
    (torch.float32, None), (torch.bfloat16, None), (torch.float16, None), (torch.bfloat16, torch.float32)])
@pytest.mark.parametrize(("batch", "bias", "proj_bias", "activation"), [
    (3, True, False, "silu"), (1, False, True, None), (37, True, True, "silu")])
def test_triton_kernel_matches_reference(width, dtype, state_dtype, batch, bias, proj_bias, activation):
    inputs = make(width + batch, batch=batch, width=width, dtype=dtype, state_dtype=state_dtype, bias=bias,
                  proj_bias=proj_bias, strided_hidden=batch == 3)
    x_ref, z_ref, state_ref = run(inputs, "reference", activation)
    x_tri, z_tri, state_tri = run(inputs, "triton", activation)
    assert x_tri.dtype == z_tri.dtype == dtype and x_tri.shape == z_tri.shape == (batch, inputs["conv_weight"].shape[0])
    tol = TOL[dtype]
    torch.testing.assert_close(z_tri.float(), z_ref.float(), rtol=tol, atol=tol)
    torch.testing.assert_close(x_tri.float(), x_ref.float(), rtol=tol, atol=tol)
    # The window's old columns shift exactly; its newest is the product's x, rounded.
    torch.testing.assert_close(state_tri[..., :-1], state_ref[..., :-1], rtol=0, atol=0)
    torch.testing.assert_close(state_tri[..., -1].float(), state_ref[..., -1].float(), rtol=tol, atol=tol)
    torch.testing.assert_close(state_ref[..., :-1], inputs["conv_state"][..., 1:], rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_equals_the_unfused_product_and_conv_step(backend):
    """Over several steps, the fused op and F.linear + causal_conv1d_update keep the
    same window and give the same x and z (float64 on the reference)."""
    dtype = torch.float64 if backend == "reference" else torch.float32
    inputs = make(11, batch=2, dtype=dtype)
    fused_state, split_state = inputs["conv_state"].clone(), inputs["conv_state"].clone()
    gen = torch.Generator().manual_seed(12)
    for _ in range(5):
        hidden = torch.randn(inputs["hidden"].shape, generator=gen).to(DEVICE, dtype)
        x, z = proj_conv_update(hidden, inputs["proj_weight"], fused_state, inputs["conv_weight"],
                                inputs["conv_bias"], activation="silu", backend=backend)
        x_want, z_want = F.linear(hidden, inputs["proj_weight"]).chunk(2, dim=-1)
        x_want = causal_conv1d_update(x_want, split_state, inputs["conv_weight"], inputs["conv_bias"], "silu",
                                      backend="reference")
        tol = TOL[dtype]
        torch.testing.assert_close(z, z_want, rtol=tol, atol=tol)
        torch.testing.assert_close(x, x_want, rtol=tol, atol=tol)
        torch.testing.assert_close(fused_state, split_state, rtol=tol, atol=tol)


def test_custom_op_passes_opcheck_and_compiles():
    inputs = make(3, dim=20, k=32)
    args = (inputs["hidden"], inputs["proj_weight"], None, inputs["conv_state"].clone(), inputs["conv_weight"],
            inputs["conv_bias"], True)
    torch.library.opcheck(proj_conv_update_op, args)

    def step(hidden, state):
        return proj_conv_update_op(hidden, inputs["proj_weight"], None, state, inputs["conv_weight"],
                                   inputs["conv_bias"], True) * 2

    state_c, state_e = inputs["conv_state"].clone(), inputs["conv_state"].clone()
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(inputs["hidden"], state_c), step(inputs["hidden"], state_e))
    torch.testing.assert_close(state_c, state_e)  # the in-place update survives compilation


def test_bad_inputs_raise_value_errors_naming_the_argument():
    good = make(4, dim=8, k=16)
    cases = [
        (dict(hidden=good["hidden"][0]), r"proj_conv_update: hidden must have shape \(batch, K\)"),
        (dict(proj_weight=good["proj_weight"][:8]), r"proj_weight must have shape \(2 D, K\) = \(16, 16\), got \(8, 16\)"),
        (dict(proj_weight=good["proj_weight"].double()), r"proj_weight has dtype torch.float64; supported: torch.float32"),
        (dict(conv_state=good["conv_state"][..., :3]), r"conv_state must have shape \(batch, D, width\) = \(3, 8, 4\), got \(3, 8, 3\)"),
        (dict(conv_weight=torch.randn(8, 5, device=DEVICE)), r"conv_weight has width 5"),
        (dict(conv_bias=torch.randn(7, device=DEVICE)), r"conv_bias must have shape \(D,\) = \(8\), got \(7,\)"),
        (dict(proj_bias=torch.randn(8, device=DEVICE)), r"proj_bias must have shape \(2 D,\) = \(16\), got \(8,\)"),
        (dict(conv_state=good["conv_state"][:1].expand(3, 8, 4)), r"conv_state .* overlapping elements"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            proj_conv_update(**{**good, **change})
    with pytest.raises(ValueError, match=r"activation must be None or 'silu', got 'relu'"):
        proj_conv_update(**good, activation="relu")
    doubles = make(5, dim=8, k=16, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"the Triton kernel takes hidden in float16, bfloat16 or float32, got torch.float64"):
        proj_conv_update(**doubles, backend="triton")


@pytest.mark.parametrize("launch", [(16, 32, 32, 2, 2), (64, 32, 64, 4, 2, 1), (16, 16, 32, 2, 2, 1)])
def test_fused_kernel_at_launches_the_rule_does_not_pick(launch):
    """Several row tiles and K chunks (the rule runs one row tile, and two kernels past
    FUSED_MAX_BATCH rows), the conv step on the x tile read back (launch field 6): the
    fused kernel at any launch the tuning script may try."""
    from seqmamba.kernels.proj_conv_update.kernel import FUSED_MAX_BATCH, proj_conv_update_triton
    from seqmamba.kernels.proj_conv_update.reference import proj_conv_update_reference

    inputs = make(21, batch=FUSED_MAX_BATCH + 21, dtype=torch.bfloat16, proj_bias=True)
    args = [inputs[k] for k in ("hidden", "proj_weight", "proj_bias", "conv_state", "conv_weight", "conv_bias")]
    state_ref, state_tri = args[3].clone(), args[3].clone()
    want = proj_conv_update_reference(*args[:3], state_ref, *args[4:], True)
    got = proj_conv_update_triton(*args[:3], state_tri, *args[4:], True, launch=launch)
    torch.testing.assert_close(got.float(), want.float(), rtol=TOL[torch.bfloat16], atol=TOL[torch.bfloat16])
    torch.testing.assert_close(state_tri.float(), state_ref.float(), rtol=TOL[torch.bfloat16], atol=TOL[torch.bfloat16])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch", [3, 37])  # the fused kernel; the product and the conv step as two kernels
@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_deferred_norm_input_equals_the_normed_input(dtype, batch, backend):
    """hidden as a deferred RMSNorm's rows (the norm's input times its weight, with the
    input rows' sums of squares in two parts) gives what the normed rows give."""
    from seqmamba.kernels.rmsnorm.reference import rms_norm_reference

    inputs = make(70 + batch, batch=batch, dtype=dtype, proj_bias=True)
    gen = torch.Generator().manual_seed(batch)
    h = (torch.randn(batch, K, generator=gen) * 2).to(DEVICE)
    norm_weight = (1 + 0.3 * torch.randn(K, generator=gen)).to(DEVICE)
    normed = rms_norm_reference(h, norm_weight, eps=1e-6)[0].to(dtype)
    x_want, z_want, state_want = run({**inputs, "hidden": normed}, "reference")
    sumsq = torch.stack([h[:, : K // 3].pow(2).sum(-1), h[:, K // 3:].pow(2).sum(-1)], dim=1)
    state = inputs["conv_state"].clone()
    x, z = proj_conv_update(**{**inputs, "hidden": (h * norm_weight).to(dtype), "conv_state": state},
                            activation="silu", backend=backend, row_sumsq=sumsq, eps=1e-6)
    tol = TOL[dtype]
    torch.testing.assert_close(z.float(), z_want.float(), rtol=tol, atol=tol)
    torch.testing.assert_close(x.float(), x_want.float(), rtol=tol, atol=tol)
    torch.testing.assert_close(state.float(), state_want.float(), rtol=tol, atol=tol)
    with pytest.raises(ValueError, match=r"proj_conv_update: row_sumsq must have shape \(M, P\)"):
        proj_conv_update(**inputs, row_sumsq=sumsq[1:])
