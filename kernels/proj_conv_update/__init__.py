"""The decode step's input projection fused with its conv step (see op.py)."""
from .op import proj_conv_update

__all__ = ["proj_conv_update"]
