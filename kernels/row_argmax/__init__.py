"""Each row's argmax, split over many programs a row (see op.py)."""
from .op import row_argmax

__all__ = ["row_argmax"]
