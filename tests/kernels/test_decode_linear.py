"""``decode_linear`` (a decode step's small products): the Triton kernel against the
reference (F.linear) on random inputs, its launch rule, and the errors it raises."""
from __future__ import annotations

import math

import pytest
import torch

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
    # 128-wide parts up to 8 rows, in three above 16; out_proj-like ones (wide, long K) on it up to 8 rows
    # and from 33 rows; in_proj-like ones (wide, short K) at every row count, with 32
    # columns a program above 16 rows when very wide; larger products on cuBLAS.
    assert all(default_launch(rows, 80, 1536) is not None for rows in (1, 2, 16, 33, 64))
    assert default_launch(1, 80, 1536) == default_launch(8, 80, 1536) == (16, 16, 128, 4, 3, 12)
    assert default_launch(16, 80, 1536) == (16, 16, 256, 4, 3) and default_launch(64, 80, 1536) == (64, 16, 256, 4, 3, 3)
    assert default_launch(17, 80, 1536) == (32, 16, 256, 4, 3, 3)
    assert default_launch(1, 768, 1536) == default_launch(8, 768, 1536) == (16, 16, 256, 4, 3)
    assert all(default_launch(rows, 768, 1536) is None for rows in (9, 16, 32))
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
