"""Reading and writing audio files with ``soundfile`` (libsndfile: WAV, FLAC, OGG, AIFF).

Every read gives mono float32 samples at the rate the task asks for: channels are
averaged (mix-down), then resampled with ``torchaudio.functional.resample`` (a
windowed-sinc filter). Reads can start anywhere and stop early, so a crop of an
hours-long recording reads only its own frames. A file libsndfile cannot open, or one
whose samples are not finite numbers, is a ValueError naming the file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio.functional as AF

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")
"""File name endings read as audio (any case)."""

# Extra output samples read on each side of a partial read, so that the resampling
# filter (6 zero crossings each side, at the lower of the two rates) sees real
# neighbours, not zeros; enough for rates up to 4x apart.
_MARGIN = 32


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says: ``frames`` per channel at ``sample_rate``."""

    path: Path
    frames: int
    sample_rate: int
    channels: int

    def frames_at(self, sample_rate: int) -> int:
        """Length in samples after resampling to ``sample_rate`` (as
        ``torchaudio.functional.resample`` gives it)."""
        return resampled_length(self.frames, self.sample_rate, sample_rate)


def resampled_length(frames: int, from_rate: int, to_rate: int) -> int:
    """Samples that ``frames`` samples at ``from_rate`` become at ``to_rate``."""
    return frames if from_rate == to_rate else math.ceil(frames * to_rate / from_rate)


def audio_info(path: str | Path) -> AudioInfo:
    """The header of one audio file; ValueError if libsndfile cannot open it."""
    path = Path(path)
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        raise ValueError(f"{path}: not a readable audio file ({_reason(exc)})") from None
    return AudioInfo(path=path, frames=int(info.frames), sample_rate=int(info.samplerate), channels=int(info.channels))


def read_audio(
    path: str | Path, *, sample_rate: int, start: int = 0, length: int | None = None, info: AudioInfo | None = None
) -> torch.Tensor:
    """Mono samples of ``path`` at ``sample_rate``: (n,) float32.

    Args:
        start: first sample to read, counted at ``sample_rate``.
        length: samples to return (fewer if the file ends first); None: to the end.
        info: the file's :func:`audio_info`, if already known (saves opening it twice).
    """
    info = info or audio_info(path)
    rate = info.sample_rate
    # Reads start on a frame where the file's and the output's sample grids meet (every
    # rate / gcd frames), so a part comes out on the same grid as a whole-file read.
    common = math.gcd(rate, sample_rate)
    block = max(0, start - (0 if rate == sample_rate else _MARGIN)) // (sample_rate // common)
    begin, begin_out = block * (rate // common), block * (sample_rate // common)
    stop = info.frames
    if length is not None:
        margin = 0 if rate == sample_rate else _MARGIN
        stop = min(info.frames, math.ceil((start + length + margin) * rate / sample_rate))
    if stop <= begin:
        return torch.zeros(0)
    try:
        data, _ = soundfile.read(str(info.path), start=begin, stop=stop, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        raise ValueError(f"{info.path}: cannot read frames {begin}..{stop} ({_reason(exc)})") from None
    if not np.isfinite(data).all():
        raise ValueError(f"{info.path}: holds samples that are not finite numbers (NaN or inf); the file is corrupt")
    samples = torch.from_numpy(data.mean(axis=1))  # mix-down: the average of the channels
    if rate != sample_rate:
        samples = AF.resample(samples, rate, sample_rate)
    samples = samples[start - begin_out:]
    return samples if length is None else samples[:length]


def write_wav(path: str | Path, samples: torch.Tensor, *, sample_rate: int) -> Path:
    """Write mono samples (n,) float in [-1, 1] (clipped) as a 16-bit PCM WAV file."""
    if samples.dim() != 1:
        raise ValueError(f"write_wav: samples must be one channel, shape (n,), got {tuple(samples.shape)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), samples.detach().float().clamp(-1, 1).cpu().numpy(), sample_rate, subtype="PCM_16")
    return path


def find_audio_files(folder: str | Path) -> list[Path]:
    """Every audio file below ``folder`` (any depth), sorted; ValueError if there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder of audio files")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise ValueError(f"{folder}: holds no audio files (looked for {', '.join(AUDIO_SUFFIXES)} at any depth)")
    return files


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
