"""Waveforms <-> class ids: 8-bit mu-law or linear quantization.

A model of raw audio predicts each sample as one of ``2 ** bits`` classes (256 by
default), as WaveNet and SaShiMi do. Two codes:

* ``mulaw``: the companding of ITU-T G.711 (``torchaudio.functional.mu_law_encoding``,
  mu = classes - 1): small amplitudes, where speech spends most of its time, get fine
  steps and loud ones coarse steps. A sample x in [-1, 1] comes back within
  ``((1 + mu) ** (1 / mu) - 1) * (|x| + 1 / mu)`` of itself (about 2.2% of |x| at 8 bits).
* ``linear``: ``classes`` equal steps over [-1, 1]; error at most ``1 / (classes - 1)``.

Samples outside [-1, 1] are clipped first.
"""
from __future__ import annotations

import torch
import torchaudio.functional as AF

QUANTIZATIONS = ("mulaw", "linear")
"""Allowed values of ``task.quantization``."""


def check_quantization(quantization: str, bits: int) -> None:
    """ValueError naming ``task.quantization`` or ``task.bits`` if they cannot work."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"task.quantization: must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 16:
        raise ValueError(f"task.bits: must be an integer in [2, 16] (8 gives 256 classes), got {bits!r}")


def quantize(samples: torch.Tensor, *, quantization: str = "mulaw", bits: int = 8) -> torch.Tensor:
    """samples: (..., L) float in [-1, 1] (clipped) -> class ids (..., L) int64 in [0, 2 ** bits)."""
    check_quantization(quantization, bits)
    if not samples.is_floating_point():
        raise ValueError(f"quantize: samples must be a float tensor in [-1, 1], got dtype {samples.dtype}")
    classes = 1 << bits
    x = samples.float().clamp(-1.0, 1.0)
    if quantization == "mulaw":
        return AF.mu_law_encoding(x, classes)
    return torch.round((x + 1) * ((classes - 1) / 2)).long()


def dequantize(ids: torch.Tensor, *, quantization: str = "mulaw", bits: int = 8) -> torch.Tensor:
    """class ids (..., L) int in [0, 2 ** bits) -> samples (..., L) float32 in [-1, 1]."""
    check_quantization(quantization, bits)
    classes = 1 << bits
    if ids.is_floating_point() or ids.is_complex():
        raise ValueError(f"dequantize: ids must be an integer tensor, got dtype {ids.dtype}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= classes):
        raise ValueError(f"dequantize: ids must lie in [0, {classes}), got values in [{int(ids.min())}, {int(ids.max())}]")
    if quantization == "mulaw":
        return AF.mu_law_decoding(ids.long(), classes).float()
    return ids.float() * (2 / (classes - 1)) - 1


def silence_id(*, quantization: str = "mulaw", bits: int = 8) -> int:
    """The class id of a zero sample: what padding and an unconditional start hold."""
    return int(quantize(torch.zeros(1), quantization=quantization, bits=bits))
