"""The backward's atomic-sum workspace and its finishing kernel against plain torch sums."""
from __future__ import annotations

import pytest
import torch

from seqmamba.kernels.selective_scan.triton_sums import atomic_sums, finish_sums

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BATCH, DIM, N, L = 2, 6, 4, 37


def bc(form: str, dtype: torch.dtype) -> torch.Tensor:
    shape = {"varying": (BATCH, N, L), "grouped": (BATCH, 2, N, L), "invariant": (DIM, N)}[form]
    return torch.randn(shape, device=DEVICE).to(dtype)


@pytest.mark.parametrize("copies", (1, 3))
@pytest.mark.parametrize("forms", [("varying", "varying"), ("grouped", "grouped"), ("invariant", "varying")])
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16))
@pytest.mark.parametrize("with_D", (True, False))
def test_finish_adds_copies_and_casts(copies, forms, dtype, with_D):
    B, C = (bc(f, torch.float32 if f == "invariant" else dtype) for f in forms)
    D = torch.randn(DIM, device=DEVICE) if with_D else None
    bias = torch.randn(DIM, device=DEVICE)
    sums = atomic_sums(B, C, batch=BATCH, dim=DIM, n_state=N, length=L, copies=copies,
                       dD=with_D, dbias=True, device=torch.device(DEVICE))
    totals = [sums.dA, sums.dB, sums.dC, sums.dD, sums.dbias]
    assert not sums.workspace.any()
    # Disjoint views of it, each on a 64-byte boundary: filling them one by one leaves
    # as many nonzeros as they hold together.
    for t in totals:
        if t is not None:
            assert not t.any() and t.data_ptr() % 64 == 0
            t.copy_(torch.randn(t.shape, device=DEVICE) + 10.0)
    assert sums.workspace.count_nonzero() == sum(t.numel() for t in totals if t is not None)

    got = finish_sums(sums, B, C, D, bias)

    def want(total: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        summed = total.sum(0) if total.dim() == 5 else total
        return summed.reshape(like.shape).to(like.dtype)

    expected = [want(sums.dA, sums.dA), want(sums.dB, B), want(sums.dC, C),
                want(sums.dD, D) if with_D else None, want(sums.dbias, bias)]
    for name, g, w in zip(("dA", "dB", "dC", "dD", "dbias"), got, expected):
        if w is None:
            assert g is None, name
            continue
        assert g.shape == w.shape and g.dtype == w.dtype, name
        torch.testing.assert_close(g, w, msg=name)
    # A custom op's outputs may not share memory with each other or the workspace.
    pointers = [t.untyped_storage().data_ptr() for t in got if t is not None]
    assert len(set(pointers)) == len(pointers) and sums.workspace.untyped_storage().data_ptr() not in pointers
