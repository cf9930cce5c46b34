"""``proj_conv_update``: a decode step's input projection and conv step in one kernel.

A Mamba layer's decode step starts with ``xz = in_proj(h)``, splits it into x and z and
advances the causal conv by one step on x. At decoding batch sizes each of those is a
kernel bound by its launch more than by its arithmetic; on the Triton path the conv step
runs as the product's epilogue, so the layer launches one kernel fewer per token.

The Triton path is the custom op ``seqmamba::proj_conv_update``, declared as mutating
``conv_state``, so a CUDA graph or a compiled decode loop keeps the window's update.
"""
from __future__ import annotations

import torch

from ..backend import resolve_backend
from ..causal_conv1d.update import check_conv_step
from ..checks import check_sizes, check_tensor
from ..decode_linear.op import check_row_sumsq
from .reference import proj_conv_update_reference

OP = "proj_conv_update"
BACKENDS = ("triton", "reference")
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def proj_conv_update(
    hidden: torch.Tensor,
    proj_weight: torch.Tensor,
    conv_state: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor | None = None,
    proj_bias: torch.Tensor | None = None,
    activation: str | None = None,
    backend: str | None = None,
    *,
    early_loads: bool = False,
    row_sumsq: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``xz = hidden @ proj_weight.T + proj_bias``, then one causal conv1d step on its x half.

    Equal to ``x, z = F.linear(hidden, proj_weight, proj_bias).chunk(2, dim=-1)`` followed
    by ``x = causal_conv1d_update(x.to(conv_state.dtype), conv_state, conv_weight,
    conv_bias, activation).to(hidden.dtype)``.

    Args:
        hidden: (batch, K) the normed input of this token; any strides.
        proj_weight: (2 D, K) the input projection (x rows, then z rows), hidden's dtype.
        conv_state: (batch, D, width) the conv window, oldest input first, updated in place
            (see ``causal_conv1d_update``); its elements must not overlap.
        conv_weight: (D, width) taps, width 2 to 4.
        conv_bias: (D,) added before the activation.
        proj_bias: (2 D,) the projection's bias.
        activation: None or "silu".
        backend: None (Triton on CUDA, the reference elsewhere), "triton" or "reference".
        early_loads: a promise that the kernel launched just before this call does not
            write conv_state (in a decode step it is the add + norm). The fused Triton
            kernel, a dependent launch on Hopper GPUs, then reads the windows and taps
            before it waits for that kernel, overlapping its run. Leave it False when
            the window may just have been written (this op twice in a row on one state).
        row_sumsq: None, or (batch, P) float32: hidden holds a deferred RMSNorm's rows
            (see ``decode_linear``'s NormedRows) and the product is that of the normed
            rows: each row of ``hidden @ proj_weight.T`` is scaled by
            ``rsqrt(row_sumsq[i].sum() / K + eps)`` before the bias.
        eps: the deferred norm's.

    Returns:
        (x, z), each (batch, D) in hidden's dtype: the conv step's output and the gate
        input, two halves of one (batch, 2 D) buffer. Not differentiable (a decoding step).

    Raises:
        ValueError: naming the argument whose shape, dtype, device or layout is wrong,
            or for a backend that cannot run here.
    """
    _check_inputs(hidden, proj_weight, conv_state, conv_weight, conv_bias, proj_bias, activation)
    if row_sumsq is not None:
        check_row_sumsq(OP, hidden, row_sumsq, eps)
    silu = activation == "silu"
    name = resolve_backend(OP, backend, hidden.device, BACKENDS)
    with torch.no_grad():
        if name == "triton":
            for arg, t in (("hidden", hidden), ("conv_state", conv_state)):
                if t.dtype not in TRITON_DTYPES:
                    raise ValueError(f"{OP}: the Triton kernel takes {arg} in float16, bfloat16 or float32, "
                                     f"got {t.dtype}; use backend='reference'")
            xz = proj_conv_update_op(hidden, proj_weight, proj_bias, conv_state, conv_weight, conv_bias, silu,
                                     bool(early_loads), row_sumsq, float(eps))
        else:
            xz = proj_conv_update_reference(hidden, proj_weight, proj_bias, conv_state, conv_weight, conv_bias, silu,
                                            row_sumsq, eps)
    dim = conv_state.shape[1]
    return xz[:, :dim], xz[:, dim:]


@torch.library.custom_op("seqmamba::proj_conv_update", mutates_args=("conv_state",))
def proj_conv_update_op(
    hidden: torch.Tensor,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor | None,
    conv_state: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor | None,
    silu: bool,
    early_loads: bool = False,
    row_sumsq: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """The Triton kernel as one op: updates ``conv_state`` in place, returns (batch, 2 D)."""
    from .kernel import proj_conv_update_triton

    return proj_conv_update_triton(hidden, proj_weight, proj_bias, conv_state, conv_weight, conv_bias, silu,
                                   early_loads=early_loads, row_sumsq=row_sumsq, eps=eps)


@proj_conv_update_op.register_fake
def _(hidden, proj_weight, proj_bias, conv_state, conv_weight, conv_bias, silu, early_loads=False, row_sumsq=None,
      eps=1e-5):
    return hidden.new_empty(hidden.shape[0], proj_weight.shape[0])


def _check_inputs(
    hidden: torch.Tensor,
    proj_weight: torch.Tensor,
    conv_state: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor | None,
    proj_bias: torch.Tensor | None,
    activation: str | None,
) -> None:
    check_tensor(OP, "hidden", hidden, (None, None), dims="(batch, K)")
    check_sizes(OP, "hidden", hidden, ("batch", "K"))
    batch, k = hidden.shape
    device = hidden.device
    check_conv_step(OP, batch, device, conv_state, conv_weight, conv_bias, activation,
                    weight_name="conv_weight", bias_name="conv_bias")
    dim = conv_weight.shape[0]
    check_tensor(OP, "proj_weight", proj_weight, (2 * dim, k), dims="(2 D, K)", dtypes=(hidden.dtype,), device=device)
    if proj_bias is not None:
        check_tensor(OP, "proj_bias", proj_bias, (2 * dim,), dims="(2 D,)", device=device)
