"""Fixtures of the audio tests: tiny folders written with soundfile, no synthesiser, no network."""
from __future__ import annotations

from pathlib import Path

import pytest
from audio_helpers import tone, write


@pytest.fixture
def clips(tmp_path) -> Path:
    """SC09-style split folders: two labels, clips of 0.05 s at 11025 Hz (WAV and FLAC,
    one stereo), 4 train clips per label, 1 val and 1 test per label."""
    root = tmp_path / "clips"
    for split, count in (("train", 4), ("val", 1), ("test", 1)):
        for label, freq in (("low", 300.0), ("high", 1500.0)):
            for k in range(count):
                suffix = ".flac" if k % 2 else ".wav"
                channels = 2 if (split, label, k) == ("train", "low", 0) else 1
                write(root / split / label / f"v{k}{suffix}", tone(0.05, 11025, freq=freq, seed=k, channels=channels), 11025)
    return root
