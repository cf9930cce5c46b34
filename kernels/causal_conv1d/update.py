"""``causal_conv1d_update``: one decoding step of the causal conv1d, its window updated in place.

During decoding a Mamba layer sees one token at a time: its convolution needs only the
last ``width`` inputs. The window shifts left by one, takes the new input last, and the
step's output is the dot product of the window with the taps (plus bias, then SiLU). One
fused kernel replaces the handful of small ops (roll, copy, cast, multiply, sum, bias,
activation) that the same step costs in plain PyTorch: at batch 1 the decode step is
bound by the number of kernels it launches, not by their arithmetic.

The Triton path is the custom op ``seqmamba::causal_conv1d_update``, declared as
mutating ``conv_state``, so a CUDA graph or a compiled decode loop keeps the update.
"""
from __future__ import annotations

import torch

from ..backend import resolve_backend
from ..checks import check_tensor, elements_overlap
from .op import ACTIVATIONS, WIDTHS
from .reference import causal_conv1d_update_reference

OP = "causal_conv1d_update"
BACKENDS = ("triton", "reference")


def causal_conv1d_update(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Advance a causal conv1d by one step: shift ``conv_state`` left, append x, convolve.

    ``conv_state[b, d, :] <- [conv_state[b, d, 1:], x[b, d]]``, then
    ``out[b, d] = act(bias[d] + sum_k weight[d, k] * conv_state[b, d, k])``, accumulated
    in float32 (float64 for float64 inputs). Calling it on x[:, :, 0], x[:, :, 1], ...
    from a window holding the last ``width`` inputs reproduces
    ``causal_conv1d(x, weight, bias, activation, initial_state=window[..., 1:])``.

    Args:
        x: (batch, D) the newest input; any strides.
        conv_state: (batch, D, width) the last ``width`` inputs, oldest first, in x's
            dtype; overwritten. Column 0 drops out at this step, so only columns 1.. need
            to hold inputs (a cache filled from ``causal_conv1d``'s final state of width
            - 1 columns may leave column 0 as anything). Its elements must not overlap.
        weight: (D, width) taps, width 2 to 4; tap ``width - 1`` multiplies x.
        bias: (D,) added before the activation.
        activation: None or "silu".
        backend: None (Triton on CUDA, the reference elsewhere), "triton" or "reference".

    Returns:
        out (batch, D) in x's dtype. Not differentiable (a decoding step).

    Raises:
        ValueError: naming the argument whose shape, dtype, device or layout is wrong,
            or for a backend that cannot run here.
    """
    _check_inputs(x, conv_state, weight, bias, activation)
    silu = activation == "silu"
    name = resolve_backend(OP, backend, x.device, BACKENDS)
    with torch.no_grad():
        if name == "triton":
            return causal_conv1d_update_op(x, conv_state, weight, bias, silu)
        return causal_conv1d_update_reference(x, conv_state, weight, bias, silu)


@torch.library.custom_op("seqmamba::causal_conv1d_update", mutates_args=("conv_state",))
def causal_conv1d_update_op(
    x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, silu: bool
) -> torch.Tensor:
    """The Triton step as one op: updates ``conv_state`` in place, returns out (batch, D)."""
    from .update_kernel import causal_conv1d_update_triton

    return causal_conv1d_update_triton(x, conv_state, weight, bias, silu)


@causal_conv1d_update_op.register_fake
def _(x, conv_state, weight, bias, silu):
    return x.new_empty(x.shape[0], x.shape[1])


def _check_inputs(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str | None,
) -> None:
    check_tensor(OP, "x", x, (None, None), dims="(batch, D)")
    batch, dim = x.shape
    if min(batch, dim) < 1:
        raise ValueError(f"{OP}: x must have batch and D of at least 1, got shape {tuple(x.shape)}")
    check_conv_step(OP, batch, x.device, conv_state, weight, bias, activation, dim=dim, state_dtypes=(x.dtype,))


def check_conv_step(
    op: str,
    batch: int,
    device: torch.device,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str | None,
    *,
    dim: int | None = None,
    state_dtypes: tuple[torch.dtype, ...] | None = None,
    weight_name: str = "weight",
    bias_name: str = "bias",
) -> None:
    """The checks of a conv step's window (batch, D, width, written in place), taps
    (D, width), bias (D,) and activation, for ``op``'s messages; ``dim``: the D the
    input has, if known before the taps."""
    check_tensor(op, weight_name, weight, (dim, None), dims="(D, width)", device=device)
    dim, width = weight.shape
    if width not in WIDTHS:
        raise ValueError(f"{op}: {weight_name} has width {width} (shape {tuple(weight.shape)}); "
                         f"supported widths: {WIDTHS}")
    check_tensor(op, "conv_state", conv_state, (batch, dim, width), dims="(batch, D, width)",
                 **({"dtypes": state_dtypes} if state_dtypes else {}), device=device)
    if elements_overlap(conv_state):
        raise ValueError(
            f"{op}: conv_state (shape {tuple(conv_state.shape)}, strides {conv_state.stride()}) has overlapping "
            "elements; it is updated in place, so pass a dense tensor (e.g. torch.zeros(batch, D, width))"
        )
    if bias is not None:
        check_tensor(op, bias_name, bias, (dim,), dims="(D,)", device=device)
    if activation not in ACTIVATIONS:
        raise ValueError(f"{op}: activation must be None or 'silu', got {activation!r}")

