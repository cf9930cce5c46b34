"""The decode step's input projection fused with its conv step, and optionally with the
residual add and RMSNorm before it (see op.py)."""
from .op import norm_proj_conv_update, proj_conv_update

__all__ = ["norm_proj_conv_update", "proj_conv_update"]
