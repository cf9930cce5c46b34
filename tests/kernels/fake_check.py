"""Checks that a custom op's fake (meta) implementation describes its real outputs."""
from __future__ import annotations

from collections.abc import Sequence

import torch


def assert_fake_matches_real(op, args: Sequence[object]) -> None:
    """Runs ``op`` on ``args`` and on fake copies of them: every output must agree in shape,
    strides and dtype (torch.compile plans memory and indexing with the fake ones)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    real = op(*args)
    with FakeTensorMode() as mode:
        fake = op(*[mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args])
    real, fake = ([x] if isinstance(x, torch.Tensor) else list(x) for x in (real, fake))
    assert len(fake) == len(real), op
    for i, (f, r) in enumerate(zip(fake, real)):
        assert (f.shape, f.stride(), f.dtype) == (r.shape, r.stride(), r.dtype), (op, i)
