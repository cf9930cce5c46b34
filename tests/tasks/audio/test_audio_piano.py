"""``seqmamba data piano``: the MIDI written by code, and a tiny render when fluidsynth
and a General MIDI soundfont are installed (skipped otherwise)."""
from __future__ import annotations

import json
import random
import shutil

import pytest
import soundfile

from seqmamba.cli import main
from seqmamba.tasks.audio.piano import DEFAULT_SOUNDFONT, TICKS_PER_BEAT, Note, compose, midi_bytes


def read_note_ons(data: bytes) -> list[tuple[int, int, int]]:
    """(absolute tick, pitch, velocity) of every note-on in a format-0 file, parsed here
    independently of the writer."""
    assert data[:4] == b"MThd" and int.from_bytes(data[8:10], "big") == 0
    assert int.from_bytes(data[12:14], "big") == TICKS_PER_BEAT and data[14:18] == b"MTrk"
    track, pos, tick, ons = data[22:22 + int.from_bytes(data[18:22], "big")], 0, 0, []
    while pos < len(track):
        delta = 0
        while True:
            byte = track[pos]
            pos += 1
            delta = (delta << 7) | (byte & 0x7F)
            if byte < 0x80:
                break
        tick += delta
        status = track[pos]
        if status == 0xFF:
            pos += 3 + track[pos + 2]
        elif status >> 4 == 0xC:
            pos += 2
        else:
            if status >> 4 == 0x9:
                ons.append((tick, track[pos + 1], track[pos + 2]))
            pos += 3
    return ons


def test_midi_holds_the_notes_in_time_order():
    notes = [Note(60, 0, 480, 90), Note(64, 240, 200_000, 70), Note(67, 240, 10, 127), Note(48, 1000, 5, 1)]
    ons = read_note_ons(midi_bytes(notes, beats_per_minute=97.0))
    assert ons == sorted((n.start, n.pitch, n.velocity) for n in notes)
    composed, bpm = compose(random.Random(3), seconds=12.0)
    assert 72 <= bpm <= 132 and len(read_note_ons(midi_bytes(composed, beats_per_minute=bpm))) == len(composed)
    last = max(n.start + n.length for n in composed) / TICKS_PER_BEAT * 60 / bpm
    assert 6.0 < last < 18.0  # about the asked length, in whole bars
    with pytest.raises(ValueError, match="not a playable MIDI note"):
        midi_bytes([Note(128, 0, 10, 64)], beats_per_minute=100.0)


@pytest.mark.skipif(shutil.which("fluidsynth") is None or not DEFAULT_SOUNDFONT.is_file(),
                    reason="fluidsynth and fluid-soundfont-gm are not installed")
def test_renders_split_pieces(tmp_path, capsys):
    out = tmp_path / "piano"
    argv = ["data", "piano", str(out), "--pieces", "3", "--seconds", "2", "--val-pieces", "1", "--test-pieces", "1",
            "--sample-rate", "8000"]
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    for split in ("train", "val", "test"):
        (flac,) = sorted((out / split).glob("*.flac"))
        data, rate = soundfile.read(str(flac))
        assert rate == 8000 and data.ndim == 1 and 1.5 * 8000 < len(data) < 6 * 8000
        assert abs(abs(data).max() - 0.8) < 0.01
        assert manifest["seconds_per_split"][split] == pytest.approx(len(data) / 8000, abs=0.1)
    assert "train: " in capsys.readouterr().out
    assert main(["data", "piano", str(tmp_path / "x"), "--pieces", "2"]) == 2
    assert "must exceed" in capsys.readouterr().err
