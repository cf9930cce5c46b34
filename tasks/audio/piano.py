"""``seqmamba data piano OUT``: long piano recordings for long-context experiments.

YouTubeMix, the Mamba paper's long-context audio set, is hours of solo piano. This
builds an offline stand-in: pieces composed by code (a chord progression in a random
key and tempo, in 4/4: left-hand chords or arpeggios, a right-hand melody that
walks the scale with rests and dynamics), written as standard MIDI files and rendered by
Debian's ``fluidsynth`` with a General MIDI soundfont (``fluid-soundfont-gm``: its
acoustic grand piano), each piece scaled to a peak of 0.8. Pieces go to ``OUT/{train,val,test}/piece_NNN.flac`` (16-bit,
mono, ``sample_rate``) with their MIDI beside them; read them with ``task.mode: crop``.
"""
from __future__ import annotations

import json
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import soundfile

from .files import read_audio

DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
TICKS_PER_BEAT = 480
_PEAK = 0.8
_MAJOR, _MINOR = (0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10)
_PROGRESSIONS = ((0, 3, 4, 0), (0, 5, 3, 4), (0, 4, 5, 3), (5, 3, 0, 4), (0, 3, 0, 4))  # scale degrees of chord roots


@dataclass(frozen=True)
class Note:
    """One note: MIDI ``pitch`` 0..127 from ``start`` for ``length`` ticks, at ``velocity`` 1..127."""

    pitch: int
    start: int
    length: int
    velocity: int


def _vlq(value: int) -> bytes:
    """MIDI's variable-length quantity: 7 bits a byte, high bit set on all but the last."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def midi_bytes(notes: list[Note], *, beats_per_minute: float, program: int = 0) -> bytes:
    """A format-0 standard MIDI file playing ``notes`` on channel 0 with ``program``
    (0: acoustic grand piano)."""
    events = []  # (tick, order, message): note-offs sort before note-ons at the same tick
    for note in notes:
        if not (0 <= note.pitch < 128 and 1 <= note.velocity < 128 and note.length > 0 and note.start >= 0):
            raise ValueError(f"not a playable MIDI note: {note}")
        events.append((note.start, 1, bytes([0x90, note.pitch, note.velocity])))
        events.append((note.start + note.length, 0, bytes([0x80, note.pitch, 0])))
    tempo = round(60_000_000 / beats_per_minute).to_bytes(3, "big")
    track = b"\x00\xff\x51\x03" + tempo + b"\x00" + bytes([0xC0, program])
    now = 0
    for tick, _, message in sorted(events):
        track += _vlq(tick - now) + message
        now = tick
    track += b"\x00\xff\x2f\x00"
    header = b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big")
    return header + TICKS_PER_BEAT.to_bytes(2, "big") + b"MTrk" + len(track).to_bytes(4, "big") + track


def compose(rng: random.Random, *, seconds: float) -> tuple[list[Note], float]:
    """A piece of about ``seconds``: (notes, beats per minute)."""
    bpm = rng.uniform(72, 132)
    tonic = rng.randint(48, 59)
    scale = _MAJOR if rng.random() < 0.6 else _MINOR
    progression = rng.choice(_PROGRESSIONS)
    arpeggio = rng.random() < 0.5
    beat = TICKS_PER_BEAT
    bars = max(1, round(seconds * bpm / 60 / 4))
    notes: list[Note] = []
    degree = rng.randint(7, 11)  # the melody's position, in scale steps above the tonic

    def pitch(step: int, octave_base: int) -> int:
        return octave_base + 12 * (step // 7) + scale[step % 7]

    for bar in range(bars):
        root = progression[bar % 4]
        loud = rng.randint(55, 95)
        start = bar * 4 * beat
        chord = [pitch(root + k, tonic - 12) for k in (0, 2, 4)]
        if arpeggio:
            for i in range(8):
                notes.append(Note(chord[(0, 1, 2, 1)[i % 4]] + (12 if i % 4 == 2 else 0), start + i * beat // 2,
                                  beat // 2, max(1, loud - 20)))
        else:
            for b in range(0, 4, 2):
                notes += [Note(p, start + b * beat, 2 * beat - 10, max(1, loud - 15)) for p in chord]
        tick = start
        while tick < start + 4 * beat:
            length = rng.choice((beat // 2, beat // 2, beat, beat, 2 * beat))
            length = min(length, start + 4 * beat - tick)
            if rng.random() > 0.12:  # else a rest
                notes.append(Note(pitch(degree, tonic), tick, length, min(127, loud + rng.randint(-8, 12))))
            degree = min(16, max(4, degree + rng.choice((-2, -1, -1, 0, 1, 1, 2))))
            tick += length
    return notes, bpm


def render(midi: Path, out: Path, *, soundfont: Path, sample_rate: int) -> None:
    """Render a MIDI file to a WAV file with fluidsynth (no audio device: -ni -F)."""
    program = shutil.which("fluidsynth")
    if program is None:
        raise ValueError("fluidsynth is not installed; install it with: apt-get update && apt-get install -y "
                         "fluidsynth fluid-soundfont-gm")
    subprocess.run([program, "-ni", "-q", "-g", "0.5", "-r", str(sample_rate), "-F", str(out), "-T", "wav",
                    "-O", "s16", str(soundfont), str(midi)], check=True, capture_output=True)


def build_piano(
    out: str | Path,
    *,
    pieces: int = 24,
    seconds: float = 60.0,
    val_pieces: int = 2,
    test_pieces: int = 2,
    sample_rate: int = 16000,
    seed: int = 0,
    soundfont: str | Path = DEFAULT_SOUNDFONT,
) -> dict:
    """Compose, render and write the pieces (see the module docstring); returns the manifest."""
    soundfont = Path(soundfont)
    if not soundfont.is_file():
        raise ValueError(f"--soundfont: no soundfont at {soundfont}; install one with: apt-get install -y fluid-soundfont-gm")
    if val_pieces < 1 or test_pieces < 1 or val_pieces + test_pieces >= pieces or not 1 <= seconds <= 3600:
        raise ValueError(f"--pieces ({pieces}) must exceed --val-pieces ({val_pieces}) + --test-pieces ({test_pieces}), "
                         f"both >= 1, and --seconds must be in [1, 3600] (got {seconds})")
    out = Path(out)
    splits = ["test"] * test_pieces + ["val"] * val_pieces + ["train"] * (pieces - val_pieces - test_pieces)
    totals = {"train": 0.0, "val": 0.0, "test": 0.0}
    with tempfile.TemporaryDirectory() as scratch:
        for index, split in enumerate(splits):
            notes, bpm = compose(random.Random(f"{seed}:{index}"), seconds=seconds)
            folder = out / split
            folder.mkdir(parents=True, exist_ok=True)
            midi = folder / f"piece_{index:03d}.mid"
            midi.write_bytes(midi_bytes(notes, beats_per_minute=bpm))
            wav = Path(scratch) / "piece.wav"
            render(midi, wav, soundfont=soundfont, sample_rate=sample_rate)
            samples = read_audio(wav, sample_rate=sample_rate)  # fluidsynth writes stereo: mixed down here
            samples = samples * (_PEAK / max(float(samples.abs().max()), 1e-9))
            soundfile.write(str(folder / f"piece_{index:03d}.flac"), samples.numpy(), sample_rate, subtype="PCM_16")
            totals[split] += len(samples) / sample_rate
    manifest = {"sample_rate": sample_rate, "seed": seed, "soundfont": str(soundfont), "pieces": pieces,
                "seconds_per_split": {k: round(v, 1) for k, v in totals.items()}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
