"""A decode step's small products as dependent launches (see op.py)."""
from .op import decode_linear

__all__ = ["decode_linear"]
