"""``decode_linear``: ``x @ weight.T + bias`` for the few rows of a decode step.

A decode step's products (x_proj and out_proj of every layer, in_proj where it is not
fused with the conv step, the LM head) multiply a handful of rows by a weight read once;
they take a few microseconds each, and in a replayed CUDA graph a cuBLAS product also
leaves a gap before and after it, since it neither waits for its predecessor
programmatically nor lets its successor launch early. On the Triton path the product is
a dependent launch (kernels/dependent_launch.py) that asks L2 for its weight while the
kernel before it still runs, and a narrow product can split K over several programs a
tile. Where cuBLAS measured faster inside the decode step (kernel.py's
``default_launch``: the LM head among others), the op runs ``F.linear``.

The Triton kernel is the custom op ``seqmamba::decode_linear``, so a compiled decode loop
calls it without a graph break.
"""
from __future__ import annotations

import torch

from ..backend import resolve_backend
from ..checks import check_sizes, check_tensor
from .reference import decode_linear_reference

OP = "decode_linear"
BACKENDS = ("triton", "reference")
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def decode_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, backend: str | None = None
) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for a decode step's rows.

    Args:
        x: (M, K), any strides (the decode step passes a half of a wider buffer).
        weight: (N, K) in x's dtype, as nn.Linear keeps it.
        bias: (N,) or None.
        backend: None (Triton on CUDA, the reference elsewhere), "triton" or "reference".
            On the Triton backend, row counts where cuBLAS measured faster run F.linear.

    Returns:
        (M, N) in x's dtype; not differentiable (a decoding step).

    Raises:
        ValueError: naming the argument whose shape, dtype or device is wrong, or for a
            backend that cannot run here.
    """
    check_tensor(OP, "x", x, (None, None), dims="(M, K)")
    check_sizes(OP, "x", x, ("M", "K"))
    m, k = x.shape
    check_tensor(OP, "weight", weight, (None, k), dims="(N, K)", dtypes=(x.dtype,), device=x.device)
    if weight.shape[0] < 1:
        raise ValueError(f"{OP}: weight must have at least one row (N), got shape {tuple(weight.shape)}")
    if bias is not None:
        check_tensor(OP, "bias", bias, (weight.shape[0],), dims="(N,)", dtypes=(x.dtype,), device=x.device)
    name = resolve_backend(OP, backend, x.device, BACKENDS)
    with torch.no_grad():
        if name == "triton":
            if x.dtype not in TRITON_DTYPES:
                raise ValueError(f"{OP}: the Triton kernel takes x in float16, bfloat16 or float32, got {x.dtype}; "
                                 f"use backend='reference'")
            return decode_linear_op(x, weight, bias)
        return decode_linear_reference(x, weight, bias)


def waits_then_signals(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``decode_linear(x, weight)`` on the default backend runs a kernel that waits
    for the kernel before it and only then lets the kernel after it launch (the Triton
    kernel as a dependent launch): then whatever was written two launches before the
    kernel after it is complete when that kernel starts (see ``early_loads`` of
    ``selective_state_update``). False on CPU and where cuBLAS's product runs."""
    from .kernel import runs_as_dependent_launch

    return resolve_backend(OP, None, x.device, BACKENDS) == "triton" and runs_as_dependent_launch(x, weight)


@torch.library.custom_op("seqmamba::decode_linear", mutates_args=())
def decode_linear_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The Triton kernel (or F.linear where the launch rule says so) as one op."""
    from .kernel import decode_linear_triton

    return decode_linear_triton(x, weight, bias)


@decode_linear_op.register_fake
def _(x, weight, bias):
    return x.new_empty(x.shape[0], weight.shape[0])
