"""Choosing the next token from a model's logits: penalties, truncation, sampling.

The order, per step, for each sequence of the batch:

1. repetition penalty on every token already seen (prompt or generated), as in CTRL
   (arXiv 1909.05858): a positive logit is divided by the penalty, a negative one
   multiplied by it, so a penalty > 1 always makes a seen token less likely;
2. greedy decoding (``temperature == 0``) takes the argmax here, else the logits are
   divided by the temperature;
3. top-k, then top-p, then min-p each remove tokens (logit -> -inf), each on what the
   previous one left; the most likely token is never removed;
4. a token is drawn from the softmax of what remains.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class SamplingConfig:
    """How the next token is chosen.

    Attributes:
        temperature: divides the logits before sampling; 0 means greedy (argmax).
        top_k: keep only the k most likely tokens (every token tied with the k-th
            too); 0 keeps all.
        top_p: nucleus sampling: keep the most likely tokens, in order, until their
            probabilities reach ``top_p`` (the token that crosses it is kept); 1 keeps all.
        min_p: keep tokens whose probability is at least ``min_p`` times the most
            likely token's; 0 keeps all.
        repetition_penalty: >= 1 discourages tokens seen in the prompt or the output
            so far (1: off); values in (0, 1) encourage them.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0

    def validate(self) -> None:
        """Raise ValueError naming the first option whose value is out of range."""
        if not _number(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a number >= 0 (0 for greedy decoding), got {self.temperature!r}")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 keeps every token), got {self.top_k!r}")
        if not _number(self.top_p) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (1 keeps every token), got {self.top_p!r}")
        if not _number(self.min_p) or not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p must be in [0, 1] (0 keeps every token), got {self.min_p!r}")
        if not _number(self.repetition_penalty) or not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be a number > 0 (1 is off), got {self.repetition_penalty!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits: (batch, V) float; seen: (batch, V) bool, the tokens to penalise.
    Returns new logits: seen positive logits / penalty, seen negative ones * penalty."""
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def top_k_mask(logits: torch.Tensor, k: int) -> torch.Tensor:
    """(batch, V) bool: True for the tokens top-k keeps (k >= V or k == 0 keeps all)."""
    if k == 0 or k >= logits.shape[-1]:
        return torch.ones_like(logits, dtype=torch.bool)
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits >= kth


def top_p_mask(logits: torch.Tensor, p: float) -> torch.Tensor:
    """(batch, V) bool: True for the nucleus, the most likely tokens whose probabilities,
    summed in decreasing order, first reach ``p``: a token is kept when the mass of the
    tokens before it is still below p (so the most likely one always is)."""
    if p >= 1:
        return torch.ones_like(logits, dtype=torch.bool)
    probs, order = torch.sort(torch.softmax(logits.float(), dim=-1), dim=-1, descending=True)
    mass_before = torch.cumsum(probs, dim=-1) - probs
    keep_sorted = mass_before < p
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def min_p_mask(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """(batch, V) bool: True for tokens with probability >= min_p * the top probability.

    In log space: logit >= max logit + log(min_p), since softmax shares one normaliser.
    """
    if min_p <= 0:
        return torch.ones_like(logits, dtype=torch.bool)
    top = logits.max(dim=-1, keepdim=True).values
    return logits >= top + math.log(min_p)


def next_token_logits(logits: torch.Tensor, config: SamplingConfig, seen: torch.Tensor | None = None) -> torch.Tensor:
    """Steps 1 to 3 of the module docstring: the logits the next token is drawn from.

    logits: (batch, V); seen: (batch, V) bool, needed when the repetition penalty is on.
    Returns (batch, V) float32 with removed tokens at -inf (for greedy decoding, the
    penalised logits, unscaled and untruncated).
    """
    logits = logits.float()
    if config.repetition_penalty != 1:
        assert seen is not None, "the repetition penalty needs the seen-token mask"
        logits = apply_repetition_penalty(logits, seen, config.repetition_penalty)
    if config.greedy:
        return logits
    logits = logits / config.temperature
    for mask_fn, value in ((top_k_mask, config.top_k), (top_p_mask, config.top_p), (min_p_mask, config.min_p)):
        logits = logits.masked_fill(~mask_fn(logits, value), float("-inf"))
    return logits


def sample_next(
    logits: torch.Tensor,
    config: SamplingConfig,
    *,
    seen: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The next token of each sequence: logits (batch, V) -> (batch,) int64."""
    if config.greedy and config.repetition_penalty == 1:
        # The argmax of the logits as they are: widening them to float32 first changes no
        # value and no order, and would write and read the whole (batch, V) once more.
        return logits.argmax(dim=-1)
    logits = next_token_logits(logits, config, seen)
    if config.greedy:
        return logits.argmax(dim=-1)
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)
