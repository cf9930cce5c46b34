"""A decode step's small products as dependent launches (see op.py)."""
from .op import NormedRows, decode_linear, decode_linear_add_norm, waits_then_signals

__all__ = ["NormedRows", "decode_linear", "decode_linear_add_norm", "waits_then_signals"]
