"""Decoders: a model's inference cache plus a way to run its one-token step.

:class:`EagerDecoder` calls :func:`decode_step` as Python. :class:`GraphDecoder` records
the whole step once per batch size as a CUDA graph and then replays it: decoding one
token is dozens of small kernels per layer, and on a GPU their launch cost, not the
arithmetic, sets the speed at small batch. A replay launches them all at once. It can
replay because the step touches fixed memory only: the token goes into a static input
buffer, the cache is updated in place, the logits land in a static output buffer.

How the graph is recorded is a :class:`Recorder`; :class:`CUDAGraphRecorder` is the real
one, and tests pass a recorder that "replays" by calling the step again, which checks
the static-buffer logic on a CPU.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Protocol

import torch

from seqmamba.kernels import row_argmax

from .cache import InferenceCache, allocate_inference_cache
from .decode import decode_step
from .lm import MambaLM


def torch_argmax_into(logits: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """logits (rows, V) -> each row's first maximum written into out (rows,) int64."""
    return torch.argmax(logits, dim=-1, out=out)


# The greedy steps' argmax, looked up at each call: ``seqmamba.kernels.row_argmax`` (each
# row split over many programs; torch.argmax's result) on the GPU. Against torch's argmax
# inside the recorded greedy steps it saved 10-12 us a token (H100: batch 64 after a 2k
# prompt 0.592 -> 0.580 ms, batch 1 0.340 -> 0.330; RESULTS.md, 2026-12-06 night).
argmax_into = row_argmax


def greedy_steps(model: MambaLM, tokens: torch.Tensor, cache: InferenceCache) -> torch.Tensor:
    """``tokens.shape[0]`` greedy steps: step k feeds the token in ``tokens[k - 1]`` (the
    last row for k = 0) to :func:`decode_step` and writes the argmax of its logits over
    the vocabulary (not the head's padding rows) into ``tokens[k]``, so no step's output
    is copied before the next reads it. tokens: (steps, batch) int64, updated and returned."""
    steps = tokens.shape[0]
    for k in range(steps):
        logits = decode_step(model, tokens[k - 1], cache)
        argmax_into(logits[:, : model.config.vocab_size], tokens[k])
    return tokens


class EagerDecoder:
    """Runs the step eagerly on a fresh cache for ``batch`` sequences."""

    greedy_block = 1  # tokens a call of :meth:`greedy` decodes

    def __init__(self, model: MambaLM, batch: int, *, state_dtype: torch.dtype | None = torch.float32) -> None:
        self.model = model
        self.cache = allocate_inference_cache(model, batch, state_dtype=state_dtype)

    def step(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids: (batch,) int64 -> logits (batch, padded_vocab_size)."""
        return decode_step(self.model, input_ids, self.cache)

    def greedy(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids: (batch,) int64 -> the next greedy token, (1, batch) int64."""
        return greedy_steps(self.model, input_ids[None].clone(), self.cache)


class Recorder(Protocol):
    """Records ``fn`` (reading and writing fixed buffers only) and returns its outputs
    and a function that reruns it, refreshing those same output tensors."""

    def record(self, fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, Callable[[], None]]: ...


class CUDAGraphRecorder:
    """Captures ``fn`` in a ``torch.cuda.CUDAGraph``; graphs of one model share a memory pool."""

    WARMUP_CALLS = 2

    def __init__(self) -> None:
        self.pool = torch.cuda.graph_pool_handle()

    def record(self, fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, Callable[[], None]]:
        # Warm up on a side stream, as capture requires: this compiles the Triton
        # kernels and settles the allocator before anything is recorded.
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(self.WARMUP_CALLS):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            output = fn()
        return output, graph.replay


class GraphDecoder:
    """The step recorded once for a fixed batch size and replayed for every token.

    The cache is allocated here and must stay this very object (prefill writes into
    its tensors in place). The logits :meth:`step` returns are a static buffer that
    the next step overwrites: use or copy them before stepping again.

    Greedy decoding has a graph of its own (:meth:`record_greedy`): ``greedy_block``
    steps, each with its argmax, each step reading the token the one before it wrote, so
    that a replay decodes that many tokens (no argmax, no copy of tokens between steps,
    and one graph launch for several tokens).
    """

    # Tokens a greedy replay decodes: the host's work and the GPU's start of a graph are
    # paid once for these (about 10 us a replay on an H100, a fifth of a token at batch 1).
    greedy_block = 4

    def __init__(
        self,
        model: MambaLM,
        batch: int,
        *,
        recorder: Recorder,
        state_dtype: torch.dtype | None = torch.float32,
    ) -> None:
        # No reference to the model is kept (the recorded graph needs none), so a
        # model's decoders never keep it alive.
        self.cache = allocate_inference_cache(model, batch, state_dtype=state_dtype)
        self.input_ids = torch.zeros(batch, dtype=torch.long, device=self.cache.layers[0].ssm.device)
        self._recorder = recorder
        self._greedy_tokens = torch.zeros(self.greedy_block, batch, dtype=torch.long, device=self.input_ids.device)
        self._replay_greedy: Callable[[], None] | None = None
        # no_grad rather than inference_mode: the buffers stay ordinary tensors that any
        # caller may read or copy into.
        with torch.no_grad():
            self.logits, self._replay = recorder.record(lambda: decode_step(model, self.input_ids, self.cache))
        # Recording ran the step on placeholder tokens; a decode starts from a prefill.
        self.cache.zero_()

    def step(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids: (batch,) int64 -> logits (batch, padded_vocab_size), a static buffer."""
        self.input_ids.copy_(input_ids)
        self._replay()
        return self.logits

    @property
    def has_greedy(self) -> bool:
        return self._replay_greedy is not None

    def record_greedy(self, model: MambaLM) -> None:
        """Record the greedy graph (``greedy_block`` steps with their argmax). Recording
        runs the steps and so zeroes the cache afterwards: call it before a prefill,
        never between steps."""
        with torch.no_grad():
            _, self._replay_greedy = self._recorder.record(
                lambda: greedy_steps(model, self._greedy_tokens, self.cache))
        self.cache.zero_()

    def greedy(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids: (batch,) int64 -> the next ``greedy_block`` greedy tokens,
        (greedy_block, batch) int64: a static buffer whose last row the next call reads
        as its input when passed back as it is (copy the block to keep it)."""
        if self._replay_greedy is None:
            raise RuntimeError("GraphDecoder.greedy: no greedy graph; call record_greedy(model) before the prefill")
        last = self._greedy_tokens[-1]
        if input_ids.data_ptr() != last.data_ptr():
            last.copy_(input_ids)
        self._replay_greedy()
        return self._greedy_tokens


class GraphDecoders:
    """One model's :class:`GraphDecoder` per (batch size, state dtype), built on first use.

    Graphs hold the addresses of the model's parameters: if the parameters are moved
    or replaced (``model.to``, ``load_state_dict`` with ``assign``), every graph is
    dropped and recorded anew.
    """

    def __init__(self, model: MambaLM, recorder_factory: Callable[[], Recorder]) -> None:
        self._model = weakref.ref(model)
        self._recorder_factory = recorder_factory
        self._recorder: Recorder | None = None
        self._decoders: dict[tuple[int, torch.dtype | None], GraphDecoder] = {}
        self._signature = self._parameters_signature()

    def _parameters_signature(self) -> tuple:
        model = self._model()
        assert model is not None
        return tuple((p.data_ptr(), p.dtype, p.device) for p in model.parameters())

    def get(self, batch: int, *, state_dtype: torch.dtype | None = torch.float32, greedy: bool = False) -> GraphDecoder:
        """The decoder for ``batch`` sequences with states of ``state_dtype``; with
        ``greedy``, its greedy graph recorded too (which zeroes its cache: get it before
        the prefill)."""
        model = self._model()
        assert model is not None
        signature = self._parameters_signature()
        if signature != self._signature:
            self.clear()
            self._signature = signature
        key = (batch, state_dtype)
        if key not in self._decoders:
            if self._recorder is None:
                self._recorder = self._recorder_factory()
            self._decoders[key] = GraphDecoder(model, batch, recorder=self._recorder, state_dtype=state_dtype)
        decoder = self._decoders[key]
        if greedy and not decoder.has_greedy:
            decoder.record_greedy(model)
        return decoder

    def clear(self) -> None:
        """Drop every recorded graph and cache (their memory returns to the allocator)."""
        self._decoders.clear()
        self._recorder = None

    def __len__(self) -> int:
        return len(self._decoders)


_GRAPH_DECODERS: weakref.WeakKeyDictionary[MambaLM, GraphDecoders] = weakref.WeakKeyDictionary()


def graph_decoders(
    model: MambaLM, *, recorder_factory: Callable[[], Recorder] = CUDAGraphRecorder
) -> GraphDecoders:
    """The :class:`GraphDecoders` kept for ``model`` (created on first use; freed with the model)."""
    if model not in _GRAPH_DECODERS:
        _GRAPH_DECODERS[model] = GraphDecoders(model, recorder_factory)
    return _GRAPH_DECODERS[model]
