"""``MambaLM``: the backbone with a language-model head."""
from __future__ import annotations

import torch
from torch import nn

from seqmamba.kernels.cross_entropy.op import check_labels_in_range

from .backbone import MambaBackbone
from .config import ModelConfig
from .lm_loss import LMLoss, linear_cross_entropy


class MambaLM(nn.Module):
    """Mamba language model; state dict keys match mamba_ssm's ``MambaLMHeadModel``.

    ``backbone``: :class:`MambaBackbone`; ``lm_head``: Linear(d_model, padded vocab, no
    bias), sharing the embedding matrix when ``config.tie_embeddings``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = MambaBackbone(config)
        self.lm_head = nn.Linear(config.d_model, config.padded_vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.backbone.embedding.weight

    def forward_hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids: (batch, L) int64 -> final normed hidden states (batch, L, d_model)."""
        return self.backbone(input_ids)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids: (batch, L) int64 -> logits (batch, L, padded_vocab_size).

        Rows past ``vocab_size`` are padding; their logits are real numbers but no
        label ever points at them.
        """
        return self.lm_head(self.backbone(input_ids))

    def loss(
        self, input_ids: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = -100, check_labels: bool = True
    ) -> LMLoss:
        """Next-token cross-entropy without materialising the logits: the same values and
        gradients as ``F.cross_entropy(self(input_ids), labels, reduction="sum")``, with the
        head's products run a block of tokens at a time (:mod:`seqmamba.models.lm_loss`).

        input_ids, labels: (batch, L) int64, labels ``ignore_index`` where nothing is scored.
        check_labels: False skips the check that every label is a vocabulary row or
        ``ignore_index`` (it reads the labels back to the host, which a CUDA graph capture
        forbids); out-of-range labels are then the caller's to rule out.
        Returns total (sum over scored tokens), count and correct (argmax equals the label).
        """
        # Labels are checked before the forward is queued: the check reads them back to the
        # host, which between the forward and the backward would leave the GPU idle while
        # the host catches up with the backward's launches.
        if check_labels:
            check_labels_in_range("MambaLM.loss", labels, self.lm_head.weight.shape[0], ignore_index)
        return linear_cross_entropy(
            self.backbone(input_ids), self.lm_head.weight, labels, ignore_index=ignore_index, check_labels=False
        )

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, **options) -> torch.Tensor:
        """Prompts (batch, L) int64 -> (batch, L + new) with sampled continuations.

        Prefills with the parallel scan, then decodes recurrently; every option
        (prompt lengths, temperature, top_k, top_p, min_p, repetition_penalty,
        eos/pad ids, seed, streaming callback, CUDA graphs) is documented at
        :func:`seqmamba.models.generation.generate`, which this calls.
        """
        from .generation import generate  # here, not at the top: generation imports this module

        return generate(self, input_ids, max_new_tokens, **options)
