"""Sampling from the multi-scale network in recurrent step mode.

The prompts run once through the parallel network, which leaves every Mamba state and
pooling buffer where step mode continues (``prefill``); then each new sample costs one
``step``. All prompts of a call must have the same length: the pooling buffers of a
batch advance in lock-step (one phase for every row), and Mamba has no mask to hide
padding from the state.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from seqmamba.models import SamplingConfig
from seqmamba.models.sampling import sample_next

if TYPE_CHECKING:  # only for the annotation: .models imports this module
    from .models import AudioUNetLM


def generate_stepwise(
    model: AudioUNetLM,
    input_ids: torch.Tensor | Sequence[Sequence[int] | torch.Tensor],
    max_new_tokens: int,
    *,
    prompt_lengths: torch.Tensor | Sequence[int] | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    repetition_penalty: float = 1.0,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    seed: int | None = None,
    callback: Callable[[torch.Tensor], None] | None = None,
    cuda_graph: bool | None = None,
    state_dtype: torch.dtype | None = torch.float32,
) -> torch.Tensor:
    """Continue each prompt by ``max_new_tokens`` samples.

    Args:
        model: the multi-scale language model (its device and dtype are used as they are).
        input_ids: (batch, L) int64, or a list of 1-D prompts, all of one length L >= 1.
        prompt_lengths: for a tensor, must be None or L for every row (no padding).
        temperature, top_k, top_p, min_p: as for the language models
            (:class:`~seqmamba.models.SamplingConfig`); temperature 0 is greedy.
        repetition_penalty: must be 1 (a waveform repeats sample values all the time).
        eos_token_id: must be None (audio has no end token).
        pad_token_id: unused (prompts are never padded).
        seed: seeds the sampling (the global RNG if None).
        callback: called after every step with that step's samples (batch,).
        cuda_graph: must be None or False (step mode runs eagerly).
        state_dtype: dtype of the SSM states (None: the model's dtype).

    Returns:
        (batch, L + max_new_tokens) int64: the prompts, then the new samples.
    """
    config = SamplingConfig(temperature, top_k, top_p, min_p, repetition_penalty)
    config.validate()
    if repetition_penalty != 1:
        raise ValueError(f"repetition_penalty: must be 1 for audio (sample values recur all the time), got {repetition_penalty}")
    if eos_token_id is not None:
        raise ValueError(f"eos_token_id: audio has no end token; leave it unset (got {eos_token_id})")
    if cuda_graph:
        raise ValueError("cuda_graph: the multi-scale network decodes eagerly; leave cuda_graph unset")
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    device = model.lm_head.weight.device
    vocab = model.config.vocab_size
    ids = _equal_length_prompts(input_ids, prompt_lengths, vocab_size=vocab, device=device)
    generator = None if seed is None else torch.Generator(device=device).manual_seed(seed)
    with torch.inference_mode():
        state = model.allocate_state(ids.shape[0], state_dtype=state_dtype)
        logits = model.prefill(ids, state)
        new = []
        for step in range(max_new_tokens):
            # Rows past vocab_size only pad the head to a multiple of 8: never sampled.
            tokens = sample_next(logits[:, :vocab], config, generator=generator)
            new.append(tokens)
            if callback is not None:
                callback(tokens)
            if step + 1 < max_new_tokens:
                logits = model.step(tokens, state)
    return torch.cat([ids, torch.stack(new, dim=1)], dim=1)


def _equal_length_prompts(
    input_ids: torch.Tensor | Sequence[Sequence[int] | torch.Tensor],
    prompt_lengths: torch.Tensor | Sequence[int] | None,
    *,
    vocab_size: int,
    device: torch.device,
) -> torch.Tensor:
    """The prompts as one (batch, L) int64 tensor on ``device``; ValueError otherwise."""
    if isinstance(input_ids, torch.Tensor):
        if input_ids.dim() != 2 or input_ids.is_floating_point() or input_ids.dtype == torch.bool:
            raise ValueError(f"input_ids must be a (batch, L) tensor of integer ids, got shape {tuple(input_ids.shape)}")
        prompts = list(input_ids)
        if prompt_lengths is not None and any(int(n) != input_ids.shape[1] for n in prompt_lengths):
            raise ValueError("prompt_lengths: audio prompts are never padded; every prompt must fill its row")
    else:
        prompts = [torch.as_tensor(p, dtype=torch.long).reshape(-1) for p in input_ids]
    if not prompts:
        raise ValueError("input_ids: no prompts given")
    lengths = sorted({len(p) for p in prompts})
    if len(lengths) > 1:
        raise ValueError(
            f"audio prompts generated together must have the same length, got lengths {lengths}; "
            "cut them to one length (task.prompt_seconds) or generate them separately"
        )
    if lengths[0] < 1:
        raise ValueError("input_ids: a prompt needs at least one sample (unconditional generation starts from silence)")
    ids = torch.stack([p.to(device=device, dtype=torch.long) for p in prompts])
    if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
        raise ValueError(f"input_ids: sample ids must lie in [0, {vocab_size}), got [{int(ids.min())}, {int(ids.max())}]")
    return ids
