"""Audio language models: the backbone chosen by ``task.backbone`` with a head over the
sample classes.

* ``unet``: :class:`AudioUNetLM`, the multi-scale network of :mod:`.unet`.
* ``plain``: :class:`~seqmamba.models.MambaLM`, one stack of blocks at the sampling
  rate (the Mamba paper's flat baseline); it generates through the library's own
  decoder (CUDA graphs included).

Both map ids (batch, L) to logits (batch, L, padded vocab) and have ``generate`` with
the options of ``seqmamba generate``.
"""
from __future__ import annotations

import torch
from torch import nn

from seqmamba.models import MambaLM, ModelConfig

from .generation import generate_stepwise
from .unet import AudioUNet, UNetState

BACKBONES = ("unet", "plain")
"""Allowed values of ``task.backbone``."""


class AudioUNetLM(nn.Module):
    """:class:`~.unet.AudioUNet` + a Linear head (tied to the embedding when
    ``config.tie_embeddings``). ``forward(ids (batch, L)) -> (batch, L, padded_vocab)``."""

    def __init__(self, config: ModelConfig, *, pool: list[int], expand: int) -> None:
        super().__init__()
        self.config = config
        self.backbone = AudioUNet(config, pool=pool, expand=expand)
        self.lm_head = nn.Linear(config.d_model, config.padded_vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.backbone.embedding.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.backbone(input_ids))

    def allocate_state(self, batch: int, *, state_dtype: torch.dtype | None = torch.float32) -> UNetState:
        """A fresh step-mode state (see :meth:`AudioUNet.allocate_state`)."""
        return self.backbone.allocate_state(batch, state_dtype=state_dtype)

    def prefill(self, input_ids: torch.Tensor, state: UNetState) -> torch.Tensor:
        """Whole prompts (batch, L) through the parallel network, filling a fresh
        ``state``; returns the logits after the last position, (batch, padded_vocab)."""
        return self.lm_head(self.backbone(input_ids, state=state)[:, -1])

    def step(self, input_ids: torch.Tensor, state: UNetState) -> torch.Tensor:
        """One id per sequence (batch,) -> logits for the next one (batch, padded_vocab)."""
        return self.lm_head(self.backbone.step(input_ids, state))

    def generate(self, input_ids: torch.Tensor | list[torch.Tensor], max_new_tokens: int, **options) -> torch.Tensor:
        """Prompts (batch, L) -> (batch, L + max_new_tokens); options and limits at
        :func:`~.generation.generate_stepwise`."""
        return generate_stepwise(self, input_ids, max_new_tokens, **options)


def build_audio_lm(config: ModelConfig, *, backbone: str, pool: list[int], expand: int) -> nn.Module:
    """The language model named by ``backbone`` (one of :data:`BACKBONES`); ``config``
    must have its vocab_size set."""
    if backbone == "unet":
        return AudioUNetLM(config, pool=pool, expand=expand)
    if backbone == "plain":
        return MambaLM(config)
    raise ValueError(f"task.backbone: must be one of {', '.join(BACKBONES)}, got {backbone!r}")
