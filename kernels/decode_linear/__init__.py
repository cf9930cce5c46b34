"""A decode step's small products as dependent launches (see op.py)."""
from .op import decode_linear, waits_then_signals

__all__ = ["decode_linear", "waits_then_signals"]
