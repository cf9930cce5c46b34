"""``decode_linear`` (a decode step's small products): the Triton kernel against the
reference (F.linear) on random inputs, its launch rule, and the errors it raises."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from seqmamba.kernels import decode_linear
from seqmamba.kernels.decode_linear.kernel import MAX_COLUMNS, MAX_ROWS, decode_linear_triton, default_launch
from seqmamba.kernels.sizes import smallest_block_m

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 1e-2}
# K not a multiple of the K block, N not a multiple of the column block.
N, K = (300, 1000) if ON_GPU else (37, 300)


def make(seed, rows, *, n=N, k=K, dtype=torch.float32, bias=True, strided=False):
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(DEVICE, dtype)

    # As the decode step passes x_proj its input: one half of a (rows, 2 K) buffer.
    x = rand(rows, 2 * k)[:, k:] if strided else rand(rows, k)
    return x, rand(n, k, scale=1 / math.sqrt(k)), rand(n) if bias else None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("rows", "bias", "strided"), [(1, True, False), (3, False, True), (17, True, True),
                                                      (64, False, False)])
def test_kernel_matches_reference(dtype, rows, bias, strided):
    x, weight, b = make(rows, rows, dtype=dtype, bias=bias, strided=strided)
    want = decode_linear(x, weight, b, backend="reference")
    # Every row count through the kernel itself, whatever the launch rule picks for it.
    got = decode_linear_triton(x, weight, b, launch=(smallest_block_m(rows), 16, 256, 4, 3))
    assert got.dtype == dtype and got.shape == (rows, N)
    torch.testing.assert_close(got.float(), want.float(), rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("launch", [(16, 16, 64, 4, 2), (16, 32, 128, 2, 3)])
def test_other_launch_shapes_match(launch):
    x, weight, b = make(5, 5, dtype=torch.bfloat16)
    torch.testing.assert_close(decode_linear_triton(x, weight, b, launch=launch).float(),
                               decode_linear(x, weight, b, backend="reference").float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("rows", "launch"), [(64, (64, 16, 64, 4, 3, 3)), (5, (16, 32, 128, 4, 3, 2)),
                                              (40, (32, 16, 64, 2, 3, 4)), (3, (16, 16, 256, 4, 3, 50))])
def test_split_k_matches_and_leaves_its_counters_at_zero(dtype, rows, launch):
    """K shared by several programs a tile (the last sums the partials); the last case
    asks for more parts than K has blocks. Twice in a row: the counters start at 0 again."""
    from seqmamba.kernels import split_counters

    x, weight, b = make(200 + rows, rows, dtype=dtype, strided=True)
    want = decode_linear(x, weight, b, backend="reference").float()
    for _ in range(2):
        got = decode_linear_triton(x, weight, b, launch=launch)
        torch.testing.assert_close(got.float(), want, rtol=TOL[dtype], atol=TOL[dtype])
    assert not split_counters._COUNTERS[x.device].any()


@pytest.mark.parametrize("rows", [1, 7, 64])
def test_op_on_triton_equals_reference(rows):
    """The public op with backend='triton', kernel or cuBLAS as the rule picks."""
    x, weight, b = make(100 + rows, rows, n=80)
    torch.testing.assert_close(decode_linear(x, weight, b, backend="triton"), decode_linear(x, weight, b, backend="reference"),
                               rtol=1e-5, atol=1e-5)


def test_launch_rule():
    # Narrow products (x_proj) on the kernel at every decode batch, split over K in
    # 128-wide parts up to 8 rows, in three above 16; out_proj-like ones (wide, long K) on it up to 8 rows,
    # split over K in 256-wide parts at 9-16 rows, and from 33 rows; in_proj-like ones
    # (wide, short K) at every row count, with 32
    # columns a program above 16 rows when very wide; larger products on cuBLAS.
    assert all(default_launch(rows, 80, 1536) is not None for rows in (1, 2, 16, 33, 64))
    assert default_launch(1, 80, 1536) == default_launch(8, 80, 1536) == (16, 16, 128, 4, 3, 12)
    assert default_launch(16, 80, 1536) == (16, 16, 256, 4, 3) and default_launch(64, 80, 1536) == (64, 16, 256, 4, 3, 3)
    assert default_launch(17, 80, 1536) == (32, 16, 256, 4, 3, 3)
    assert default_launch(1, 768, 1536) == default_launch(8, 768, 1536) == (16, 16, 256, 4, 3)
    assert default_launch(9, 768, 1536) == default_launch(16, 768, 1536) == (16, 16, 256, 4, 3, 6)
    assert all(default_launch(rows, 768, 1536) is None for rows in (17, 32))
    assert default_launch(64, 768, 1536) == (64, 16, 256, 4, 3) and default_launch(40, 768, 1536)[0] == 64
    assert default_launch(32, 3072, 768) == (32, 32, 256, 4, 3) and default_launch(64, 3072, 768) == (64, 32, 256, 4, 3)
    assert default_launch(16, 3072, 768) == (16, 16, 256, 4, 3)
    assert default_launch(MAX_ROWS + 1, 80, 1536) is None
    assert default_launch(1, MAX_COLUMNS + 1, 768) is None  # an LM head


def test_errors_name_the_argument():
    x, weight, b = make(0, 2)
    with pytest.raises(ValueError, match=r"decode_linear: weight must have shape \(N, K\)"):
        decode_linear(x, weight[:, :-1])
    with pytest.raises(ValueError, match=r"decode_linear: weight has dtype torch.float16"):
        decode_linear(x, weight.half())
    with pytest.raises(ValueError, match=r"decode_linear: bias must have shape \(N,\)"):
        decode_linear(x, weight, b[:-1])
    with pytest.raises(ValueError, match=r"decode_linear: x must have shape \(M, K\)"):
        decode_linear(x[0], weight)
    with pytest.raises(ValueError, match=r"decode_linear: x must have M and K of at least 1"):
        decode_linear(x[:0], weight[:, :])
    with pytest.raises(ValueError, match="use backend='reference'"):
        decode_linear(x.double(), weight.double(), backend="triton")


def test_custom_op_passes_opcheck_and_compiles():
    from seqmamba.kernels.decode_linear.op import decode_linear_op

    x, weight, b = make(7, 3, n=24, k=40)
    torch.library.opcheck(decode_linear_op, (x, weight, b))
    torch.library.opcheck(decode_linear_op, (x, weight, None))

    def step(x):
        return decode_linear_op(x, weight, b) * 2

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), step(x))


# --- The deferred RMSNorm: out_proj's epilogue adds the residual and starts the next norm,
# the product after it (in_proj) applies the norm's 1 / rms to its output rows.

def make_norm(seed, rows, k, *, dtype=torch.float32):
    """A residual stream (rows, k) in float32 and a norm weight (k,) away from ones."""
    gen = torch.Generator().manual_seed(seed)
    residual = (torch.randn(rows, k, generator=gen) * 3).to(DEVICE)
    norm_weight = (1 + 0.5 * torch.randn(k, generator=gen)).to(DEVICE, dtype)
    return residual, norm_weight


def partial_sums(h, parts):
    """(rows, parts) sums of squares of h's rows over uneven column slices."""
    bounds = torch.linspace(0, h.shape[1], parts + 1).round().long().tolist()
    bounds[1] = max(bounds[1], 1)
    return torch.stack([h[:, a:b].float().pow(2).sum(-1) for a, b in zip(bounds, bounds[1:])], dim=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("rows", "launch", "parts"), [(1, (16, 16, 256, 4, 3), 1), (5, (16, 16, 64, 4, 3, 3), 3),
                                                       (40, (64, 32, 128, 4, 3), 7)])
def test_deferred_norm_input_equals_the_product_of_the_normed_rows(dtype, rows, launch, parts):
    """x = h * norm weight with the sums of squares of h's rows in parts: the kernel
    (split over K in the second case) gives F.linear of rms_norm(h) (bias after)."""
    from seqmamba.kernels.rmsnorm.reference import rms_norm_reference

    residual, norm_weight = make_norm(rows, rows, K, dtype=dtype)
    _, weight, b = make(rows, rows, dtype=dtype)
    normed = rms_norm_reference(residual, norm_weight.float(), eps=1e-5)[0].to(dtype)
    want = F.linear(normed.float(), weight.float(), b.float())
    scaled, sumsq = (residual * norm_weight.float()).to(dtype), partial_sums(residual, parts)
    got = decode_linear_triton(scaled, weight, b, launch=launch, row_sumsq=sumsq, eps=1e-5)
    torch.testing.assert_close(got.float(), want, rtol=TOL[dtype], atol=TOL[dtype])
    for backend in ("triton", "reference"):  # the public op: the rule's launch, the reference
        got = decode_linear(scaled, weight, b, backend=backend, row_sumsq=sumsq, eps=1e-5)
        torch.testing.assert_close(got.float(), want, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("rows", "launch", "residual_in_fp32"), [(3, (16, 16, 256, 4, 3), True),
                                                                  (17, (32, 16, 128, 4, 3, 3), False),
                                                                  (64, (64, 16, 256, 4, 3), True)])
def test_add_norm_epilogue_equals_linear_then_add_and_rms_norm(dtype, rows, launch, residual_in_fp32):
    """The epilogue's new residual, and its deferred norm once applied, against the same
    launch without the epilogue followed by the rms_norm reference (the unfused decode
    step's add + norm; the same product, so the same rounding of its output)."""
    from seqmamba.kernels.decode_linear.kernel import decode_linear_add_norm_triton
    from seqmamba.kernels.rmsnorm.reference import residual_dtype, rms_norm_reference

    x, weight, b = make(300 + rows, rows, dtype=dtype, strided=True)
    residual, norm_weight = make_norm(rows, rows, N, dtype=dtype)
    if not residual_in_fp32:
        residual = residual.to(dtype)
    out = decode_linear_triton(x, weight, b, launch=launch)
    want_normed, want_residual = rms_norm_reference(out, norm_weight, residual, eps=1e-5,
                                                    residual_in_fp32=residual_in_fp32)
    scaled, sumsq, new_residual = decode_linear_add_norm_triton(
        x, weight, b, residual, norm_weight, residual_dtype(dtype, residual_in_fp32), launch=launch)
    assert sumsq.shape == (rows, -(-N // launch[1])) and new_residual.dtype == want_residual.dtype
    tol = TOL[dtype]
    torch.testing.assert_close(new_residual.float(), want_residual.float(), rtol=tol, atol=tol)
    normed = scaled.float() * torch.rsqrt(sumsq.sum(-1, keepdim=True) / N + 1e-5)
    torch.testing.assert_close(normed, want_normed.float(), rtol=tol, atol=tol)


@pytest.mark.parametrize("rows", [2, 16, 64])
@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_add_norm_then_deferred_product_equals_the_unfused_chain(rows, backend):
    """out_proj -> add -> norm -> in_proj through the two public ops (deferred or not, as
    the launch rule decides: cuBLAS's out_proj at 17-32 rows hands over normed rows)
    against F.linear, rms_norm and F.linear; float32."""
    from seqmamba.kernels import decode_linear_add_norm
    from seqmamba.kernels.rmsnorm.reference import rms_norm_reference

    k, n = (1536, 768) if ON_GPU else (300, 48)
    x, weight, b = make(400 + rows, rows, n=n, k=k)
    residual, norm_weight = make_norm(rows, rows, n)
    _, next_weight, _ = make(500 + rows, rows, n=40, k=n)
    normed, new_residual = decode_linear_add_norm(x, weight, b, residual, norm_weight, eps=1e-6,
                                                  residual_in_fp32=True, backend=backend)
    deferred = backend == "reference" or default_launch(rows, n, k) is not None
    assert (normed.row_sumsq is not None) == deferred and normed.eps == 1e-6
    got = decode_linear(normed.rows, next_weight, backend=backend, row_sumsq=normed.row_sumsq, eps=normed.eps)
    want_normed, want_residual = rms_norm_reference(F.linear(x, weight, b), norm_weight, residual, eps=1e-6,
                                                    residual_in_fp32=True)
    torch.testing.assert_close(new_residual, want_residual, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, F.linear(want_normed, next_weight), rtol=1e-4, atol=1e-5)


def test_deferred_norm_errors_name_the_argument():
    from seqmamba.kernels import decode_linear_add_norm

    x, weight, b = make(0, 2)
    residual, norm_weight = make_norm(0, 2, N)
    sumsq = torch.ones(2, 3, device=DEVICE)
    with pytest.raises(ValueError, match=r"decode_linear: row_sumsq must have shape \(M, P\)"):
        decode_linear(x, weight, row_sumsq=sumsq[:1])
    with pytest.raises(ValueError, match=r"decode_linear: row_sumsq has dtype torch.float16"):
        decode_linear(x, weight, row_sumsq=sumsq.half())
    with pytest.raises(ValueError, match="row_sumsq must hold at least one partial sum"):
        decode_linear(x, weight, row_sumsq=sumsq[:, :0])
    with pytest.raises(ValueError, match="decode_linear: eps must be a positive finite number"):
        decode_linear(x, weight, row_sumsq=sumsq, eps=0.0)
    with pytest.raises(ValueError, match=r"decode_linear: residual must have shape \(M, N\)"):
        decode_linear_add_norm(x, weight, b, residual[:, 1:], norm_weight)
    with pytest.raises(ValueError, match=r"decode_linear: norm_weight must have shape \(N,\)"):
        decode_linear_add_norm(x, weight, b, residual, norm_weight[:-1])
    with pytest.raises(ValueError, match="decode_linear: eps must be a positive finite number"):
        decode_linear_add_norm(x, weight, b, residual, norm_weight, eps=float("nan"))


def test_deferred_norm_custom_ops_pass_opcheck():
    from seqmamba.kernels.decode_linear.op import decode_linear_add_norm_op, decode_linear_op

    x, weight, b = make(8, 3, n=24, k=40)
    residual, norm_weight = make_norm(8, 3, 24)
    torch.library.opcheck(decode_linear_add_norm_op, (x, weight, b, residual, norm_weight, True))
    scaled, sumsq, _ = decode_linear_add_norm_op(x, weight, b, residual, norm_weight, True)
    _, next_weight, _ = make(9, 3, n=16, k=24)
    torch.library.opcheck(decode_linear_op, (scaled, next_weight, None, sumsq, 1e-5))
