"""``seqmamba data spoken-digits OUT``: an SC09-like data set synthesised offline.

SC09 (the digits of the Speech Commands corpus) is the standard unconditional
speech-generation benchmark: 1 s clips of "zero" .. "nine" at 16 kHz from thousands
of speakers. This builds a stand-in with Debian's ``espeak-ng`` and no download: a
*voice* is one of espeak-ng's voice variants (its timbre: age, sex, roughness, breath,
synthesiser); every voice says every digit ``takes`` times, each take with an English
accent, a speaking rate and a pitch drawn at random. A take is trimmed of silence,
resampled, placed at a random offset in a clip of ``seconds`` and scaled to a random
peak level.

Splits are by voice: the test (and val) voices are never heard in training, so the
test measures generalisation to unheard voices. Layout, the SC09 one with split folders::

    OUT/train/<digit>/<voice>-<accent>-<take>.flac     (16-bit FLAC, mono)
    OUT/val/<digit>/...   OUT/test/<digit>/...
    OUT/manifest.json                                  (voices per split, settings, counts)
"""
from __future__ import annotations

import io
import json
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio.functional as AF

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
"""espeak-ng's English voices (accents); a clip's voice is ``<accent>+<variant>``."""

SPEEDS = (120, 210)  # words per minute (espeak-ng -s); the default is 175
PITCHES = (20, 80)  # espeak-ng -p, 0 .. 99; the default is 50
PEAKS = (0.3, 0.9)  # peak amplitude of a clip
_QUIET = 0.02  # leading and trailing samples below this share of the peak are silence


def espeak_program() -> str:
    """The espeak-ng executable; ValueError saying how to install it if missing."""
    program = shutil.which("espeak-ng")
    if program is None:
        raise ValueError("espeak-ng is not installed; install it with: apt-get update && apt-get install -y espeak-ng")
    return program


def espeak_variants(program: str) -> list[str]:
    """The voice variants espeak-ng has (``espeak-ng --voices=variant``), sorted."""
    listing = subprocess.run([program, "--voices=variant"], capture_output=True, text=True, check=True).stdout
    names = {line.split()[4].removeprefix("!v/") for line in listing.splitlines()[1:] if len(line.split()) >= 5}
    return sorted(names, key=str.lower)


def synthesize(program: str, word: str, *, voice: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
    """One utterance: (samples (n,) float32 mono, sample rate)."""
    wav = subprocess.run([program, "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word],
                         capture_output=True, check=True).stdout
    samples, rate = soundfile.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    return samples.mean(axis=1), rate


def place_in_clip(samples: np.ndarray, rate: int, *, sample_rate: int, length: int, rng: random.Random) -> torch.Tensor | None:
    """Trim the silence around an utterance, resample it to ``sample_rate``, scale it to
    a random peak and put it at a random offset in ``length`` samples of silence
    (cut to ``length`` if longer). None if the utterance is silent."""
    audio = torch.from_numpy(samples)
    peak = float(audio.abs().max()) if len(audio) else 0.0
    if peak == 0:
        return None
    loud = (audio.abs() >= _QUIET * peak).nonzero().squeeze(1)
    audio = audio[int(loud[0]) : int(loud[-1]) + 1]
    if rate != sample_rate:
        audio = AF.resample(audio, rate, sample_rate)
    audio = audio[:length] * (rng.uniform(*PEAKS) / float(audio.abs().max()))
    clip = torch.zeros(length)
    offset = rng.randint(0, length - len(audio))
    clip[offset : offset + len(audio)] = audio
    return clip


def split_voices(voices: list[str], *, val: int, test: int, seed: int) -> dict[str, list[str]]:
    """Voices per split: ``test`` and ``val`` voices drawn at random, the rest train."""
    if val < 1 or test < 1 or val + test >= len(voices):
        raise ValueError(f"--val-voices ({val}) and --test-voices ({test}) must be >= 1 and leave training voices "
                         f"out of {len(voices)}")
    order = sorted(voices)
    random.Random(seed).shuffle(order)
    return {"train": sorted(order[val + test:]), "val": sorted(order[test : val + test]), "test": sorted(order[:test])}


def build_spoken_digits(
    out: str | Path,
    *,
    voices: int | None = None,
    takes: int = 2,
    val_voices: int = 8,
    test_voices: int = 8,
    sample_rate: int = 16000,
    seconds: float = 1.0,
    seed: int = 0,
) -> dict:
    """Write the data set (see the module docstring) and return its manifest.

    ``voices``: how many of espeak-ng's variants to use (drawn at random; None: all).
    """
    program = espeak_program()
    if takes < 1 or sample_rate < 1000 or not 0.2 <= seconds <= 10:
        raise ValueError(f"--takes must be >= 1, --sample-rate >= 1000 and --seconds in [0.2, 10]; got {takes}, "
                         f"{sample_rate}, {seconds}")
    available = espeak_variants(program)
    if voices is not None:
        if not 3 <= voices <= len(available):
            raise ValueError(f"--voices: must be in [3, {len(available)}] (espeak-ng has {len(available)} variants), got {voices}")
        available = sorted(random.Random(seed).sample(available, voices))
    splits = split_voices(available, val=val_voices, test=test_voices, seed=seed)
    out = Path(out)
    length = round(seconds * sample_rate)
    counts = {split: 0 for split in splits}
    silent = []
    for split, names in splits.items():
        for variant in names:
            for digit in DIGITS:
                for take in range(takes):
                    rng = random.Random(f"{seed}:{variant}:{digit}:{take}")
                    accent = rng.choice(ACCENTS)
                    samples, rate = synthesize(program, digit, voice=f"{accent}+{variant}", speed=rng.randint(*SPEEDS),
                                               pitch=rng.randint(*PITCHES))
                    clip = place_in_clip(samples, rate, sample_rate=sample_rate, length=length, rng=rng)
                    if clip is None:
                        silent.append(f"{variant}/{digit}/{take}")
                        continue
                    path = out / split / digit / f"{variant}-{accent}-{take}.flac"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    soundfile.write(str(path), clip.numpy(), sample_rate, subtype="PCM_16")
                    counts[split] += 1
    manifest = {
        "sample_rate": sample_rate,
        "seconds": seconds,
        "takes": takes,
        "seed": seed,
        "digits": list(DIGITS),
        "accents": list(ACCENTS),
        "voices": splits,
        "clips": counts,
        "silent_takes_skipped": silent,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
