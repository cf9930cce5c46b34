"""The multi-scale (U-Net) Mamba backbone, in the layout of SaShiMi (arXiv 2202.09729).

With pooling factors (p_0, .., p_{K-1}) and width expansion e::

    ids -> embedding (width d)
    level 0:  down stack (d)        -> skip_0 -> DownPool(p_0) -> width d * e
    level 1:  down stack (d * e)    -> skip_1 -> DownPool(p_1) -> width d * e^2
      ...
    center stack (d * e^K), at 1 / (p_0 .. p_{K-1}) of the sampling rate
    level K-1: UpPool(p_{K-1}) + skip_{K-1} -> up stack (d * e^{K-1})
      ...
    level 0:  UpPool(p_0) + skip_0 -> up stack (d) -> norm_f

Every stack is ``n_layer`` Mamba blocks (``model.n_layer``), so the network has
``n_layer * (2K + 1)`` blocks; the coarse levels see long contexts cheaply. The
pooling is causal (:mod:`.pooling`), so the whole network is: output t depends on
inputs 0 .. t only, at any length (no padding to a multiple of the pooling factors).

Step mode (:meth:`AudioUNet.step`) runs one fine position at a time: a level's down
stack steps, its DownPool buffers the input and, every p-th step, hands one coarse
vector to the level below, whose output the UpPool releases over the next p steps.
:meth:`AudioUNet.forward` with a state fills the same buffers and Mamba states from a
whole prompt, so that stepping on continues exactly where the parallel pass ends.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from seqmamba.models import LayerCache, ModelConfig, add_norm, allocate_inference_cache, init_backbone_weights, make_norm

from .pooling import DownPool, PoolState, UpPool
from .stack import MambaStack


@dataclass
class LevelState:
    """Step-mode state of one level: its two stacks' Mamba caches and its pooling buffers."""

    down: list[LayerCache]
    up: list[LayerCache]
    pool: PoolState


@dataclass
class UNetState:
    """Everything the network remembers between steps, for ``batch`` sequences."""

    levels: list[LevelState]
    center: list[LayerCache]


class AudioUNet(nn.Module):
    """Token ids (batch, L) -> normed hidden states (batch, L, d_model).

    Args:
        config: the blocks' shape at level 0 (``d_model``, ``n_layer`` blocks per stack,
            ``d_state``, ...); level i has width ``d_model * expand ** i``.
        pool: pooling factors, finest first (SaShiMi: [4, 4]).
        expand: width multiplier at each down-pool (SaShiMi: 2).
    """

    def __init__(self, config: ModelConfig, *, pool: list[int], expand: int) -> None:
        super().__init__()
        config.validate()
        if not pool or any(not isinstance(p, int) or p < 2 for p in pool):
            raise ValueError(f"task.pool: must be a non-empty list of pooling factors >= 2, got {pool}")
        if not isinstance(expand, int) or expand < 1:
            raise ValueError(f"task.pool_expand: must be a positive integer, got {expand}")
        self.config = config
        self.pool = list(pool)
        widths = [config.d_model * expand**i for i in range(len(pool) + 1)]
        self.widths = widths
        layer = iter(range(0, config.n_layer * (2 * len(pool) + 1), config.n_layer))

        def stack(level: int) -> MambaStack:
            return MambaStack(dataclasses.replace(config, d_model=widths[level]), n_layer=config.n_layer,
                              first_layer=next(layer))

        self.embedding = nn.Embedding(config.padded_vocab_size, config.d_model)
        self.down = nn.ModuleList(stack(i) for i in range(len(pool)))
        self.down_pools = nn.ModuleList(DownPool(widths[i], widths[i + 1], factor=p) for i, p in enumerate(pool))
        self.center = stack(len(pool))
        self.up_pools = nn.ModuleList(UpPool(widths[i + 1], widths[i], factor=p) for i, p in enumerate(pool))
        self.up = nn.ModuleList(stack(i) for i in reversed(range(len(pool))))
        self.norm_f = make_norm(config.d_model, eps=config.norm_epsilon, rms_norm=config.rms_norm)
        # The backbone's initialisation, with out_proj scaled for the total depth.
        init_backbone_weights(self, dataclasses.replace(config, n_layer=config.n_layer * (2 * len(pool) + 1)))

    def _up(self, level: int) -> MambaStack:
        """The up stack of ``level`` (``self.up`` runs from the coarsest level up)."""
        return self.up[len(self.pool) - 1 - level]

    def forward(self, input_ids: torch.Tensor, *, state: UNetState | None = None) -> torch.Tensor:
        """input_ids: (batch, L) int64 -> (batch, L, d_model). With ``state`` (from
        :meth:`allocate_state`, fresh), it is filled to continue after position L - 1."""
        if input_ids.dim() != 2 or input_ids.is_floating_point():
            raise ValueError(f"input_ids must be a (batch, L) tensor of integer ids, got shape {tuple(input_ids.shape)}")
        x = self.embedding(input_ids)
        skips = []
        for level, (stack, pool) in enumerate(zip(self.down, self.down_pools)):
            x = stack(x, caches=None if state is None else state.levels[level].down)
            skips.append(x)
            if state is not None:
                pool.load_(x, state.levels[level].pool)
            x = pool(x)
        x = self.center(x, caches=None if state is None else state.center)
        for level in reversed(range(len(self.pool))):
            up_pool = self.up_pools[level]
            fine = up_pool(x, length=skips[level].shape[1])
            if state is not None:
                up_pool.load_(x, state.levels[level].pool)
            x = self._up(level)(fine + skips[level], caches=None if state is None else state.levels[level].up)
        return self._final_norm(x)

    def step(self, input_ids: torch.Tensor, state: UNetState) -> torch.Tensor:
        """One position for every sequence: input_ids (batch,) -> (batch, d_model),
        the hidden state :meth:`forward` gives at that position; ``state`` advances."""
        x = self.embedding(input_ids)
        skips = []
        for level, (stack, pool) in enumerate(zip(self.down, self.down_pools)):
            x = stack.step(x, state.levels[level].down)
            skips.append(x)
            x = pool.step(x, state.levels[level].pool)
            if x is None:  # this level's coarse position is not complete: deeper levels wait
                break
        coarse = None if x is None else self.center.step(x, state.center)
        # Up the levels that ran this step; ``coarse`` is the output of the level below (or None).
        for level in reversed(range(len(skips))):
            level_state = state.levels[level]
            fine = self.up_pools[level].step(coarse, level_state.pool)
            coarse = self._up(level).step(fine + skips[level], level_state.up)
            level_state.pool.steps += 1
        assert coarse is not None
        return self._final_norm(coarse)

    def _final_norm(self, x: torch.Tensor) -> torch.Tensor:
        normed, _ = add_norm(self.norm_f, x, None, residual_in_fp32=self.config.residual_in_fp32)
        return normed

    def allocate_state(self, batch: int, *, state_dtype: torch.dtype | None = torch.float32) -> UNetState:
        """A zeroed step-mode state for ``batch`` sequences, on the parameters' device
        and in their dtype (SSM states in ``state_dtype``)."""
        weight = self.embedding.weight

        def caches(stack: MambaStack) -> list[LayerCache]:
            return allocate_inference_cache(stack, batch, state_dtype=state_dtype).layers

        def buffer(level: int) -> torch.Tensor:
            return torch.zeros(batch, self.pool[level], self.widths[level], dtype=weight.dtype, device=weight.device)

        levels = [
            LevelState(down=caches(self.down[i]), up=caches(self._up(i)), pool=PoolState(buffer(i), buffer(i)))
            for i in range(len(self.pool))
        ]
        return UNetState(levels=levels, center=caches(self.center))
