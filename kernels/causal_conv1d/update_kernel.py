"""Triton kernels for one decoding step of the causal conv1d (see update.py).

The step: one program owns BLOCK_D channels of one batch row; it loads their
(BLOCK_D, width) window and taps, writes the shifted window back with x appended, and
the activated dot product as the output. The step with a projection: one program owns a
whole batch row, runs the step for all its channels, then projects the outputs.
Everything is read through strides.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .kernel import _acc_dtype

BLOCK_D = 128


@triton.jit
def _conv_step(
    x_ptr, state_ptr, w_ptr, bias_ptr, b, offs_d, mask_d, WIDTH,
    s_xb, s_xd, s_sb, s_sd, s_sk, s_wd, s_wk,
    BLOCK_W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, ACC: tl.constexpr,
):
    """The step for channels offs_d of batch row b: stores the shifted window, returns
    act(bias + taps . window) in ACC."""
    k = tl.arange(0, BLOCK_W)
    mask = mask_d[:, None] & (k < WIDTH)[None, :]
    state_base = state_ptr + b * s_sb + offs_d[:, None] * s_sd
    # The new window: columns 1 .. width-1 of the old one, then x.
    shifted = tl.load(state_base + (k[None, :] + 1) * s_sk, mask=mask & (k < WIDTH - 1)[None, :], other=0.0)
    x = tl.load(x_ptr + b * s_xb + offs_d * s_xd, mask=mask_d, other=0.0)
    window = tl.where((k == WIDTH - 1)[None, :], x[:, None].to(shifted.dtype), shifted)
    # A thread may store a column another thread has still to read: all reads first.
    tl.debug_barrier()
    tl.store(state_base + k[None, :] * s_sk, window, mask=mask)
    taps = tl.load(w_ptr + offs_d[:, None] * s_wd + k[None, :] * s_wk, mask=mask, other=0.0).to(ACC)
    out = tl.sum(window.to(ACC) * taps, axis=1)
    if HAS_BIAS:
        out += tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(ACC)
    if SILU:
        out = out / (1.0 + tl.exp(-out))
    return out


@triton.jit
def _update_kernel(
    x_ptr, state_ptr, w_ptr, bias_ptr, out_ptr,
    D, WIDTH,
    s_xb, s_xd, s_sb, s_sd, s_sk, s_wd, s_wk, s_ob, s_od,
    BLOCK_D: tl.constexpr, BLOCK_W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
    ACC: tl.constexpr,
):
    b = tl.program_id(1).to(tl.int64)
    offs_d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    out = _conv_step(x_ptr, state_ptr, w_ptr, bias_ptr, b, offs_d, mask_d, WIDTH,
                     s_xb, s_xd, s_sb, s_sd, s_sk, s_wd, s_wk, BLOCK_W, HAS_BIAS, SILU, ACC)
    tl.store(out_ptr + b * s_ob + offs_d * s_od, out.to(out_ptr.dtype.element_ty), mask=mask_d)


def causal_conv1d_update_triton(
    x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, silu: bool
) -> torch.Tensor:
    """Launches the step kernel; updates conv_state in place, returns out (batch, D)."""
    batch, dim = x.shape
    width = weight.shape[1]
    out = torch.empty((batch, dim), dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(dim, BLOCK_D), batch)
    _update_kernel[grid](
        x, conv_state, weight, bias if bias is not None else weight, out,
        dim, width,
        *x.stride(), *conv_state.stride(), *weight.stride(), *out.stride(),
        BLOCK_D=BLOCK_D, BLOCK_W=triton.next_power_of_2(width), HAS_BIAS=bias is not None, SILU=silu,
        ACC=_acc_dtype(x.dtype),
    )
    return out


# The projection's tile: (BLOCK_E, PROJ_CHUNK) weights per step of the loop over channels.
PROJ_CHUNK = 64
# Rows up to this many channels run as one program (its window and taps tiles are
# (BLOCK_D, width) each; wider rows would spill registers).
MAX_PROJ_DIM = 4096
# Below this batch the fused kernel's few programs would each read the whole projection
# weight through one multiprocessor, where the step kernel and a matrix product spread it
# over many: a guess until timed on a GPU (bench_generate.py --conv-proj-min-batch).
FUSED_MIN_BATCH = 8


@triton.jit
def _update_proj_kernel(
    x_ptr, state_ptr, w_ptr, bias_ptr, out_ptr, pw_ptr, proj_ptr,
    D, WIDTH, E,
    s_xb, s_xd, s_sb, s_sd, s_sk, s_wd, s_wk, s_ob, s_od, s_pe, s_pd, s_jb, s_je,
    BLOCK_D: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_E: tl.constexpr, CHUNK: tl.constexpr,
    N_CHUNKS: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, ACC: tl.constexpr,
):
    """One program per batch row: the conv step of every channel (as _update_kernel),
    then ``proj = out @ pw.T`` over the row, from ``out`` as stored (rounded to its dtype,
    as a separate matrix product would read it), accumulated in ACC."""
    b = tl.program_id(0).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    out = _conv_step(x_ptr, state_ptr, w_ptr, bias_ptr, b, offs_d, mask_d, WIDTH,
                     s_xb, s_xd, s_sb, s_sd, s_sk, s_wd, s_wk, BLOCK_W, HAS_BIAS, SILU, ACC)
    out_row = out_ptr + b * s_ob
    tl.store(out_row + offs_d * s_od, out.to(out_ptr.dtype.element_ty), mask=mask_d)
    # The outputs come back per chunk of channels, which a register tile cannot be cut
    # into: stored above, read below by other threads of this program.
    tl.debug_barrier()
    offs_e = tl.arange(0, BLOCK_E)
    mask_e = offs_e < E
    acc = tl.zeros((BLOCK_E,), dtype=ACC)
    # Unrolled, with no store inside: every chunk's loads can be in flight at once.
    for c in tl.static_range(N_CHUNKS):
        offs_c = c * CHUNK + tl.arange(0, CHUNK)
        mask_c = offs_c < D
        xc = tl.load(out_row + offs_c * s_od, mask=mask_c, other=0.0).to(ACC)
        wc = tl.load(pw_ptr + offs_e[:, None] * s_pe + offs_c[None, :] * s_pd,
                     mask=mask_e[:, None] & mask_c[None, :], other=0.0).to(ACC)
        acc += tl.sum(wc * xc[None, :], axis=1)
    tl.store(proj_ptr + b * s_jb + offs_e * s_je, acc.to(proj_ptr.dtype.element_ty), mask=mask_e)


def causal_conv1d_update_proj_triton(
    x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, silu: bool,
    proj_weight: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launches the fused step: updates conv_state in place, returns (out (batch, D),
    proj (batch, E)), both in x's dtype. Rows wider than MAX_PROJ_DIM channels, and
    batches under FUSED_MIN_BATCH rows, run the conv step kernel and a matrix product
    instead (which accumulates in float32 and rounds once, as the fused kernel does)."""
    batch, dim = x.shape
    width = weight.shape[1]
    n_proj = proj_weight.shape[0]
    if dim > MAX_PROJ_DIM or batch < FUSED_MIN_BATCH:
        out = causal_conv1d_update_triton(x, conv_state, weight, bias, silu)
        return out, torch.nn.functional.linear(out, proj_weight)
    out = torch.empty((batch, dim), dtype=x.dtype, device=x.device)
    proj = torch.empty((batch, n_proj), dtype=x.dtype, device=x.device)
    _update_proj_kernel[(batch,)](
        x, conv_state, weight, bias if bias is not None else weight, out, proj_weight, proj,
        dim, width, n_proj,
        *x.stride(), *conv_state.stride(), *weight.stride(), *out.stride(), *proj_weight.stride(), *proj.stride(),
        BLOCK_D=triton.next_power_of_2(dim), BLOCK_W=triton.next_power_of_2(width),
        BLOCK_E=triton.next_power_of_2(n_proj), CHUNK=PROJ_CHUNK, N_CHUNKS=triton.cdiv(dim, PROJ_CHUNK),
        HAS_BIAS=bias is not None, SILU=silu, ACC=_acc_dtype(x.dtype), num_warps=8,
    )
    return out, proj
