"""``norm_proj_conv_update`` (a decode step's residual add and RMSNorm, input projection
and conv step): the Triton kernel, whose prologue does the add and the norm, against
the reference, and the reference against rms_norm followed by proj_conv_update."""
from __future__ import annotations

import math

import pytest
import torch

from seqmamba.kernels import norm_proj_conv_update, proj_conv_update, rms_norm
from seqmamba.kernels.proj_conv_update.op import norm_proj_conv_update_op

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 1e-2}
# More than one block of channels with the last one partial, K not a multiple of the K block.
DIM, K = (300, 200) if ON_GPU else (40, 72)


def make(seed, *, batch=3, dim=DIM, k=K, dtype=torch.float32, residual=True, residual_dtype=None,
         strided_x=False, bias=True):
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, dt=dtype, scale=1.0, offset=0.0):
        return (torch.randn(*shape, generator=gen) * scale + offset).to(DEVICE, dt)

    return dict(
        x=rand(batch, 2 * k)[:, ::2] if strided_x else rand(batch, k),
        residual=rand(batch, k, dt=residual_dtype or dtype, scale=3.0) if residual else None,
        norm_weight=rand(k, dt=torch.float32, scale=0.2, offset=1.0),
        proj_weight=rand(2 * dim, k, scale=1 / math.sqrt(k)),
        conv_state=rand(batch, dim, 4),
        conv_weight=rand(dim, 4, scale=0.5),
        conv_bias=rand(dim) if bias else None,
        proj_bias=rand(2 * dim) if bias else None,
    )


def run(inputs, backend, *, residual_in_fp32=False, eps=1e-5):
    state = inputs["conv_state"].clone()
    x, z, residual = norm_proj_conv_update(**{**inputs, "conv_state": state}, activation="silu", eps=eps,
                                           residual_in_fp32=residual_in_fp32, backend=backend)
    return x, z, residual, state


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("batch", "residual", "residual_in_fp32"), [
    (3, True, True), (1, False, False), (5, True, False), (37, True, True)])
def test_triton_kernel_matches_reference(dtype, batch, residual, residual_in_fp32):
    """Batch 37 runs past FUSED_MAX_BATCH: the norm kernel, cuBLAS and the conv step."""
    inputs = make(batch + 7 * residual, batch=batch, dtype=dtype, residual=residual,
                  residual_dtype=torch.float32 if residual_in_fp32 else None, strided_x=batch == 3)
    want = run(inputs, "reference", residual_in_fp32=residual_in_fp32)
    got = run(inputs, "triton", residual_in_fp32=residual_in_fp32)
    assert got[2].dtype == (torch.float32 if residual_in_fp32 else dtype)
    tol = TOL[dtype]
    # The add is exact in its dtype, but the Triton interpreter truncates float32 ->
    # bfloat16 casts (one bfloat16 step lower at most); a GPU rounds to nearest even.
    truncating = got[2].dtype == torch.bfloat16 and not ON_GPU
    torch.testing.assert_close(got[2], want[2], rtol=2.0**-7 if truncating else 0.0, atol=0)
    for g, w in zip((got[0], got[1], got[3]), (want[0], want[1], want[3])):
        torch.testing.assert_close(g.float(), w.float(), rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_equals_rms_norm_then_proj_conv_update(backend):
    """Over several steps, the one op and the two it replaces keep the same window and
    residual and give the same x and z (float64 on the reference)."""
    dtype = torch.float64 if backend == "reference" else torch.float32
    inputs = make(11, batch=2, dtype=dtype)
    fused_state, split_state = inputs["conv_state"].clone(), inputs["conv_state"].clone()
    fused_res = split_res = inputs["residual"]
    gen = torch.Generator().manual_seed(12)
    for _ in range(4):
        x_in = torch.randn(inputs["x"].shape, generator=gen).to(DEVICE, dtype)
        x, z, fused_res = norm_proj_conv_update(
            x_in, fused_res, inputs["norm_weight"], inputs["proj_weight"], fused_state, inputs["conv_weight"],
            inputs["conv_bias"], proj_bias=inputs["proj_bias"], activation="silu", eps=1e-3, backend=backend)
        normed, split_res = rms_norm(x_in, inputs["norm_weight"], split_res, eps=1e-3, backend="reference")
        x_want, z_want = proj_conv_update(normed, inputs["proj_weight"], split_state, inputs["conv_weight"],
                                          inputs["conv_bias"], proj_bias=inputs["proj_bias"], activation="silu",
                                          backend="reference")
        tol = TOL[dtype]
        for got, want in ((x, x_want), (z, z_want), (fused_state, split_state), (fused_res, split_res)):
            torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def test_fused_kernel_at_launches_the_rule_does_not_pick():
    """Several row tiles and K chunks with the norm prologue: the residual is written
    once per row (by the first column block) and every row tile normalises its own rows."""
    from seqmamba.kernels.proj_conv_update.kernel import FUSED_MAX_BATCH, norm_proj_conv_update_triton
    from seqmamba.kernels.proj_conv_update.reference import norm_proj_conv_update_reference

    inputs = make(21, batch=FUSED_MAX_BATCH + 21, dtype=torch.bfloat16, residual_dtype=torch.float32)
    head = [inputs[k] for k in ("x", "residual", "norm_weight")]
    tail = [inputs[k] for k in ("proj_weight", "proj_bias")]
    state_ref, state_tri = inputs["conv_state"].clone(), inputs["conv_state"].clone()
    conv = (inputs["conv_weight"], inputs["conv_bias"], True)
    want, want_res = norm_proj_conv_update_reference(*head, 1e-5, True, *tail, state_ref, *conv)
    got, got_res = norm_proj_conv_update_triton(*head, 1e-5, torch.float32, *tail, state_tri, *conv,
                                                launch=(16, 32, 32, 2, 2))
    tol = TOL[torch.bfloat16]
    torch.testing.assert_close(got_res, want_res, rtol=0, atol=0)
    torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol)
    torch.testing.assert_close(state_tri.float(), state_ref.float(), rtol=tol, atol=tol)


def test_custom_op_passes_opcheck_and_compiles():
    inputs = make(3, dim=20, k=32)
    args = (inputs["x"], inputs["residual"], inputs["norm_weight"], 1e-5, True, inputs["proj_weight"], None,
            inputs["conv_state"].clone(), inputs["conv_weight"], inputs["conv_bias"], True)
    torch.library.opcheck(norm_proj_conv_update_op, args)

    def step(x, state):
        xz, residual = norm_proj_conv_update_op(x, inputs["residual"], inputs["norm_weight"], 1e-5, True,
                                                inputs["proj_weight"], None, state, inputs["conv_weight"],
                                                inputs["conv_bias"], True)
        return xz * 2, residual + 1

    state_c, state_e = inputs["conv_state"].clone(), inputs["conv_state"].clone()
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(inputs["x"], state_c), step(inputs["x"], state_e))
    torch.testing.assert_close(state_c, state_e)  # the in-place update survives compilation


def test_bad_inputs_raise_value_errors_naming_the_argument():
    good = make(4, dim=8, k=16)
    cases = [
        (dict(x=good["x"][0]), r"norm_proj_conv_update: x must have shape \(batch, K\)"),
        (dict(residual=good["residual"][:, :8]), r"norm_proj_conv_update: residual must have shape x's shape"),
        (dict(norm_weight=torch.ones(8, device=DEVICE)), r"norm_weight must have shape \(hidden,\) = \(16\), got \(8,\)"),
        (dict(proj_weight=good["proj_weight"][:8]), r"proj_weight must have shape \(2 D, K\) = \(16, 16\), got \(8, 16\)"),
        (dict(conv_state=good["conv_state"][..., :3]), r"conv_state must have shape \(batch, D, width\)"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            norm_proj_conv_update(**{**good, **change})
    with pytest.raises(ValueError, match=r"norm_proj_conv_update: eps must be a positive finite number, got 0"):
        norm_proj_conv_update(**good, eps=0)
    doubles = make(5, dim=8, k=16, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"the Triton kernel takes x in float16, bfloat16 or float32, got torch.float64"):
        norm_proj_conv_update(**doubles, backend="triton")
