"""The mixer's split of the in_proj output: views forward, one gradient buffer backward."""
from __future__ import annotations

import torch

from seqmamba.models.split import split_channels


def test_split_gives_views_and_the_gradient_of_chunk_in_the_input_layout():
    batch, half, length = 3, 5, 7
    # As the mixer makes it: (2D, batch * L) product viewed as (batch, 2D, L).
    product = torch.randn(2 * half, batch * length, dtype=torch.float64, requires_grad=True)
    xz = product.view(2 * half, batch, length).permute(1, 0, 2)
    x, z = split_channels(xz, half)
    assert x.data_ptr() == xz.data_ptr() and torch.equal(x, xz[:, :half]) and torch.equal(z, xz[:, half:])
    gx, gz = torch.randn_like(x), torch.randn_like(z)
    (grad,) = torch.autograd.grad((x * gx).sum() + (z * gz).sum(), product)
    assert torch.equal(grad, torch.cat([gx, gz], dim=1).permute(1, 0, 2).reshape(2 * half, batch * length))

    # The gradient the split hands back is laid out like xz: (2D, batch, L) in memory.
    xz_leaf = xz.detach().requires_grad_()
    x, z = split_channels(xz_leaf, half)
    (grad,) = torch.autograd.grad((x * gx).sum() + (z * gz).sum(), xz_leaf)
    assert grad.stride() == xz.stride()


def test_an_unused_branch_gets_a_zero_gradient():
    xz = torch.randn(2, 8, 5, requires_grad=True)
    x, _ = split_channels(xz, 4)
    (grad,) = torch.autograd.grad(x.sum(), xz)
    assert torch.equal(grad[:, :4], torch.ones(2, 4, 5)) and torch.equal(grad[:, 4:], torch.zeros(2, 4, 5))
    torch.autograd.gradcheck(lambda t: split_channels(t, 2), torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True))
