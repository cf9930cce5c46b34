"""rms_norm: Triton kernel against the reference (both outputs, every gradient from both
outputs), the reference against F.rms_norm, dtypes, layouts, custom-op registration and errors.

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

from seqmamba.kernels import rms_norm
from seqmamba.kernels.backend import triton_interpreter_enabled
from seqmamba.kernels.rmsnorm.autograd import rms_norm_fwd
from seqmamba.kernels.rmsnorm.reference import rms_norm_reference

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}
LOW = [torch.bfloat16, torch.float16]


def make_inputs(seed, *, shape=(2, 5, 48), dtype=torch.float32, residual="same"):
    """residual: None, "same" (x's dtype) or "fp32" (as left by a residual_in_fp32 block)."""
    gen = torch.Generator().manual_seed(seed)
    hidden = shape[-1]
    x = torch.randn(shape, generator=gen).to(DEVICE, dtype)
    weight = (1.0 + 0.3 * torch.randn(hidden, generator=gen)).to(DEVICE, dtype)
    res = None
    if residual is not None:
        res = (2.0 * torch.randn(shape, generator=gen)).to(DEVICE, dtype if residual == "same" else torch.float32)
    tensors = {"x": x, "weight": weight, "residual": res}
    return {k: v.requires_grad_() if v is not None else None for k, v in tensors.items()}


def run(backend, inputs, *, residual_in_fp32, use=("normed", "new_residual"), seed=1, eps=1e-5):
    """Both outputs and the gradients of a random linear loss on the outputs in ``use``."""
    normed, new_residual = rms_norm(**inputs, eps=eps, residual_in_fp32=residual_in_fp32, backend=backend)
    gen = torch.Generator().manual_seed(seed)
    outputs = {"normed": normed, "new_residual": new_residual}
    loss = sum((outputs[name].float() * torch.randn(normed.shape, generator=gen).to(DEVICE)).sum() for name in use)
    leaves = {k: v for k, v in inputs.items() if v is not None}
    # Only new_residual used: the reference leaves weight out of the graph, the kernel gives zeros.
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True, materialize_grads=True)
    return outputs | {f"d{k}": g for k, g in zip(leaves, grads)}


def assert_close(actual, expected, dtype):
    assert actual.keys() == expected.keys()
    for name in expected:
        a, e = actual[name], expected[name]
        assert a.dtype == e.dtype and a.shape == e.shape, name
        assert torch.isfinite(a).all(), f"{name} has non-finite elements (unwritten?)"
        tol = TOL[dtype]
        scale = e.abs().max().item()
        torch.testing.assert_close(a, e, rtol=tol, atol=tol * max(scale, 1.0), msg=lambda m: f"{name}: {m}")


def compare(seed, *, residual_in_fp32=False, use=("normed", "new_residual"), eps=1e-5, **shape):
    inputs = make_inputs(seed, **shape)
    expected = run("reference", inputs, residual_in_fp32=residual_in_fp32, use=use, eps=eps)
    actual = run("triton", inputs, residual_in_fp32=residual_in_fp32, use=use, eps=eps)
    assert_close(actual, expected, inputs["x"].dtype)
    return actual


# --- Triton against the reference ---------------------------------------------------


@pytest.mark.parametrize("hidden", [48, 768, 1000, 4099])  # 4099: two chunks, the second almost empty
@pytest.mark.parametrize("residual", [None, "same", "fp32"])
@pytest.mark.parametrize("residual_in_fp32", [False, True])
def test_triton_matches_reference_fp32(nan_empty, hidden, residual, residual_in_fp32):
    compare(hidden, shape=(3, hidden), residual=residual, residual_in_fp32=residual_in_fp32)


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("hidden", [48, 1000, 4099])
@pytest.mark.parametrize("residual,residual_in_fp32", [(None, False), ("same", False), ("fp32", True), (None, True)])
def test_triton_matches_reference_low_precision(nan_empty, dtype, hidden, residual, residual_in_fp32):
    compare(hidden + 1, shape=(2, 3, hidden), dtype=dtype, residual=residual, residual_in_fp32=residual_in_fp32)


def test_triton_matches_reference_fp64(nan_empty):
    compare(7, shape=(3, 100), dtype=torch.float64, residual="same")


@pytest.mark.parametrize("shape", [(1, 768), (768,), (2, 1, 3, 5, 48)])
def test_any_leading_shape(nan_empty, shape):
    compare(8, shape=shape, residual="same")


@pytest.mark.parametrize("use", [("normed",), ("new_residual",)], ids=["normed-only", "residual-only"])
@pytest.mark.parametrize("hidden", [48, 4099])
def test_gradient_from_one_output_only(nan_empty, use, hidden):
    compare(9, shape=(3, hidden), residual="same", use=use)


def test_large_eps(nan_empty):
    compare(10, shape=(4, 48), residual="same", eps=0.5)


def test_many_rows_per_backward_program(nan_empty):
    # The interpreter runs 4 backward programs: 37 rows are 10 each, the last block ragged.
    # A GPU runs 8 per SM (1056 on 132 SMs): 3001 rows are 3 each, the last ones ragged or empty.
    rows = 3001 if ON_GPU else 37
    compare(11, shape=(rows, 48), residual="fp32", residual_in_fp32=True)


def test_strided_inputs(nan_empty):
    gen = torch.Generator().manual_seed(12)
    # Moved before the views are taken: a copy of a strided view to another device is contiguous.
    x = torch.randn(48, 6, generator=gen).to(DEVICE).t().requires_grad_()  # stride 6 over hidden
    residual = torch.randn(6, 96, generator=gen).to(DEVICE)[:, ::2].requires_grad_()
    weight = torch.randn(48, generator=gen).to(DEVICE).requires_grad_()
    assert x.stride() == (1, 6) and residual.stride() == (96, 2)
    inputs = {"x": x, "weight": weight, "residual": residual}
    assert_close(run("triton", inputs, residual_in_fp32=True), run("reference", inputs, residual_in_fp32=True),
                 torch.float32)


# --- semantics ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["triton", "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("residual", [None, "same", "fp32"])
@pytest.mark.parametrize("residual_in_fp32", [False, True])
def test_output_dtypes_and_residual_values(backend, dtype, residual, residual_in_fp32):
    inputs = make_inputs(13, shape=(2, 3, 48), dtype=dtype, residual=residual)
    x, res = inputs["x"], inputs["residual"]
    normed, new_residual = rms_norm(**inputs, residual_in_fp32=residual_in_fp32, backend=backend)
    res_dtype = torch.float32 if residual_in_fp32 else dtype
    assert normed.dtype == dtype and normed.shape == x.shape
    assert new_residual.dtype == res_dtype and new_residual.shape == x.shape
    expected = x.float() if res is None else x.float() + res.float()
    # The Triton interpreter truncates float32 -> bfloat16 casts, so there the stored sum may
    # sit one bfloat16 step lower; compiled kernels on a GPU round to nearest even, exactly.
    truncating = backend == "triton" and res_dtype == torch.bfloat16 and triton_interpreter_enabled()
    rtol = 2.0**-7 if truncating else 0.0
    torch.testing.assert_close(new_residual, expected.to(res_dtype), rtol=rtol, atol=0)


def test_reference_matches_torch_rms_norm():
    inputs = make_inputs(14, shape=(3, 4, 96), dtype=torch.float64, residual="same")
    x, weight, residual = inputs["x"], inputs["weight"], inputs["residual"]
    normed, new_residual = rms_norm_reference(x, weight, residual, eps=1e-6)
    expected = F.rms_norm(x + residual, (96,), weight, eps=1e-6)
    torch.testing.assert_close(normed, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(new_residual, x + residual, rtol=0, atol=0)
    normed, _ = rms_norm_reference(x, weight, eps=1e-6)
    torch.testing.assert_close(normed, F.rms_norm(x, (96,), weight, eps=1e-6), rtol=1e-12, atol=1e-12)


def test_reference_normalises_the_stored_residual():
    # In bf16 without residual_in_fp32 the sum is rounded first, then normalised.
    # On the CPU, deliberately: there F.rms_norm runs the reference's own float32 ops, so the
    # match is exact; CUDA's fused rms_norm reduces in another order and may differ by a bf16 step.
    inputs = make_inputs(15, shape=(3, 64), dtype=torch.bfloat16, residual="same")
    x, weight, residual = (inputs[k].detach().cpu() for k in ("x", "weight", "residual"))
    normed, new_residual = rms_norm_reference(x, weight, residual)
    expected = F.rms_norm(new_residual.float(), (64,), weight.float(), eps=1e-5).to(torch.bfloat16)
    torch.testing.assert_close(normed, expected, rtol=0, atol=0)


# --- torch.library registration --------------------------------------------------------


def test_custom_op_registration_passes_opcheck():
    inputs = make_inputs(16, shape=(3, 48), residual="fp32")
    torch.library.opcheck(rms_norm_fwd.op, (inputs["x"], inputs["weight"], inputs["residual"], 1e-5, True))
    torch.library.opcheck(rms_norm_fwd.op, (inputs["x"], inputs["weight"], None, 1e-5, False))


def test_custom_op_compiles_without_graph_breaks():
    inputs = make_inputs(17, shape=(3, 48), residual="same")

    def loss(x, weight, residual):
        normed, new_residual = rms_norm_fwd(x, weight, residual, 1e-5, True)
        return (normed * normed).sum() + (new_residual * new_residual).sum()

    args = list(inputs.values())
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    grads_compiled = torch.autograd.grad(compiled(*args), args)
    grads_eager = torch.autograd.grad(loss(*args), args)
    for g_c, g_e in zip(grads_compiled, grads_eager):
        torch.testing.assert_close(g_c, g_e)


# --- input errors --------------------------------------------------------------------


def test_bad_inputs_raise_value_errors_naming_the_argument():
    inputs = make_inputs(18, shape=(2, 3, 48))
    x, weight, residual = (inputs[k].detach() for k in ("x", "weight", "residual"))
    cases = [
        (dict(weight=torch.randn(47, device=DEVICE)), "weight must have shape"),
        (dict(weight=torch.randn(1, 48, device=DEVICE)), "weight must have shape"),
        (dict(weight=torch.randint(0, 3, (48,), device=DEVICE)), "weight has dtype torch.int64"),
        (dict(residual=torch.randn(2, 4, 48, device=DEVICE)), "residual must have shape"),
        (dict(residual=torch.randn(3, 48, device=DEVICE)), "residual must have shape"),
        (dict(x=torch.tensor(1.0, device=DEVICE)), "x must be a tensor of shape (..., hidden)"),
        (dict(x=x.to(torch.int32)), "x has dtype torch.int32"),
        (dict(x=x[:, :0], residual=None), "x must not be empty"),
        (dict(eps=0.0), "eps must be a positive finite number"),
        (dict(eps=-1e-5), "eps must be a positive finite number"),
        (dict(eps=math.nan), "eps must be a positive finite number"),
        (dict(backend="cuda"), "unknown backend 'cuda'"),
    ]
    if ON_GPU:
        cases.append((dict(residual=residual.cpu()), "residual is on cpu but the other inputs are on cuda:0"))
    for overrides, message in cases:
        kwargs = dict(x=x, weight=weight, residual=residual) | overrides
        with pytest.raises(ValueError, match=re.escape(f"rms_norm: {message}")):
            rms_norm(**kwargs)
