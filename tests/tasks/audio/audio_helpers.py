"""Tiny audio written with soundfile inside the tests: no synthesiser, no network."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile


def tone(seconds: float, rate: int, *, freq: float, seed: int, channels: int = 1) -> np.ndarray:
    """A decaying sine plus a little noise: (frames,) or (frames, channels) float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * math.pi * freq * t) * np.exp(-2 * t) + 0.05 * rng.standard_normal(len(t))
    if channels == 1:
        return wave.astype(np.float32)
    return np.stack([wave * (0.5 + 0.5 * c) for c in range(channels)], axis=1).astype(np.float32)


def write(path: Path, samples: np.ndarray, rate: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), samples, rate, subtype="PCM_16" if path.suffix == ".wav" else None)
    return path
