"""seqmamba.kernels: the ops the backbone runs on.

Each op has one public function here. It checks its inputs, then runs on the backend
chosen by :mod:`seqmamba.kernels.backend` (Triton on CUDA, the plain-PyTorch reference
elsewhere, or the one a caller names).
"""
from .backend import use_backend
from .causal_conv1d import causal_conv1d, causal_conv1d_update
from .cross_entropy import softmax_cross_entropy
from .decode_linear import decode_linear, decode_linear_add_norm
from .proj_conv_update import proj_conv_update
from .rmsnorm import rms_norm
from .row_argmax import row_argmax
from .selective_scan import selective_scan
from .selective_state_update import selective_state_update

__all__ = [
    "causal_conv1d",
    "causal_conv1d_update",
    "decode_linear",
    "decode_linear_add_norm",
    "proj_conv_update",
    "rms_norm",
    "row_argmax",
    "selective_scan",
    "selective_state_update",
    "softmax_cross_entropy",
    "use_backend",
]
