"""Integer helpers for launch sizes, in plain Python.

Triton's own ``triton.cdiv`` and ``triton.next_power_of_2`` are constexpr functions: called
from host code, each call unwraps its arguments through Triton's machinery, several
microseconds apiece, and a training step's kernel wrappers call them hundreds of times.
"""
from __future__ import annotations


def cdiv(a: int, b: int) -> int:
    """Ceiling of a / b for integers, b > 0."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n for n >= 1 (0 for n <= 0, as Triton's)."""
    return 0 if n <= 0 else 1 << (n - 1).bit_length()


def smallest_block_m(rows: int) -> int:
    """The fewest rows a tl.dot tile takes (16) covering ``rows``, up to 64."""
    return min(64, max(16, next_power_of_2(rows)))
