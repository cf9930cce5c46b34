"""``causal_conv1d``: the one entry point model code calls for Mamba's short depthwise conv."""
from __future__ import annotations

import torch

from ..backend import resolve_backend
from ..checks import check_sizes, check_tensor
from .reference import causal_conv1d_reference, final_conv_state

OP = "causal_conv1d"
BACKENDS = ("triton", "reference")
WIDTHS = (2, 3, 4)
ACTIVATIONS = (None, "silu")


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
    backend: str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Depthwise causal conv1d with optional SiLU, as in Mamba's block.

    ``out[b, d, l] = act(bias[d] + sum_k weight[d, k] * xp[b, d, l + k])`` with
    ``xp = [initial_state, x]`` along L; without a state this equals
    ``F.conv1d(x, weight[:, None, :], bias, padding=width - 1, groups=D)[..., :L]``.
    Accumulates in float32 (float64 for float64 inputs).

    Args:
        x: (batch, D, L) input; any strides (a channel-last view such as
            ``xz.transpose(1, 2)[:, :D]`` is read in place, without a copy).
        weight: (D, width) taps, width 2 to 4; tap ``width - 1`` multiplies the
            current step.
        bias: (D,) added before the activation.
        activation: None or "silu".
        initial_state: (batch, D, width-1), the last width-1 inputs before x, in x's
            dtype (zeros if None).
        return_final_state: also return the last width-1 columns of
            ``[initial_state, x]``; passing it as the next call's ``initial_state``
            makes chained calls equal one call on the concatenation (also for
            L < width-1).
        backend: None (Triton on CUDA, the reference elsewhere), "triton" or "reference".

    Returns:
        out (batch, D, L) in x's dtype (the Triton kernel lays it out in memory like x,
        the reference contiguously); or ``(out, final_state)`` with
        final_state (batch, D, width-1) in x's dtype. Differentiable in x, weight,
        bias and initial_state (also through final_state).

    Raises:
        ValueError: naming the argument whose shape, dtype, device or value is wrong,
            or for a backend that cannot run here.
    """
    _check_inputs(x, weight, bias, activation, initial_state)
    silu = activation == "silu"
    name = resolve_backend(OP, backend, x.device, BACKENDS)
    if name == "triton":
        from .autograd import causal_conv1d_fwd

        out = causal_conv1d_fwd(x, weight, bias, initial_state, silu)
    else:
        out = causal_conv1d_reference(x, weight, bias, silu, initial_state)
    if not return_final_state:
        return out
    return out, final_conv_state(x, initial_state, weight.shape[1])


def _check_inputs(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str | None,
    initial_state: torch.Tensor | None,
) -> None:
    check_tensor(OP, "x", x, (None, None, None), dims="(batch, D, L)")
    check_sizes(OP, "x", x, ("batch", "D", "L"))
    batch, dim, length = x.shape
    device = x.device
    check_tensor(OP, "weight", weight, (dim, None), dims="(D, width)", device=device)
    width = weight.shape[1]
    if width not in WIDTHS:
        raise ValueError(f"{OP}: weight has width {width} (shape {tuple(weight.shape)}); supported widths: {WIDTHS}")
    if bias is not None:
        check_tensor(OP, "bias", bias, (dim,), dims="(D,)", device=device)
    if activation not in ACTIVATIONS:
        raise ValueError(f"{OP}: activation must be None or 'silu', got {activation!r}")
    if initial_state is not None:
        check_tensor(
            OP, "initial_state", initial_state, (batch, dim, width - 1), dims="(batch, D, width-1)",
            dtypes=(x.dtype,), device=device,
        )
