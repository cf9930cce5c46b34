"""The backbone: embedding, a stack of Mamba blocks, a final norm."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .block import Block
from .config import ModelConfig
from .mixer import Mamba, MixerState
from .norm import add_norm, make_norm


class MambaBackbone(nn.Module):
    """Token ids (batch, L) int64 -> final normed hidden states (batch, L, d_model).

    Parameter names match mamba_ssm's ``MixerModel``: ``embedding``, ``layers.{i}.norm``,
    ``layers.{i}.mixer``, ``norm_f``. Task heads (classifiers, ...) go on top of it.

    With ``config.checkpoint_every = k > 0``, blocks 0, k, 2k, ... run under activation
    checkpointing: their forward keeps only the block's inputs (hidden, residual) for
    the backward, which reruns the block. Memory then stops growing with the depth
    times the mixer's intermediates, for one extra forward of those blocks. (A backend
    chosen with ``use_backend`` must then also be in force during the backward.)
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.embedding = nn.Embedding(config.padded_vocab_size, config.d_model)
        self.layers = nn.ModuleList(Block(config, layer_idx=i) for i in range(config.n_layer))
        self.norm_f = make_norm(config.d_model, eps=config.norm_epsilon, rms_norm=config.rms_norm)
        init_backbone_weights(self, config)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids: (batch, L) integer ids < vocab_size -> (batch, L, d_model)."""
        _check_input_ids(input_ids)
        hidden_states, residual = self.embedding(input_ids), None
        for i, layer in enumerate(self.layers):
            if self.config.checkpoints_layer(i):
                hidden_states, residual = checkpoint(layer, hidden_states, residual, use_reentrant=False)
            else:
                hidden_states, residual = layer(hidden_states, residual)
        return self._final_norm(hidden_states, residual)

    def forward_with_states(
        self, input_ids: torch.Tensor, states: list[MixerState] | None = None
    ) -> tuple[torch.Tensor, list[MixerState]]:
        """One chunk of longer sequences: input_ids (batch, l) continue the sequences whose
        earlier chunks left each layer's mixer in ``states`` (one per layer; None at the
        start). Returns the normed hidden states (batch, l, d_model) and each layer's
        state after the chunk's last step, to pass with the next chunk. Differentiable in
        ``states`` too, so a backward through chunk after chunk is exact.
        """
        _check_input_ids(input_ids)
        if states is not None and len(states) != len(self.layers):
            raise ValueError(f"forward_with_states: got {len(states)} states for {len(self.layers)} layers")
        hidden_states, residual = self.embedding(input_ids), None
        new_states = []
        for i, layer in enumerate(self.layers):
            state = None if states is None else states[i]
            if self.config.checkpoints_layer(i):
                hidden_states, residual, state = checkpoint(
                    layer.forward_with_state, hidden_states, residual, state, use_reentrant=False
                )
            else:
                hidden_states, residual, state = layer.forward_with_state(hidden_states, residual, state)
            new_states.append(state)
        return self._final_norm(hidden_states, residual), new_states

    def _final_norm(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        # The last residual add is fused into the final norm, as in every block.
        normed, _ = add_norm(self.norm_f, hidden_states, residual, residual_in_fp32=self.config.residual_in_fp32)
        return normed


def _check_input_ids(input_ids: object) -> None:
    if not isinstance(input_ids, torch.Tensor):
        raise ValueError(f"input_ids must be a (batch, L) tensor of token ids, got {type(input_ids).__name__}")
    if input_ids.dim() != 2 or input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
        raise ValueError(
            f"input_ids must be a (batch, L) tensor of integer token ids, "
            f"got shape {tuple(input_ids.shape)} and dtype {input_ids.dtype}"
        )


def init_backbone_weights(backbone: MambaBackbone, config: ModelConfig) -> None:
    """mamba_ssm's initialisation on top of the layers' own.

    Embedding ~ N(0, initializer_range^2); every Linear bias zero except each mixer's
    ``dt_proj.bias``, which holds the step-size init; with ``rescale_prenorm_residual``,
    each ``out_proj.weight`` redrawn (PyTorch's default Linear init) and divided by
    sqrt(n_layer), so that the n_layer residual updates sum to a stream of roughly
    constant scale at any depth (GPT-2's scheme, one residual branch per layer).
    Other weights (in_proj, conv1d, x_proj, norms) keep their PyTorch defaults.
    """
    mixers = [m for m in backbone.modules() if isinstance(m, Mamba)]
    keep = {id(m.dt_proj.bias) for m in mixers}
    with torch.no_grad():
        nn.init.normal_(backbone.embedding.weight, std=config.initializer_range)
        for module in backbone.modules():
            if isinstance(module, nn.Linear) and module.bias is not None and id(module.bias) not in keep:
                module.bias.zero_()
        if config.rescale_prenorm_residual:
            for mixer in mixers:
                nn.init.kaiming_uniform_(mixer.out_proj.weight, a=math.sqrt(5))
                mixer.out_proj.weight /= math.sqrt(config.n_layer)
