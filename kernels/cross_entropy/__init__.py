"""Softmax cross-entropy over rows of logits, with its gradient: public op, reference and
(on CUDA) a Triton kernel."""
from .op import softmax_cross_entropy

__all__ = ["softmax_cross_entropy"]
