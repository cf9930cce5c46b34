"""Depthwise causal conv1d: public op, reference and (on CUDA) Triton kernels."""
from .op import causal_conv1d
from .update import causal_conv1d_update

__all__ = ["causal_conv1d", "causal_conv1d_update"]
