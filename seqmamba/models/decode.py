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

import os
from collections.abc import Sequence

import torch

from seqmamba.kernels import decode_linear, proj_conv_update, selective_state_update
from seqmamba.kernels.decode_linear import NormedRows, decode_linear_add_norm, waits_then_signals

from .backbone import MambaBackbone
from .block import Block
from .cache import InferenceCache, LayerCache
from .lm import MambaLM
from .mixer import Mamba
from .norm import RMSNorm, add_norm

# SEQMAMBA_DEFER_NORM=0: every norm of the decode step as its own add + norm kernel (to
# compare against the deferred norm in out_proj's epilogue).
DEFER_NORM = os.environ.get("SEQMAMBA_DEFER_NORM", "1") != "0"


def mixer_inner_step(mixer: Mamba, normed: NormedRows, cache: LayerCache) -> torch.Tensor:
    """One token through ``mixer`` up to its output projection, updating ``cache`` in place.

    normed: the block's normed input, (batch, d_model) rows, possibly with the norm's
    1 / rms deferred to in_proj (see ``NormedRows``); cache.conv (batch, d_inner, d_conv)
    and cache.ssm (batch, d_inner, d_state). Returns y (batch, d_inner), the gated SSM
    output that out_proj takes."""
    # The causal conv at the newest position only needs the last d_conv inputs: the op
    # projects x and z, shifts the window left by one, puts x last (same memory, so a
    # CUDA graph can replay it) and returns silu(bias + taps . window), accumulated in
    # float32; on the GPU the conv step is the product's epilogue, one kernel.
    taps = mixer.conv1d.weight[:, 0, :]  # (d_inner, d_conv); tap d_conv - 1 is the newest input
    x, z = proj_conv_update(
        normed.rows, mixer.in_proj.weight, cache.conv, taps, mixer.conv1d.bias,
        proj_bias=mixer.in_proj.bias, activation="silu",
        # The kernel before (the add + norm, or the product whose epilogue it is) writes
        # no window: the op may read the windows while that kernel still runs.
        early_loads=True,
        row_sumsq=normed.row_sumsq, eps=normed.eps,
    )  # (batch, d_inner) each

    # x_proj: F.linear, on the GPU as a product that overlaps its neighbours in the
    # replayed step (kernels/decode_linear).
    dt, B, C = torch.split(decode_linear(x, mixer.x_proj.weight), [mixer.dt_rank, mixer.d_state, mixer.d_state], dim=-1)
    # Where that product is a dependent launch (waits, then signals), the SSM step may
    # read what older kernels wrote (its state, x, z) while the product still runs: only
    # dt, B and C are the product's.
    early = waits_then_signals(x, mixer.x_proj.weight)
    # As in the forward: Δ's bias and softplus are applied inside the SSM op, which reads
    # the strided slices of the projections and the parameters in their own dtypes (it
    # computes in float32), A as A_log, and projects Δ from its low-rank input itself:
    # no copies, casts, exp or extra matrix product, each one more kernel.
    return selective_state_update(
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


def _out_proj_add_norm(
    out_proj: torch.nn.Linear, y: torch.Tensor, residual: torch.Tensor, norm: torch.nn.Module, *,
    residual_in_fp32: bool,
) -> tuple[NormedRows, torch.Tensor]:
    """A layer's output projection, the residual add and the next block's norm: (the next
    mixer's normed input, the new residual), as ``add_norm(norm, out_proj(y), residual)``.

    An RMSNorm's 1 / rms is left to the next in_proj, and the add and the norm's other
    work become out_proj's epilogue: one kernel a layer fewer (``NormedRows``;
    SEQMAMBA_DEFER_NORM=0 turns it off)."""
    if DEFER_NORM and isinstance(norm, RMSNorm):
        return decode_linear_add_norm(y, out_proj.weight, out_proj.bias, residual, norm.weight, norm.eps,
                                      residual_in_fp32=residual_in_fp32)
    normed, residual = add_norm(norm, decode_linear(y, out_proj.weight, out_proj.bias), residual,
                                residual_in_fp32=residual_in_fp32)
    return NormedRows(normed), residual


def blocks_step(
    blocks: Sequence[Block], hidden_states: torch.Tensor, caches: Sequence[LayerCache],
    residual: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`Block.forward` of each of ``blocks`` in turn for one token, with the
    recurrent mixer step; ``caches`` (one per block) advance in place.

    hidden_states: (batch, d_model), the input of the first block (embeddings, or the last
    mixer output before ``residual``). Returns ``(hidden_states, residual)`` after the
    last block, as the blocks' forward returns them: the last mixer's output and the
    residual stream before it is added. The same add -> norm -> mixer order, grouped as
    norm -> (mixer, add, next norm): each block's out_proj also adds the residual and
    starts the next block's norm.
    """
    if len(blocks) == 0 or len(caches) != len(blocks):
        raise ValueError(f"blocks_step: needs at least one block and one cache a block, got {len(blocks)} blocks "
                         f"and {len(caches)} caches")
    first = blocks[0]
    normed, residual = add_norm(first.norm, hidden_states, residual, residual_in_fp32=first.residual_in_fp32)
    normed = NormedRows(normed)
    for i, (block, cache) in enumerate(zip(blocks, caches, strict=True)):
        y = mixer_inner_step(block.mixer, normed, cache)
        out_proj = block.mixer.out_proj
        if i + 1 == len(blocks):
            break
        following = blocks[i + 1]
        normed, residual = _out_proj_add_norm(out_proj, y, residual, following.norm,
                                              residual_in_fp32=following.residual_in_fp32)
    return decode_linear(y, out_proj.weight, out_proj.bias), residual


def decode_step(model: MambaLM, input_ids: torch.Tensor, cache: InferenceCache) -> torch.Tensor:
    """Advance every layer by one token; the cache is updated in place.

    input_ids: (batch,) int64, the newest token of each sequence; cache for the same
    batch. Returns logits (batch, padded_vocab_size) for the token after it.
    Allocates nothing that outlives the call, so it can be captured in a CUDA graph.
    """
    backbone = model.backbone
    hidden_states, residual = blocks_step(backbone.layers, backbone.embedding(input_ids), cache.layers)
    # The head through the decode products' op too: its launch rule keeps cuBLAS's
    # product for a vocabulary-wide weight unless a measurement says otherwise.
    return decode_linear(_final_norm(backbone, hidden_states, residual), model.lm_head.weight, model.lm_head.bias)


def _final_norm(backbone: MambaBackbone, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """The backbone's last add and norm_f, the same arithmetic as its forward."""
    normed, _ = add_norm(
        backbone.norm_f, hidden_states, residual, residual_in_fp32=backbone.config.residual_in_fp32
    )
    return normed


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

