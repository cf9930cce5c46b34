"""``rms_norm``: the one entry point model code calls for the fused residual add + RMSNorm."""
from __future__ import annotations

import torch

from ..backend import resolve_backend
from ..checks import check_eps, check_tensor
from .reference import rms_norm_reference

OP = "rms_norm"
BACKENDS = ("triton", "reference")


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    residual: torch.Tensor | None = None,
    eps: float = 1e-5,
    residual_in_fp32: bool = False,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual add then RMSNorm, as in the pre-norm Mamba block (add -> norm -> mixer).

    ``new_residual = x + residual`` (x when residual is None), stored in float32 when
    ``residual_in_fp32`` and in x's dtype otherwise; then
    ``normed = new_residual / sqrt(mean(new_residual^2, -1) + eps) * weight``,
    computed in float32 (float64 for float64 x) from the stored new_residual.

    Args:
        x: (..., hidden) the mixer's output (or the embeddings for the first block).
        weight: (hidden,) the norm's scale.
        residual: (..., hidden) the running residual stream, any float dtype.
        eps: added to the mean square, > 0.
        residual_in_fp32: keep new_residual in float32 whatever x's dtype.
        backend: None (Triton on CUDA, the reference elsewhere), "triton" or "reference".

    Returns:
        ``(normed, new_residual)``, both of x's shape; normed in x's dtype. Gradients
        reach x, weight and residual from both outputs (the next block adds onto
        new_residual).

    Raises:
        ValueError: naming the argument whose shape, dtype, device or value is wrong,
            or for a backend that cannot run here.
    """
    _check_inputs(x, weight, residual, eps)
    name = resolve_backend(OP, backend, x.device, BACKENDS)
    if name == "triton":
        from .autograd import rms_norm_fwd

        return rms_norm_fwd(x, weight, residual, float(eps), residual_in_fp32)
    return rms_norm_reference(x, weight, residual, eps=eps, residual_in_fp32=residual_in_fp32)


def _check_inputs(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None, eps: float) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{OP}: x must be a tensor of shape (..., hidden), got {got}")
    check_tensor(OP, "x", x, tuple(x.shape), dims="(..., hidden)")
    if x.numel() == 0:
        raise ValueError(f"{OP}: x must not be empty, got shape {tuple(x.shape)}")
    hidden = x.shape[-1]
    check_tensor(OP, "weight", weight, (hidden,), dims="(hidden,)", device=x.device)
    if residual is not None:
        check_tensor(OP, "residual", residual, tuple(x.shape), dims="x's shape (..., hidden)", device=x.device)
    check_eps(OP, eps)
