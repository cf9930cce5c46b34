"""``generate``: prompts in, prompts plus sampled continuations out.

A prompt is prefilled with the parallel scan (one pass, every token at once), then the
continuation is decoded one token at a time from the fixed-size recurrent state (see
:mod:`seqmamba.models.decode`), replayed as a CUDA graph on a GPU.

Prompts of different lengths: Mamba has no attention mask, so padding tokens in front
of a prompt would flow into its state and change its continuation. The prompts are
therefore prefilled in groups of equal length, each group without its padding, and
their final states are gathered into one cache; decoding then runs the whole batch
together. A left-padded prompt thus continues exactly as it would alone.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .cache import InferenceCache
from .decode import prefill
from .graphs import EagerDecoder, GraphDecoder, graph_decoders
from .lm import MambaLM
from .sampling import SamplingConfig, sample_next

Prompts = torch.Tensor | Sequence[Sequence[int] | torch.Tensor]
StreamCallback = Callable[[torch.Tensor], None]


def generate(
    model: MambaLM,
    input_ids: Prompts,
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
    callback: StreamCallback | None = None,
    cuda_graph: bool | None = None,
    state_dtype: torch.dtype | None = torch.float32,
) -> torch.Tensor:
    """Continue each prompt by up to ``max_new_tokens`` tokens.

    Args:
        model: the language model (its device and dtype are used as they are).
        input_ids: (batch, L) int64 prompts, left-padded when ``prompt_lengths`` is
            given; or a list of 1-D prompts (lists or tensors) of any lengths, which
            are left-padded here with ``pad_token_id``.
        max_new_tokens: tokens to add to each prompt (>= 1).
        prompt_lengths: (batch,) for a padded tensor: the last ``prompt_lengths[b]``
            tokens of row b are its prompt, the rest padding that never enters the
            model. None: every row is a whole prompt.
        temperature, top_k, top_p, min_p, repetition_penalty: see
            :class:`~seqmamba.models.sampling.SamplingConfig`; ``temperature=0`` is
            greedy decoding.
        eos_token_id: a sequence that produces it is finished: its later positions are
            filled with ``pad_token_id``, and generation stops early once every
            sequence is finished.
        pad_token_id: fills left padding and finished positions; defaults to
            ``eos_token_id``, or 0 without one.
        seed: seeds the sampling, for reproducible output (the global RNG if None).
        callback: called after every step with that step's tokens, (batch,) int64
            (``pad_token_id`` for finished sequences).
        cuda_graph: replay the decode step as a CUDA graph (None: on CUDA devices).
        state_dtype: dtype of the SSM states in the cache (None: the model's dtype).

    Returns:
        (batch, L + T) int64 on the model's device: the left-padded prompts followed
        by T <= max_new_tokens new tokens (T < max_new_tokens only when every sequence
        finished early).
    """
    config = SamplingConfig(temperature, top_k, top_p, min_p, repetition_penalty)
    config.validate()
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    vocab = model.config.vocab_size
    for name, value in (("eos_token_id", eos_token_id), ("pad_token_id", pad_token_id)):
        if value is not None and (not isinstance(value, int) or not 0 <= value < vocab):
            raise ValueError(f"{name} must be a token id in [0, {vocab}), got {value!r}")
    pad = pad_token_id if pad_token_id is not None else (eos_token_id if eos_token_id is not None else 0)
    device = model.lm_head.weight.device
    ids, lengths = left_padded_prompts(input_ids, prompt_lengths, pad_token_id=pad, vocab_size=vocab, device=device)
    batch = ids.shape[0]
    # Greedy without a penalty needs no logits outside the step: the decoder's greedy step
    # takes the argmax itself (inside the replayed graph on a GPU).
    greedy = config.greedy and config.repetition_penalty == 1
    decoder = _decoder(model, batch, cuda_graph=cuda_graph, state_dtype=state_dtype, greedy=greedy)
    generator = None if seed is None else torch.Generator(device=device).manual_seed(seed)

    with torch.inference_mode():
        logits = _prefill_by_length(model, ids, lengths, decoder.cache)
        seen = None
        if config.repetition_penalty != 1:
            positions = torch.arange(ids.shape[1], device=device)
            in_prompt = positions >= ids.shape[1] - lengths[:, None]
            seen = torch.zeros(batch, vocab, dtype=torch.bool, device=device)
            # Padding is not part of the prompt: only real positions mark their token as seen.
            seen.scatter_add_(1, ids, in_prompt)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        per_token = eos_token_id is not None or callback is not None or seen is not None
        log: list[torch.Tensor] = []  # (k, batch) blocks of new tokens
        produced = 0
        # Rows past vocab_size only pad the head to a multiple of 8: never sampled.
        block = sample_next(logits[:, :vocab], config, seen=seen, generator=generator)[None]  # (1, batch)
        while True:
            block = block[: max_new_tokens - produced]
            all_finished = False
            if not per_token:
                # A greedy block may be the decoder's static buffer, which the next call rewrites.
                log.append(block.clone() if greedy else block)
                produced += block.shape[0]
            else:
                for tokens in block:
                    if eos_token_id is not None:
                        # In place: a finished sequence is fed its padding from here on.
                        tokens.masked_fill_(finished, pad)
                        finished |= tokens == eos_token_id
                    log.append(tokens[None].clone())
                    produced += 1
                    if callback is not None:
                        callback(log[-1][0])
                    if seen is not None:
                        seen.scatter_(1, tokens[:, None], True)
                    # One read back to the host a token, and only with an eos.
                    all_finished = eos_token_id is not None and bool(finished.all())
                    if produced == max_new_tokens or all_finished:
                        break
            if produced == max_new_tokens or all_finished:
                break
            last = block[-1]
            if greedy and max_new_tokens - produced >= decoder.greedy_block:
                # Several steps a call on a GPU (one graph replay), each taking its own argmax.
                block = decoder.greedy(last)
            elif greedy:  # the last few tokens, one step at a time: no step beyond the last token
                block = decoder.step(last)[:, :vocab].argmax(dim=-1)[None]
            else:
                block = sample_next(decoder.step(last)[:, :vocab], config, seen=seen, generator=generator)[None]
    return torch.cat([ids, torch.cat(log).T], dim=1)


def left_padded_prompts(
    input_ids: Prompts,
    prompt_lengths: torch.Tensor | Sequence[int] | None,
    *,
    pad_token_id: int,
    vocab_size: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts as one left-padded (batch, L) int64 tensor and their lengths (batch,)."""
    if isinstance(input_ids, torch.Tensor):
        if input_ids.dim() != 2 or input_ids.is_floating_point() or input_ids.dtype == torch.bool:
            raise ValueError(
                f"input_ids must be a (batch, L) tensor of integer token ids, got shape {tuple(input_ids.shape)} "
                f"and dtype {input_ids.dtype}"
            )
        ids = input_ids.to(device=device, dtype=torch.long)
        if prompt_lengths is None:
            lengths = torch.full((ids.shape[0],), ids.shape[1], dtype=torch.long, device=device)
        else:
            lengths = torch.as_tensor(prompt_lengths, dtype=torch.long).to(device)
            if lengths.shape != (ids.shape[0],):
                raise ValueError(
                    f"prompt_lengths must have one length per prompt, shape ({ids.shape[0]},), "
                    f"got {tuple(lengths.shape)}"
                )
    else:
        if prompt_lengths is not None:
            raise ValueError("prompt_lengths is for a padded (batch, L) tensor; a list of prompts gives its own lengths")
        prompts = [torch.as_tensor(p, dtype=torch.long).reshape(-1) for p in input_ids]
        if not prompts:
            raise ValueError("input_ids: no prompts given")
        lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long, device=device)
        ids = torch.full((len(prompts), int(lengths.max())), pad_token_id, dtype=torch.long, device=device)
        for row, prompt in enumerate(prompts):
            if len(prompt):
                ids[row, ids.shape[1] - len(prompt):] = prompt.to(device)
    if ids.shape[0] < 1 or ids.shape[1] < 1:
        raise ValueError(f"input_ids: need at least one prompt of at least one token, got shape {tuple(ids.shape)}")
    if bool(((lengths < 1) | (lengths > ids.shape[1])).any()):
        raise ValueError(f"prompt lengths must be between 1 and L={ids.shape[1]}, got {lengths.tolist()}")
    real = torch.arange(ids.shape[1], device=device) >= ids.shape[1] - lengths[:, None]
    bad = real & ((ids < 0) | (ids >= vocab_size))
    if bool(bad.any()):
        raise ValueError(f"input_ids: token id {int(ids[bad][0])} is outside the vocabulary [0, {vocab_size})")
    # Padding never enters the model; fill it with the pad id so the output shows it as such.
    ids = torch.where(real, ids, torch.full_like(ids, pad_token_id))
    return ids, lengths


def _prefill_by_length(model: MambaLM, ids: torch.Tensor, lengths: torch.Tensor, cache: InferenceCache) -> torch.Tensor:
    """Prefill each group of equal-length prompts without its padding; returns the
    logits after every prompt's last token, (batch, padded_vocab_size)."""
    distinct = torch.unique(lengths).tolist()
    if distinct == [ids.shape[1]]:
        return prefill(model, ids, cache)
    logits = None
    for length in distinct:
        rows = (lengths == length).nonzero().squeeze(1)
        group_logits = prefill(model, ids[rows, ids.shape[1] - length:], cache, rows=rows)
        if logits is None:
            logits = group_logits.new_empty(ids.shape[0], group_logits.shape[-1])
        logits[rows] = group_logits
    assert logits is not None
    return logits


def _decoder(
    model: MambaLM, batch: int, *, cuda_graph: bool | None, state_dtype: torch.dtype | None, greedy: bool = False
) -> EagerDecoder | GraphDecoder:
    """The decoder for this call: a recorded graph (kept per batch size; with ``greedy``
    its greedy graph too) or eager."""
    on_cuda = model.lm_head.weight.device.type == "cuda"
    if cuda_graph and not on_cuda:
        raise ValueError(
            f"cuda_graph=True needs the model on a CUDA device, it is on {model.lm_head.weight.device}; "
            "leave cuda_graph unset to decode eagerly"
        )
    if cuda_graph if cuda_graph is not None else on_cuda:
        return graph_decoders(model).get(batch, state_dtype=state_dtype, greedy=greedy)
    return EagerDecoder(model, batch, state_dtype=state_dtype)
