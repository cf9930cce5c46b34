"""The mixer's region after in_proj: the parameters it reads, and the selective scan's
inputs it forms from x_proj's output. Shared by the mixer and its memory-saving form
(:mod:`seqmamba.models.recompute`), which rebuilds them in its backward."""
from __future__ import annotations

from typing import NamedTuple

import torch
from einops import rearrange
from torch import Tensor


class RegionWeights(NamedTuple):
    """The mixer's parameters the region reads (mamba_ssm names), passed to it explicitly
    so that the non-Triton backward can rerun it on detached copies."""

    conv_weight: Tensor  # (d_inner, 1, d_conv), an nn.Conv1d weight
    conv_bias: Tensor | None  # (d_inner,)
    x_proj_weight: Tensor  # (dt_rank + 2 * d_state, d_inner)
    dt_proj_weight: Tensor  # (d_inner, dt_rank)
    dt_proj_bias: Tensor  # (d_inner,), added to Δ inside the scan
    A_log: Tensor  # (d_inner, d_state), A = -exp(A_log)
    D: Tensor  # (d_inner,)


class ScanInputs(NamedTuple):
    dt_proj_weight: Tensor  # (d_inner, dt_rank) in x_dbl's dtype
    delta: Tensor  # (batch, d_inner, L) before its bias and softplus, laid out (d_inner, batch, L)
    A: Tensor  # (d_inner, d_state)
    B: Tensor  # (batch, d_state, L)
    C: Tensor  # (batch, d_state, L)
    D: Tensor  # (d_inner,)
    delta_bias: Tensor  # (d_inner,)


def scan_inputs(x_dbl: Tensor, w: RegionWeights, length: int, delta: Tensor | None = None) -> ScanInputs:
    """Δ, A, B, C, D and Δ's bias from x_dbl (batch * L, dt_rank + 2 * d_state), x_proj's
    output: the selective (input-dependent) Δ through dt_proj, whose bias the scan adds
    before its softplus (delta_bias), as in mamba_ssm; A, D and the bias in fp32.
    ``delta``: Δ as an earlier call gave it, kept instead of recomputed."""
    dt_rank, d_state = w.dt_proj_weight.shape[1], w.A_log.shape[1]
    dt, B, C = torch.split(x_dbl, [dt_rank, d_state, d_state], dim=-1)
    dt_proj_weight = w.dt_proj_weight.to(x_dbl.dtype)
    if delta is None:
        # W @ dt^T gives (d_inner, batch * L): L fastest, the layout the scan reads.
        delta = rearrange(dt_proj_weight @ dt.t(), "d (b l) -> b d l", l=length)
    return ScanInputs(
        dt_proj_weight=dt_proj_weight,
        delta=delta,
        A=-torch.exp(_fp32(w.A_log)),
        B=rearrange(B, "(b l) n -> b n l", l=length).contiguous(),
        C=rearrange(C, "(b l) n -> b n l", l=length).contiguous(),
        D=_fp32(w.D),
        delta_bias=_fp32(w.dt_proj_bias),
    )


def _fp32(t: Tensor) -> Tensor:
    """t in float32, or float64 if it already is: the scan's A, D and bias stay full
    precision under low-precision training, and float64 checks stay float64."""
    return t if t.dtype == torch.float64 else t.float()
