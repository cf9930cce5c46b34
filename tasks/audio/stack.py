"""A stack of the backbone's Mamba blocks at one width, run whole or one step at a time."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from seqmamba.models import Block, LayerCache, ModelConfig, add_norm
from seqmamba.models.decode import blocks_step


class MambaStack(nn.Module):
    """``n_layer`` pre-norm residual :class:`~seqmamba.models.Block`\\ s of width
    ``config.d_model``: x (batch, L, d) -> x + the sum of the blocks' mixer outputs
    (the residual stream after the last block; no final norm, which the network applies
    once at its end, as :class:`~seqmamba.models.MambaBackbone` does).

    Blocks are named ``layers.{i}`` with the backbone's parameter names inside;
    ``layer_idx`` counts on from ``first_layer`` across the stacks of a network.
    """

    def __init__(self, config: ModelConfig, *, n_layer: int, first_layer: int) -> None:
        super().__init__()
        self.config = config
        self.first_layer = first_layer
        self.layers = nn.ModuleList(Block(config, layer_idx=first_layer + i) for i in range(n_layer))

    def forward(self, x: torch.Tensor, *, caches: list[LayerCache] | None = None) -> torch.Tensor:
        """x: (batch, L, d) -> (batch, L, d). With ``caches`` (one per block), each
        block's state after the last step is stored there, to continue step by step."""
        if x.shape[1] == 0:  # a coarse level that has not completed a step yet
            return x
        hidden, residual = x, None
        for i, block in enumerate(self.layers):
            if caches is not None:
                normed, residual = add_norm(block.norm, hidden, residual, residual_in_fp32=block.residual_in_fp32)
                hidden, state = block.mixer(normed, return_state=True)
                caches[i].load_(state)
            elif self.config.checkpoints_layer(self.first_layer + i):
                hidden, residual = checkpoint(block, hidden, residual, use_reentrant=False)
            else:
                hidden, residual = block(hidden, residual)
        return (residual + hidden).to(x.dtype)

    def step(self, x: torch.Tensor, caches: list[LayerCache]) -> torch.Tensor:
        """One position: x (batch, d) -> (batch, d), the same arithmetic as
        :meth:`forward`, with the recurrent mixer step; ``caches`` advance in place."""
        hidden, residual = blocks_step(self.layers, x, caches)
        return (residual + hidden).to(x.dtype)
