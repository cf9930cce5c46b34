"""A pre-norm residual block around the Mamba mixer."""
from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .mixer import Mamba, MixerState
from .norm import add_norm, make_norm


class Block(nn.Module):
    """One layer of the backbone: ``residual += hidden; hidden = mixer(norm(residual))``.

    This is the usual pre-norm block (x + mixer(norm(x))) with the addition moved to the
    start of the next block, as mamba_ssm orders it: add -> norm -> mixer. The sum and
    the norm then sit side by side, so the fused add+norm op (:func:`add_norm`) does both
    in one pass over memory. The block therefore takes and returns the pair
    (hidden, residual).
    """

    def __init__(self, config: ModelConfig, *, layer_idx: int) -> None:
        super().__init__()
        self.residual_in_fp32 = config.residual_in_fp32
        self.norm = make_norm(config.d_model, eps=config.norm_epsilon, rms_norm=config.rms_norm)
        self.mixer = Mamba.from_config(
            config,
            layer_idx=layer_idx,
            recompute=config.mixer_recompute and not config.checkpoints_layer(layer_idx),
        )

    def forward(
        self, hidden_states: torch.Tensor, residual: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden_states: (batch, L, d_model), the previous block's mixer output (the
        embeddings for the first block); residual: (batch, L, d_model), the stream
        before it (None for the first block). Returns the new (hidden_states, residual).
        """
        normed, residual = add_norm(self.norm, hidden_states, residual, residual_in_fp32=self.residual_in_fp32)
        return self.mixer(normed), residual

    def forward_with_state(
        self, hidden_states: torch.Tensor, residual: torch.Tensor | None, state: MixerState | None
    ) -> tuple[torch.Tensor, torch.Tensor, MixerState]:
        """:meth:`forward` continuing a sequence: ``state`` is the mixer's state after the
        previous chunk (None at the start). Returns (hidden_states, residual, the mixer's
        state after the last step)."""
        normed, residual = add_norm(self.norm, hidden_states, residual, residual_in_fp32=self.residual_in_fp32)
        hidden_states, state = self.mixer(normed, state=state, return_state=True)
        return hidden_states, residual, state
