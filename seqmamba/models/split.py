"""Splitting the in_proj output into the mixer's two branches, with a backward that
writes both gradients into one buffer."""
from __future__ import annotations

import torch

from seqmamba.kernels.layout import empty_in_stride_order


class _SplitChannels(torch.autograd.Function):
    """(batch, 2D, L) -> two (batch, D, L) views; backward: one (batch, 2D, L) gradient.

    ``torch.chunk``'s backward concatenates the two gradients into a new contiguous
    tensor, which the matrix product's backward then copies again into its own
    (2D, batch * L) layout. This one allocates the gradient laid out like the input
    (the product's layout when the input is its view) and copies each half in once.
    """

    @staticmethod
    def forward(ctx, xz: torch.Tensor, half: int) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.shape, ctx.strides, ctx.half = xz.shape, xz.stride(), half
        return xz[:, :half], xz[:, half:]

    @staticmethod
    def backward(ctx, dx: torch.Tensor | None, dz: torch.Tensor | None) -> tuple[torch.Tensor, None]:
        grad = dx if dx is not None else dz
        dxz = empty_in_stride_order(ctx.shape, ctx.strides, dtype=grad.dtype, device=grad.device)
        for part, g in ((dxz[:, : ctx.half], dx), (dxz[:, ctx.half :], dz)):
            if g is None:
                part.zero_()
            else:
                part.copy_(g)
        return dxz, None


def split_channels(xz: torch.Tensor, half: int) -> tuple[torch.Tensor, torch.Tensor]:
    """xz (batch, 2 * half, L) -> (x, z), each (batch, half, L): views of xz."""
    return _SplitChannels.apply(xz, half)
