"""Recurrent decoding and generation: the step against the parallel forward, prefill,
the inference cache, sampling masks and penalties, seeds, eos, padded batches,
streaming, and the recorded-graph decoder's buffer logic (with a CPU recorder)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from seqmamba.models import MambaLM, ModelConfig, SamplingConfig, allocate_inference_cache
from seqmamba.models.decode import decode_step, prefill
from seqmamba.models.graphs import GraphDecoder, GraphDecoders
from seqmamba.models.sampling import (
    apply_repetition_penalty,
    min_p_mask,
    next_token_logits,
    sample_next,
    top_k_mask,
    top_p_mask,
)

VOCAB = 29


def randomize_(module: nn.Module, seed: int) -> None:
    """Moves every parameter off its structured init so every term of the step shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.2 * torch.randn(param.shape, generator=gen, dtype=param.dtype))


def small_model(seed: int = 0, dtype: torch.dtype = torch.float32, **overrides) -> MambaLM:
    torch.manual_seed(seed)
    fields = dict(d_model=16, n_layer=2, vocab_size=VOCAB, d_state=5, d_conv=4, conv_bias=True, bias=True)
    model = MambaLM(ModelConfig(**(fields | overrides))).to(dtype).eval()
    randomize_(model, seed + 100)
    return model


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


# --- the recurrent step ------------------------------------------------------------


@torch.no_grad()
def test_steps_reproduce_the_parallel_forward_at_every_position_over_512_steps():
    model = small_model()
    ids = torch.randint(0, VOCAB, (2, 512), generator=torch.Generator().manual_seed(1))
    full = model(ids)
    cache = allocate_inference_cache(model, 2)
    stepped = torch.stack([decode_step(model, ids[:, t], cache) for t in range(ids.shape[1])], dim=1)
    assert stepped.shape == full.shape
    assert relative_error(stepped, full) < 1e-4
    # Also position by position (late positions are not drowned by a large early one).
    per_position = (stepped - full).abs().amax(dim=(0, 2)) / full.abs().amax(dim=(0, 2))
    assert per_position.max().item() < 1e-4


@torch.no_grad()
@pytest.mark.parametrize("overrides", [dict(), dict(rms_norm=False), dict(residual_in_fp32=False, n_layer=3)])
def test_deferred_norm_equals_the_add_norm_kernels_and_the_forward(monkeypatch, overrides):
    """The step with each block's RMSNorm deferred into the previous out_proj (the
    default) equals the step with every add + norm on its own and the parallel forward;
    LayerNorm blocks and residuals in the model's dtype take the undeferred path."""
    from seqmamba.models import decode

    model = small_model(3, **overrides)
    ids = torch.randint(0, VOCAB, (3, 40), generator=torch.Generator().manual_seed(4))
    stepped = {}
    for defer in (True, False):
        monkeypatch.setattr(decode, "DEFER_NORM", defer)
        cache = allocate_inference_cache(model, 3)
        stepped[defer] = torch.stack([decode_step(model, ids[:, t], cache) for t in range(ids.shape[1])], dim=1)
    torch.testing.assert_close(stepped[True], stepped[False], rtol=1e-5, atol=1e-5)
    assert relative_error(stepped[True], model(ids)) < 1e-4


def test_blocks_step_needs_blocks_and_one_cache_each():
    from seqmamba.models.decode import blocks_step

    model = small_model()
    cache = allocate_inference_cache(model, 1)
    hidden = torch.zeros(1, 16)
    with pytest.raises(ValueError, match="blocks_step: needs at least one block and one cache a block, got 2 blocks "
                                         "and 1 caches"):
        blocks_step(model.backbone.layers, hidden, cache.layers[:1])
    with pytest.raises(ValueError, match="got 0 blocks"):
        blocks_step([], hidden, [])


@torch.no_grad()
def test_prefill_then_steps_equal_stepping_from_the_start():
    model = small_model(seed=3, d_conv=3)
    ids = torch.randint(0, VOCAB, (3, 45), generator=torch.Generator().manual_seed(2))
    stepped_cache = allocate_inference_cache(model, 3)
    stepped = [decode_step(model, ids[:, t], stepped_cache) for t in range(45)]

    cache = allocate_inference_cache(model, 3)
    last = prefill(model, ids[:, :31], cache)
    torch.testing.assert_close(last, stepped[30], rtol=1e-4, atol=1e-5)
    for t in range(31, 45):
        torch.testing.assert_close(decode_step(model, ids[:, t], cache), stepped[t], rtol=1e-4, atol=1e-5)
    for ours, theirs in zip(cache.layers, stepped_cache.layers):
        torch.testing.assert_close(ours.ssm, theirs.ssm, rtol=1e-4, atol=1e-6)
        # Column 0 of the window is scratch; the last d_conv - 1 inputs must agree.
        torch.testing.assert_close(ours.conv[..., 1:], theirs.conv[..., 1:], rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_prefill_shorter_than_the_conv_window_then_steps():
    model = small_model(seed=4)
    ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(3))
    full = model(ids)
    cache = allocate_inference_cache(model, 2)
    torch.testing.assert_close(prefill(model, ids[:, :2], cache), full[:, 1], rtol=1e-4, atol=1e-5)
    for t in range(2, 9):
        torch.testing.assert_close(decode_step(model, ids[:, t], cache), full[:, t], rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_prefill_into_rows_leaves_the_other_rows_alone():
    model = small_model(seed=5)
    cache = allocate_inference_cache(model, 4)
    for layer in cache.layers:
        layer.ssm.fill_(7.0)
    ids = torch.randint(0, VOCAB, (2, 11), generator=torch.Generator().manual_seed(4))
    rows = torch.tensor([3, 1])
    alone = allocate_inference_cache(model, 2)
    torch.testing.assert_close(prefill(model, ids, cache, rows=rows), prefill(model, ids, alone))
    for layer, ref in zip(cache.layers, alone.layers):
        torch.testing.assert_close(layer.ssm[rows], ref.ssm)
        torch.testing.assert_close(layer.conv[rows], ref.conv)
        assert (layer.ssm[[0, 2]] == 7.0).all()


@torch.no_grad()
def test_float64_model_with_state_in_model_dtype_matches_tightly():
    model = small_model(seed=6, dtype=torch.float64, residual_in_fp32=False)
    ids = torch.randint(0, VOCAB, (2, 23), generator=torch.Generator().manual_seed(5))
    cache = allocate_inference_cache(model, 2, state_dtype=None)
    assert cache.layers[0].ssm.dtype == torch.float64
    stepped = torch.stack([decode_step(model, ids[:, t], cache) for t in range(23)], dim=1)
    assert relative_error(stepped, model(ids)) < 1e-10


@torch.no_grad()
def test_bfloat16_model_steps_stay_close_to_its_forward_with_float32_states():
    model = small_model(seed=2, dtype=torch.bfloat16)
    ids = torch.randint(0, VOCAB, (2, 41), generator=torch.Generator().manual_seed(13))
    cache = allocate_inference_cache(model, 2)
    assert cache.layers[0].conv.dtype == torch.bfloat16 and cache.layers[0].ssm.dtype == torch.float32
    stepped = torch.stack([decode_step(model, ids[:, t], cache) for t in range(41)], dim=1)
    assert stepped.dtype == torch.bfloat16
    assert relative_error(stepped.float(), model(ids).float()) < 3e-2


def test_allocate_inference_cache_shapes_dtypes_and_errors():
    model = small_model(d_model=12, n_layer=3, d_state=6, d_conv=2, expand=3)
    cache = allocate_inference_cache(model, 5, dtype=torch.bfloat16)
    assert len(cache.layers) == 3 and cache.batch_size == 5
    assert cache.layers[2].conv.shape == (5, 36, 2) and cache.layers[2].conv.dtype == torch.bfloat16
    assert cache.layers[2].ssm.shape == (5, 36, 6) and cache.layers[2].ssm.dtype == torch.float32
    assert cache.state_bytes() == 3 * (36 * 2 * 2 + 36 * 6 * 4)
    assert allocate_inference_cache(model, 1, state_dtype=None).layers[0].ssm.dtype == torch.float32
    with pytest.raises(ValueError, match="batch must be a positive integer, got 0"):
        allocate_inference_cache(model, 0)
    with pytest.raises(ValueError, match="holds no Mamba mixer"):
        allocate_inference_cache(nn.Linear(2, 2), 1)


# --- sampling ----------------------------------------------------------------------

# Probabilities in scrambled order: sorted, they are 0.4, 0.25, 0.15, 0.1, 0.06, 0.04.
PROBS = torch.tensor([[0.1, 0.4, 0.04, 0.25, 0.06, 0.15]])
LOGITS = PROBS.log() + 1.7  # a shift changes no probability


def kept(mask: torch.Tensor) -> set[int]:
    return set(mask[0].nonzero().squeeze(1).tolist())


def test_top_k_top_p_min_p_masks_on_hand_made_logits():
    assert kept(top_k_mask(LOGITS, 1)) == {1}
    assert kept(top_k_mask(LOGITS, 3)) == {1, 3, 5}
    assert kept(top_k_mask(LOGITS, 0)) == kept(top_k_mask(LOGITS, 9)) == set(range(6))
    # top-p keeps a token while the mass before it is below p.
    assert kept(top_p_mask(LOGITS, 0.3)) == {1}
    assert kept(top_p_mask(LOGITS, 0.6)) == {1, 3}
    assert kept(top_p_mask(LOGITS, 0.7)) == {1, 3, 5}
    assert kept(top_p_mask(LOGITS, 0.95)) == {0, 1, 3, 4, 5}
    assert kept(top_p_mask(LOGITS, 1.0)) == set(range(6))
    # min-p keeps probability >= min_p * 0.4.
    assert kept(min_p_mask(LOGITS, 0.3)) == {1, 3, 5}  # threshold 0.12
    assert kept(min_p_mask(LOGITS, 0.5)) == {1, 3}  # threshold 0.2
    assert kept(min_p_mask(LOGITS, 0.2)) == {0, 1, 3, 5}  # threshold 0.08
    assert kept(min_p_mask(LOGITS, 0.0)) == set(range(6))


def test_masks_chain_after_the_temperature():
    # At temperature 2 the distribution flattens: sqrt of the probabilities, renormalised.
    flat = (PROBS.sqrt() / PROBS.sqrt().sum()).squeeze(0)
    config = SamplingConfig(temperature=2.0, top_p=0.5)
    out = next_token_logits(LOGITS, config)
    order = torch.argsort(flat, descending=True).tolist()
    mass_before = torch.cumsum(flat[order], 0) - flat[order]
    expected = {order[i] for i in range(6) if mass_before[i] < 0.5}
    assert set(torch.isfinite(out[0]).nonzero().squeeze(1).tolist()) == expected == {1, 3, 5}
    torch.testing.assert_close(torch.softmax(out, -1)[0, [1, 3, 5]], flat[[1, 3, 5]] / flat[[1, 3, 5]].sum())
    # top-k then min-p: min-p sees only what top-k left and is relative to the top token.
    chained = next_token_logits(LOGITS, SamplingConfig(top_k=4, min_p=0.3))
    assert set(torch.isfinite(chained[0]).nonzero().squeeze(1).tolist()) == {1, 3, 5}


def test_sampling_draws_only_kept_tokens_in_proportion():
    logits = LOGITS.expand(4000, 6)
    gen = torch.Generator().manual_seed(0)
    tokens = sample_next(logits, SamplingConfig(top_p=0.7), generator=gen)
    counts = torch.bincount(tokens, minlength=6).float() / 4000
    assert counts[[0, 2, 4]].sum() == 0
    expected = torch.tensor([0.4, 0.25, 0.15]) / 0.8
    assert (counts[[1, 3, 5]] - expected).abs().max() < 0.04


def test_repetition_penalty_on_hand_made_logits():
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0]])
    seen = torch.tensor([[True, True, False, False]])
    torch.testing.assert_close(apply_repetition_penalty(logits, seen, 2.0), torch.tensor([[1.0, -2.0, 0.5, -3.0]]))
    # Greedy picks the unseen 0.5 once the seen 2.0 is halved below it.
    assert sample_next(logits, SamplingConfig(temperature=0, repetition_penalty=5.0), seen=seen).item() == 2


def test_greedy_picks_the_first_maximum_of_low_precision_logits_as_of_float32():
    # bfloat16 logits, as the head of a bf16 model gives them (a strided slice, as the
    # padded vocabulary is cut off), with a tie for the maximum in one row.
    logits = torch.randn(3, 40, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    logits[1, 7] = logits[1, 30] = 9.0
    logits = logits[:, :37]
    got = sample_next(logits, SamplingConfig(temperature=0))
    assert got.dtype == torch.int64 and got[1].item() == 7
    assert torch.equal(got, logits.float().argmax(dim=-1))


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(temperature=-1.0), "temperature must be a number >= 0"),
        (dict(top_k=-2), "top_k must be an integer >= 0"),
        (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
        (dict(min_p=1.5), r"min_p must be in \[0, 1\]"),
        (dict(repetition_penalty=0.0), "repetition_penalty must be a number > 0"),
    ],
)
def test_bad_sampling_options_are_value_errors(options, message):
    with pytest.raises(ValueError, match=message):
        small_model().generate(torch.ones(1, 3, dtype=torch.long), 2, **options)


# --- generate ----------------------------------------------------------------------


@torch.no_grad()
def reference_greedy(model: MambaLM, prompt: torch.Tensor, steps: int, penalty: float = 1.0) -> torch.Tensor:
    """Greedy decoding by rerunning the full forward on the whole sequence each step."""
    ids = prompt[None]
    for _ in range(steps):
        logits = model(ids)[:, -1, :VOCAB]
        if penalty != 1:
            seen = torch.zeros_like(logits, dtype=torch.bool).scatter(1, ids, True)
            logits = torch.where(seen, torch.where(logits > 0, logits / penalty, logits * penalty), logits)
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids[0]


def test_greedy_generate_matches_rerunning_the_forward():
    model = small_model(seed=7)
    prompt = torch.randint(0, VOCAB, (13,), generator=torch.Generator().manual_seed(6))
    out = model.generate(prompt[None], 9, temperature=0)
    assert out.shape == (1, 22) and out.dtype == torch.long
    assert torch.equal(out[0], reference_greedy(model, prompt, 9))


def test_repetition_penalty_in_generate_matches_the_reference_loop():
    model = small_model(seed=8)
    prompt = torch.randint(0, VOCAB, (7,), generator=torch.Generator().manual_seed(7))
    out = model.generate(prompt[None], 12, temperature=0, repetition_penalty=3.0)
    assert torch.equal(out[0], reference_greedy(model, prompt, 12, penalty=3.0))
    assert not torch.equal(out, model.generate(prompt[None], 12, temperature=0))


def test_seed_makes_sampling_reproducible():
    model = small_model(seed=9)
    prompts = torch.randint(0, VOCAB, (3, 5), generator=torch.Generator().manual_seed(8))
    options = dict(temperature=1.3, top_k=20, top_p=0.95)
    first = model.generate(prompts, 25, seed=11, **options)
    assert torch.equal(first, model.generate(prompts, 25, seed=11, **options))
    assert not torch.equal(first, model.generate(prompts, 25, seed=12, **options))
    torch.manual_seed(4)
    global_rng = model.generate(prompts, 25, **options)
    torch.manual_seed(4)
    assert torch.equal(global_rng, model.generate(prompts, 25, **options))


def test_eos_finishes_one_sequence_while_the_others_continue():
    model = small_model(seed=10)
    prompts = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(9))
    free = model.generate(prompts, 12, temperature=0)[:, 6:]
    # An eos that the first sequence emits at some step and the second never does.
    candidates = [(t, tok) for t, tok in enumerate(free[0, :8].tolist())
                  if tok not in free[1].tolist() and tok not in free[0, :t].tolist()]
    assert candidates, "the test needs a token only the first continuation emits"
    step, eos = candidates[0]
    pad = (eos + 1) % VOCAB
    out = model.generate(prompts, 12, temperature=0, eos_token_id=eos, pad_token_id=pad)[:, 6:]
    assert out.shape == (2, 12)
    assert torch.equal(out[0, : step + 1], free[0, : step + 1]) and out[0, step] == eos
    assert (out[0, step + 1:] == pad).all()
    assert torch.equal(out[1], free[1])
    # The pad id defaults to the eos id.
    assert (model.generate(prompts, 12, temperature=0, eos_token_id=eos)[0, 6 + step:] == eos).all()


def test_generation_stops_early_once_every_sequence_has_finished():
    model = small_model(seed=10)
    prompt = torch.randint(0, VOCAB, (1, 6), generator=torch.Generator().manual_seed(9))
    free = model.generate(prompt, 12, temperature=0)[0, 6:].tolist()
    eos = free[3]
    out = model.generate(prompt, 12, temperature=0, eos_token_id=eos)
    assert out.shape == (1, 6 + free.index(eos) + 1) and out[0, -1] == eos


def test_left_padded_prompts_continue_as_each_prompt_alone():
    model = small_model(seed=11)
    gen = torch.Generator().manual_seed(10)
    prompts = [torch.randint(0, VOCAB, (n,), generator=gen) for n in (5, 13, 9, 13, 1)]
    alone = [model.generate(p[None], 8, temperature=0)[0, len(p):] for p in prompts]

    from_list = model.generate(prompts, 8, temperature=0, pad_token_id=3)
    assert from_list.shape == (5, 21)
    padded = torch.randint(0, VOCAB, (5, 13), generator=gen)  # junk in the padding must not matter
    lengths = [len(p) for p in prompts]
    for row, prompt in enumerate(prompts):
        padded[row, 13 - len(prompt):] = prompt
    from_tensor = model.generate(padded, 8, temperature=0, prompt_lengths=lengths, pad_token_id=3)
    assert torch.equal(from_list, from_tensor)
    for row, prompt in enumerate(prompts):
        assert torch.equal(from_list[row, 13:], alone[row])
        assert torch.equal(from_list[row, 13 - len(prompt): 13], prompt)
        assert (from_list[row, : 13 - len(prompt)] == 3).all()


def test_streaming_callback_receives_every_token():
    model = small_model(seed=12)
    prompts = torch.randint(0, VOCAB, (3, 4), generator=torch.Generator().manual_seed(11))
    received = []
    out = model.generate(prompts, 10, seed=0, top_p=0.9, callback=lambda tokens: received.append(tokens.clone()))
    assert len(received) == 10 and all(t.shape == (3,) for t in received)
    assert torch.equal(torch.stack(received, dim=1), out[:, 4:])


def test_padded_vocabulary_rows_are_never_sampled():
    model = small_model(seed=13)
    assert model.config.padded_vocab_size > VOCAB
    with torch.no_grad():
        model.lm_head.weight[VOCAB:] = 0
        model.lm_head.weight[VOCAB:, 0] = 1e4  # would win every argmax if they were allowed
    out = model.generate(torch.randint(0, VOCAB, (2, 3)), 6, temperature=0)
    assert (out < VOCAB).all()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: m.generate(torch.ones(2, 3, dtype=torch.long), 0), "max_new_tokens must be a positive integer"),
        (lambda m: m.generate(torch.ones(2, 3), 2), "input_ids must be a .batch, L. tensor of integer token ids"),
        (lambda m: m.generate(torch.ones(2, 3, dtype=torch.long), 2, prompt_lengths=[3]),
         r"prompt_lengths must have one length per prompt, shape \(2,\)"),
        (lambda m: m.generate(torch.ones(2, 3, dtype=torch.long), 2, prompt_lengths=[3, 0]),
         "prompt lengths must be between 1 and L=3"),
        (lambda m: m.generate([[1, 2], []], 2), "prompt lengths must be between 1 and L=2"),
        (lambda m: m.generate(torch.full((1, 3), VOCAB), 2), "token id 29 is outside the vocabulary"),
        (lambda m: m.generate(torch.ones(1, 3, dtype=torch.long), 2, eos_token_id=VOCAB), "eos_token_id must be"),
        (lambda m: m.generate(torch.ones(1, 3, dtype=torch.long), 2, cuda_graph=True), "needs the model on a CUDA"),
    ],
)
def test_generate_input_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call(small_model())


# --- the recorded-graph decoder, with a recorder that runs on the CPU -------------------


class ReplayByRerunning:
    """Stands in for CUDA graph capture: records ``fn`` by calling it once and
    "replays" by calling it again and copying into the recorded output tensor."""

    def __init__(self) -> None:
        self.recorded = 0

    def record(self, fn):
        self.recorded += 1
        output = fn()

        def replay() -> None:
            output.copy_(fn())

        return output, replay


@torch.no_grad()
def test_graph_decoder_uses_static_buffers_and_matches_eager_steps():
    model = small_model(seed=14)
    ids = torch.randint(0, VOCAB, (3, 19), generator=torch.Generator().manual_seed(12))
    decoder = GraphDecoder(model, 3, recorder=ReplayByRerunning())
    assert all((layer.ssm == 0).all() and (layer.conv == 0).all() for layer in decoder.cache.layers)
    eager = allocate_inference_cache(model, 3)
    prefill(model, ids[:, :8], decoder.cache)
    prefill(model, ids[:, :8], eager)
    outputs = []
    for t in range(8, 19):
        logits = decoder.step(ids[:, t])
        assert logits is decoder.logits  # one static output buffer
        torch.testing.assert_close(logits, decode_step(model, ids[:, t], eager))
        outputs.append(logits.clone())
    torch.testing.assert_close(torch.stack(outputs, 1), model(ids)[:, 8:], rtol=1e-4, atol=1e-5)


def test_graph_decoders_record_once_per_batch_size_and_again_after_a_move():
    model = small_model(seed=15)
    recorders = []

    def factory():
        recorders.append(ReplayByRerunning())
        return recorders[-1]

    decoders = GraphDecoders(model, factory)
    first = decoders.get(2)
    assert decoders.get(2) is first and len(decoders) == 1
    assert decoders.get(5) is not first and len(decoders) == 2
    assert len(recorders) == 1 and recorders[0].recorded == 2
    model.double()  # new parameter tensors: the recorded steps would read stale memory
    again = decoders.get(2)
    assert again is not first and len(decoders) == 1 and again.cache.layers[0].conv.dtype == torch.float64
    assert len(recorders) == 2


def test_generate_with_graph_decoder_equals_eager(monkeypatch):
    from seqmamba.models import generation
    from seqmamba.models.graphs import EagerDecoder

    model = small_model(seed=16)
    prompts = [torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(n)) for n in (4, 7)]
    # On the CPU generate decodes eagerly unless told otherwise.
    assert isinstance(generation._decoder(model, 2, cuda_graph=None, state_dtype=torch.float32), EagerDecoder)
    eager = model.generate(prompts, 9, seed=3, top_k=10)
    decoders = GraphDecoders(model, ReplayByRerunning)
    monkeypatch.setattr(generation, "_decoder",
                        lambda m, b, cuda_graph, state_dtype, greedy: decoders.get(b, greedy=greedy))
    assert torch.equal(model.generate(prompts, 9, seed=3, top_k=10), eager)
    assert torch.equal(model.generate(prompts, 9, seed=3, top_k=10), eager)  # reused graph, fresh prefill
    assert len(decoders) == 1 and not decoders.get(2).has_greedy


def test_greedy_generation_replays_the_greedy_graph_and_equals_eager(monkeypatch):
    """Greedy decoding runs the decoder's greedy graph (steps with their argmax, each
    step's token written where the next step reads it): the same tokens as eager decoding
    and as rerunning the forward, eos (checked token by token) and a padded vocabulary
    included, the graph recorded once."""
    from seqmamba.models import generation

    model = small_model(seed=17)
    with torch.no_grad():  # padded head rows that would win every argmax if they counted
        model.lm_head.weight[VOCAB:] = 0
        model.lm_head.weight[VOCAB:, 0] = 1e4
    prompts = torch.randint(0, VOCAB, (3, 5), generator=torch.Generator().manual_seed(17))
    eager = model.generate(prompts, 11, temperature=0)
    assert torch.equal(eager[0], reference_greedy(model, prompts[0], 11))
    recorders = []

    def factory():
        recorders.append(ReplayByRerunning())
        return recorders[-1]

    decoders = GraphDecoders(model, factory)
    monkeypatch.setattr(generation, "_decoder",
                        lambda m, b, cuda_graph, state_dtype, greedy: decoders.get(b, greedy=greedy))
    replays = []
    decoder = decoders.get(3, greedy=True)
    original = decoder._replay_greedy
    decoder._replay_greedy = lambda: (replays.append(1), original())
    assert torch.equal(model.generate(prompts, 11, temperature=0), eager)
    # 10 tokens after the prefill's: 2 replays of 4 steps, then 2 single steps.
    assert len(replays) == 10 // GraphDecoder.greedy_block and recorders[0].recorded == 2
    # eos: a finished row is fed its padding; the others go on as without eos.
    eos = int(eager[0, 5 + 3])
    out = model.generate(prompts, 11, temperature=0, eos_token_id=eos, pad_token_id=0)
    for row in range(3):
        tokens = eager[row, 5:].tolist()
        stop = tokens.index(eos) + 1 if eos in tokens else 11
        assert out[row, 5:5 + stop].tolist() == tokens[:stop] and (out[row, 5 + stop:] == 0).all()
    assert recorders[0].recorded == 2


@pytest.mark.parametrize("block, new", [(4, 11), (3, 7), (5, 3)])
def test_greedy_blocks_of_steps_replay_while_they_fit(monkeypatch, block, new):
    """A greedy replay decodes ``greedy_block`` tokens; the last few tokens that do not fill
    a block are single steps (no step beyond the last token): same tokens as eagerly."""
    from seqmamba.models import generation

    monkeypatch.setattr(GraphDecoder, "greedy_block", block)
    model = small_model(seed=18)
    prompts = torch.randint(0, VOCAB, (2, 4), generator=torch.Generator().manual_seed(18))
    eager = model.generate(prompts, new, temperature=0)
    decoders = GraphDecoders(model, ReplayByRerunning)
    monkeypatch.setattr(generation, "_decoder",
                        lambda m, b, cuda_graph, state_dtype, greedy: decoders.get(b, greedy=greedy))
    decoder = decoders.get(2, greedy=True)
    calls = {"greedy": 0, "step": 0}
    for name in calls:
        original = getattr(decoder, name)
        monkeypatch.setattr(decoder, name, lambda *a, name=name, original=original: (
            calls.__setitem__(name, calls[name] + 1), original(*a))[1])
    assert torch.equal(model.generate(prompts, new, temperature=0), eager)
    assert calls == {"greedy": (new - 1) // block, "step": (new - 1) % block}



TRITON_STEP = """
import torch
from seqmamba.kernels import use_backend
from seqmamba.models import MambaLM, ModelConfig, allocate_inference_cache
from seqmamba.models.decode import decode_step, prefill
torch.manual_seed(0)
model = MambaLM(ModelConfig(d_model=16, n_layer=2, vocab_size=29, d_state=5, bias=True)).eval()
ids = torch.randint(0, 29, (2, 12))
with torch.no_grad():
    full = model(ids)
    cache = allocate_inference_cache(model, 2)
    prefill(model, ids[:, :8], cache)
    with use_backend("triton"):
        steps = torch.stack([decode_step(model, ids[:, t], cache) for t in range(8, 12)], dim=1)
print(((steps - full[:, 8:]).abs().max() / full[:, 8:].abs().max()).item())
"""


def test_decode_step_on_the_triton_kernels_under_the_interpreter():
    """The step as it runs on a GPU (Triton selective_state_update and norm), here on
    Triton's CPU interpreter, which must be switched on before the kernels are imported."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", TRITON_STEP], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip().splitlines()[-1]) < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="records CUDA graphs")
@pytest.mark.parametrize("batch", [1, 5, 64])
def test_greedy_cuda_graphs_equal_eager_decoding_on_the_gpu(monkeypatch, batch):
    """The recorded greedy steps (four a replay, then single steps) give the tokens of
    eager decoding on the same GPU, with torch's argmax and with row_argmax."""
    from seqmamba.kernels import row_argmax
    from seqmamba.models import MambaLM, ModelConfig, graphs
    from seqmamba.models.graphs import graph_decoders

    torch.manual_seed(1)
    model = MambaLM(ModelConfig(d_model=128, n_layer=3, vocab_size=1000)).to("cuda", torch.bfloat16).eval()
    prompt = torch.randint(0, 1000, (batch, 7), device="cuda")
    with torch.no_grad():
        eager = model.generate(prompt, 23, temperature=0, cuda_graph=False)
        for argmax in (graphs.torch_argmax_into, row_argmax):
            monkeypatch.setattr(graphs, "argmax_into", argmax)
            graph_decoders(model).clear()
            assert torch.equal(model.generate(prompt, 23, temperature=0, cuda_graph=True), eager), argmax
