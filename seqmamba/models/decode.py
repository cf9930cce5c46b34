"""Recurrent inference: prefill a prompt with the parallel scan, then decode token by token.

``prefill`` runs the prompt through the model once, with the parallel selective scan,
and stores each mixer's final state (conv window and SSM state) in an
:class:`~seqmamba.models.cache.InferenceCache`. ``decode_step`` then advances every
layer by one token from that cache, in place: the convolution becomes a shift of a
``d_conv``-wide window and the scan one call of ``selective_state_update``. Both walk
the same layers, in the same add -> norm -> mixer order, as :class:`MambaBackbone`, so
a step reproduces the parallel forward's logits at the next position.
"""
from __future__ import annotations

import torch

from seqmamba.kernels import decode_linear, proj_conv_update, selective_state_update
from seqmamba.kernels.decode_linear import waits_then_signals

from .backbone import MambaBackbone
from .block import Block
from .cache import InferenceCache, LayerCache
from .lm import MambaLM
from .mixer import Mamba
from .norm import add_norm


def mixer_step(mixer: Mamba, hidden_states: torch.Tensor, cache: LayerCache) -> torch.Tensor:
    """One token through ``mixer``, updating ``cache`` in place.

    hidden_states: (batch, d_model), the normed input of this token; cache.conv
    (batch, d_inner, d_conv) and cache.ssm (batch, d_inner, d_state).
    Returns (batch, d_model), the mixer's output for this token.
    """
    # The causal conv at the newest position only needs the last d_conv inputs: the op
    # projects x and z, shifts the window left by one, puts x last (same memory, so a
    # CUDA graph can replay it) and returns silu(bias + taps . window), accumulated in
    # float32; on the GPU the conv step is the product's epilogue, one kernel.
    taps = mixer.conv1d.weight[:, 0, :]  # (d_inner, d_conv); tap d_conv - 1 is the newest input
    x, z = proj_conv_update(
        hidden_states, mixer.in_proj.weight, cache.conv, taps, mixer.conv1d.bias,
        proj_bias=mixer.in_proj.bias, activation="silu",
        # The kernel before (the add + norm) writes no window: the op may read the
        # windows while that kernel still runs.
        early_loads=True,
    )  # (batch, d_inner) each

    # x_proj and out_proj: F.linear, on the GPU as products that overlap their neighbours
    # in the replayed step (kernels/decode_linear).
    dt, B, C = torch.split(decode_linear(x, mixer.x_proj.weight), [mixer.dt_rank, mixer.d_state, mixer.d_state], dim=-1)
    # Where that product is a dependent launch (waits, then signals), the SSM step may
    # read what older kernels wrote (its state, x, z) while the product still runs: only
    # dt, B and C are the product's.
    early = waits_then_signals(x, mixer.x_proj.weight)
    # As in the forward: Δ's bias and softplus are applied inside the SSM op, which reads
    # the strided slices of the projections and the parameters in their own dtypes (it
    # computes in float32), A as A_log, and projects Δ from its low-rank input itself:
    # no copies, casts, exp or extra matrix product, each one more kernel.
    y = selective_state_update(
        cache.ssm,
        x,
        dt,  # (batch, dt_rank): the op applies dt_proj's weight itself
        mixer.A_log,
        B,
        C,
        D=mixer.D,
        z=z,
        dt_bias=mixer.dt_proj.bias,
        dt_softplus=True,
        A_is_log=True,
        dt_weight=mixer.dt_proj.weight,
        early_loads=early,
    )
    return decode_linear(y, mixer.out_proj.weight, mixer.out_proj.bias)


def _block_step(
    block: Block, hidden_states: torch.Tensor, residual: torch.Tensor | None, cache: LayerCache
) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`Block.forward` for one token (batch, d_model), with the recurrent mixer."""
    normed, residual = add_norm(block.norm, hidden_states, residual, residual_in_fp32=block.residual_in_fp32)
    return mixer_step(block.mixer, normed, cache), residual


def _final_norm(backbone: MambaBackbone, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """The backbone's last add and norm_f, the same arithmetic as its forward."""
    normed, _ = add_norm(
        backbone.norm_f, hidden_states, residual, residual_in_fp32=backbone.config.residual_in_fp32
    )
    return normed


def decode_step(model: MambaLM, input_ids: torch.Tensor, cache: InferenceCache) -> torch.Tensor:
    """Advance every layer by one token; the cache is updated in place.

    input_ids: (batch,) int64, the newest token of each sequence; cache for the same
    batch. Returns logits (batch, padded_vocab_size) for the token after it.
    Allocates nothing that outlives the call, so it can be captured in a CUDA graph.
    """
    backbone = model.backbone
    hidden_states, residual = backbone.embedding(input_ids), None
    for block, layer_cache in zip(backbone.layers, cache.layers, strict=True):
        hidden_states, residual = _block_step(block, hidden_states, residual, layer_cache)
    # The head through the decode products' op too: its launch rule keeps cuBLAS's
    # product for a vocabulary-wide weight unless a measurement says otherwise.
    return decode_linear(_final_norm(backbone, hidden_states, residual), model.lm_head.weight, model.lm_head.bias)


def prefill(
    model: MambaLM, input_ids: torch.Tensor, cache: InferenceCache, *, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """Run whole prompts with the parallel scan and store each layer's final state.

    input_ids: (n, L) int64 prompts, all of length L (no padding: every token enters
    the state); rows: (n,) the cache rows these prompts fill (all rows if None, then
    n == cache.batch_size). Returns the logits after the last prompt token,
    (n, padded_vocab_size).
    """
    backbone = model.backbone
    hidden_states, residual = backbone.embedding(input_ids), None
    for block, layer_cache in zip(backbone.layers, cache.layers, strict=True):
        hidden_states, residual, state = block.forward_with_state(hidden_states, residual, None)
        layer_cache.load_(state, rows)
    # Only the last position is needed: the head runs on one token per prompt.
    return model.lm_head(_final_norm(backbone, hidden_states[:, -1], residual[:, -1]))

