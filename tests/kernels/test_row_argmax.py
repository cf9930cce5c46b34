"""``row_argmax``: the split Triton kernel against torch.argmax on random logits, ties,
NaN and infinities, strided rows, its ``out`` buffer and its errors."""
from __future__ import annotations

import pytest
import torch

from seqmamba.kernels import row_argmax, split_counters
from seqmamba.kernels.row_argmax import kernel

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Under the interpreter, small slices: several programs a row at small V.
SMALL_BLOCK = 64


@pytest.fixture(autouse=True)
def small_slices(monkeypatch):
    if DEVICE == "cpu":
        monkeypatch.setattr(kernel, "BLOCK_V", SMALL_BLOCK)


def logits(seed, rows, v, dtype=torch.float32):
    return torch.randn(rows, v, generator=torch.Generator().manual_seed(seed)).to(DEVICE, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("rows", "v"), [(1, 1), (3, 63), (5, 200), (2, 50277 if DEVICE == "cuda" else 517)])
def test_matches_torch_argmax(dtype, rows, v):
    x = logits(rows * 1000 + v, rows, v, dtype)
    for _ in range(2):  # twice: the counters are back at 0 after each launch
        got = row_argmax(x, backend="triton")
        assert got.dtype == torch.long and torch.equal(got, torch.argmax(x, dim=-1))
    assert not split_counters._COUNTERS[x.device][:rows].any()


def test_first_maximum_nan_and_infinities_as_torch():
    v = 3 * SMALL_BLOCK + 5
    x = logits(1, 6, v)
    x[0, [10, 70, 150]] = 9.0  # ties in three slices: the first wins
    x[1, [150, 20]] = float("inf")
    x[2, 100] = float("nan")
    x[2, 5] = float("inf")  # a NaN beats an earlier +inf
    x[3] = float("-inf")  # all -inf: the first index
    x[4, [130, 140]] = float("nan")
    x[5, v - 1] = 50.0  # the last column
    want = torch.argmax(x.cpu(), dim=-1)
    assert want.tolist() == [10, 20, 100, 0, 130, v - 1]
    assert torch.equal(row_argmax(x, backend="triton").cpu(), want)


def test_strided_rows_and_out_buffer():
    """A (rows, vocab) slice of a padded head's logits, written into a given buffer."""
    x = logits(2, 4, 300)
    out = torch.full((4,), -1, dtype=torch.long, device=DEVICE)
    assert row_argmax(x[:, :257], out=out, backend="triton") is out
    assert torch.equal(out, torch.argmax(x[:, :257], dim=-1))
    ref = torch.empty_like(out)
    assert row_argmax(x[:, :257], out=ref, backend="reference") is ref and torch.equal(ref, out)


def test_custom_op_schema():
    x = logits(3, 2, 70)
    torch.library.opcheck(torch.ops.seqmamba.row_argmax.default, (x, torch.empty(2, dtype=torch.long, device=DEVICE)))


@pytest.mark.parametrize(("args", "message"), [
    ((torch.zeros(3),), r"x must have shape \(rows, V\)"),
    ((torch.zeros(0, 4),), "x must have rows and V of at least 1"),
    ((torch.zeros(2, 4), torch.zeros(3, dtype=torch.long)), r"out must have shape \(rows,\)"),
    ((torch.zeros(2, 4), torch.zeros(2)), "out has dtype torch.float32"),
    ((torch.zeros(2, 4, dtype=torch.int64),), "x has dtype torch.int64"),
])
def test_errors_name_the_argument(args, message):
    with pytest.raises(ValueError, match=message):
        row_argmax(*args)
