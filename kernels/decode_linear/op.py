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

Between two blocks the product can also carry the RMSNorm of the next block
(:class:`NormedRows`): ``decode_linear_add_norm`` is out_proj with the residual add and
the norm's elementwise part as its epilogue, and ``decode_linear(..., row_sumsq=...)``
(like ``proj_conv_update``) the next in_proj, which scales its output rows by the norm's
1 / rms. The add + norm then needs no kernel of its own.

The Triton kernels are the custom ops ``seqmamba::decode_linear`` and
``seqmamba::decode_linear_add_norm``, so a compiled decode loop calls them without a
graph break.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from ..backend import resolve_backend
from ..checks import check_eps, check_sizes, check_tensor
from ..rmsnorm import rms_norm
from ..rmsnorm.reference import residual_dtype
from .reference import decode_linear_reference, linear_add_norm_reference, linear_deferred_norm_reference

OP = "decode_linear"
BACKENDS = ("triton", "reference")
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


class NormedRows(NamedTuple):
    """The rows an RMSNorm hands to the product after it, possibly with its 1 / rms not
    yet applied (a *deferred* norm).

    rows: (M, K) the normed rows, or, where ``row_sumsq`` is given, the norm's input times
    the norm's weight; row_sumsq: None, or (M, P) float32 partial sums of squares of the
    norm's input rows (summed over P: the full sum); eps: the norm's. The normed rows are
    ``rows * rsqrt(row_sumsq.sum(-1) / K + eps)[:, None]``. Since a product is linear in
    its rows, the product after the norm scales its output rows by that factor instead,
    and the norm needs no kernel of its own: the product before it (the previous layer's
    out_proj) adds the residual and writes ``rows`` and ``row_sumsq`` as its epilogue.
    """

    rows: torch.Tensor
    row_sumsq: torch.Tensor | None = None
    eps: float = 1e-5


def decode_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, backend: str | None = None, *,
    row_sumsq: torch.Tensor | None = None, eps: float = 1e-5,
) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for a decode step's rows.

    Args:
        x: (M, K), any strides (the decode step passes a half of a wider buffer).
        weight: (N, K) in x's dtype, as nn.Linear keeps it.
        bias: (N,) or None.
        backend: None (Triton on CUDA, the reference elsewhere), "triton" or "reference".
            On the Triton backend, row counts where cuBLAS measured faster run F.linear.
        row_sumsq: None, or (M, P) float32: x holds a deferred RMSNorm's rows (see
            :class:`NormedRows`), and the product is that of the normed rows: each output
            row is scaled by ``rsqrt(row_sumsq[i].sum() / K + eps)`` before the bias.
        eps: the deferred norm's.

    Returns:
        (M, N) in x's dtype; not differentiable (a decoding step).

    Raises:
        ValueError: naming the argument whose shape, dtype or device is wrong, or for a
            backend that cannot run here.
    """
    name = _check_inputs(x, weight, bias, backend)
    if row_sumsq is not None:
        check_row_sumsq(OP, x, row_sumsq, eps)
    with torch.no_grad():
        if name == "triton":
            return decode_linear_op(x, weight, bias, row_sumsq, float(eps))
        if row_sumsq is not None:
            return linear_deferred_norm_reference(x, weight, bias, row_sumsq, eps)
        return decode_linear_reference(x, weight, bias)


def decode_linear_add_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    residual: torch.Tensor,
    norm_weight: torch.Tensor,
    eps: float = 1e-5,
    residual_in_fp32: bool = False,
    backend: str | None = None,
) -> tuple[NormedRows, torch.Tensor]:
    """A decode step's product, the residual add after it and the next RMSNorm, with the
    norm's 1 / rms deferred to the product that takes its rows.

    ``out = F.linear(x, weight, bias)`` (rounded to x's dtype), ``new_residual = residual
    + out`` (stored in float32 when ``residual_in_fp32``, else in x's dtype), then the
    RMSNorm of new_residual with ``norm_weight`` and ``eps``, computed from the stored
    new_residual as :func:`~seqmamba.kernels.rms_norm` computes it.

    Args:
        x: (M, K) the mixer's inner activations; weight (N, K) out_proj's, in x's dtype;
            bias (N,) or None.
        residual: (M, N) the residual stream before this layer's output is added.
        norm_weight: (N,) the next block's RMSNorm weight.
        backend: as :func:`decode_linear`.

    Returns:
        ``(normed, new_residual)``: normed a :class:`NormedRows`, deferred (``row_sumsq``
        given) where the product ran as the Triton kernel with this epilogue or on the
        reference backend, already normed (``row_sumsq`` None) where cuBLAS's product
        runs and the add + norm is its own kernel.

    Raises:
        ValueError: naming the argument whose shape, dtype or device is wrong, or for a
            backend that cannot run here.
    """
    name = _check_inputs(x, weight, bias, backend)
    n = weight.shape[0]
    check_tensor(OP, "residual", residual, (x.shape[0], n), dims="(M, N)", device=x.device)
    check_tensor(OP, "norm_weight", norm_weight, (n,), dims="(N,)", device=x.device)
    check_eps(OP, eps)
    res_dtype = residual_dtype(x.dtype, residual_in_fp32)
    with torch.no_grad():
        if name == "reference":
            scaled, sumsq, new_residual = linear_add_norm_reference(x, weight, bias, residual, norm_weight, res_dtype)
            return NormedRows(scaled, sumsq, float(eps)), new_residual
        from .kernel import default_launch

        if default_launch(x.shape[0], n, x.shape[1]) is None:
            # cuBLAS's product: the add + norm as the rms_norm op's kernel, not deferred.
            normed, new_residual = rms_norm(decode_linear_op(x, weight, bias, None, 1e-5), norm_weight, residual,
                                            eps=eps, residual_in_fp32=residual_in_fp32)
            return NormedRows(normed, None, float(eps)), new_residual
        scaled, sumsq, new_residual = decode_linear_add_norm_op(x, weight, bias, residual, norm_weight,
                                                                bool(residual_in_fp32))
        return NormedRows(scaled, sumsq, float(eps)), new_residual


def _check_inputs(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, backend: str | None) -> str:
    """Checks the product's inputs; returns the backend that runs it."""
    check_tensor(OP, "x", x, (None, None), dims="(M, K)")
    check_sizes(OP, "x", x, ("M", "K"))
    m, k = x.shape
    check_tensor(OP, "weight", weight, (None, k), dims="(N, K)", dtypes=(x.dtype,), device=x.device)
    if weight.shape[0] < 1:
        raise ValueError(f"{OP}: weight must have at least one row (N), got shape {tuple(weight.shape)}")
    if bias is not None:
        check_tensor(OP, "bias", bias, (weight.shape[0],), dims="(N,)", dtypes=(x.dtype,), device=x.device)
    name = resolve_backend(OP, backend, x.device, BACKENDS)
    if name == "triton" and x.dtype not in TRITON_DTYPES:
        raise ValueError(f"{OP}: the Triton kernel takes x in float16, bfloat16 or float32, got {x.dtype}; "
                         f"use backend='reference'")
    return name


def check_row_sumsq(op: str, x: torch.Tensor, row_sumsq: torch.Tensor, eps: float) -> None:
    """Checks a deferred RMSNorm's partial sums of squares (M, P) for x (M, K) and its eps."""
    check_tensor(op, "row_sumsq", row_sumsq, (x.shape[0], None), dims="(M, P)",
                 dtypes=(torch.float32, torch.float64), device=x.device)
    if row_sumsq.shape[1] < 1:
        raise ValueError(f"{op}: row_sumsq must hold at least one partial sum a row, got shape "
                         f"{tuple(row_sumsq.shape)}")
    check_eps(op, eps)



def waits_then_signals(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``decode_linear(x, weight)`` on the default backend runs a kernel that waits
    for the kernel before it and only then lets the kernel after it launch (the Triton
    kernel as a dependent launch): then whatever was written two launches before the
    kernel after it is complete when that kernel starts (see ``early_loads`` of
    ``selective_state_update``). False on CPU and where cuBLAS's product runs."""
    from .kernel import runs_as_dependent_launch

    return resolve_backend(OP, None, x.device, BACKENDS) == "triton" and runs_as_dependent_launch(x, weight)


@torch.library.custom_op("seqmamba::decode_linear", mutates_args=())
def decode_linear_op(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, row_sumsq: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """The Triton kernel (or F.linear where the launch rule says so) as one op."""
    from .kernel import decode_linear_triton

    return decode_linear_triton(x, weight, bias, row_sumsq=row_sumsq, eps=eps)


@decode_linear_op.register_fake
def _(x, weight, bias, row_sumsq=None, eps=1e-5):
    return x.new_empty(x.shape[0], weight.shape[0])


@torch.library.custom_op("seqmamba::decode_linear_add_norm", mutates_args=())
def decode_linear_add_norm_op(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor,
    norm_weight: torch.Tensor, residual_in_fp32: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Triton kernel with the add + deferred norm epilogue, where its launch rule
    picks it: (scaled, sumsq, new_residual)."""
    from .kernel import decode_linear_add_norm_triton

    result = decode_linear_add_norm_triton(x, weight, bias, residual, norm_weight,
                                           residual_dtype(x.dtype, residual_in_fp32))
    assert result is not None, "decode_linear_add_norm_op runs only where the Triton kernel's launch rule picks it"
    return result


@decode_linear_add_norm_op.register_fake
def _(x, weight, bias, residual, norm_weight, residual_in_fp32):
    from .kernel import default_launch

    m, n = x.shape[0], weight.shape[0]
    block_n = default_launch(m, n, x.shape[1])[1]
    return (x.new_empty(m, n), x.new_empty(m, (n + block_n - 1) // block_n, dtype=torch.float32),
            x.new_empty(m, n, dtype=residual_dtype(x.dtype, residual_in_fp32)))
