"""``seqmamba data spoken-digits``: the voice split, and a tiny build when espeak-ng is
installed (skipped otherwise)."""
from __future__ import annotations

import json
import shutil

import pytest
import soundfile

from seqmamba.cli import main
from seqmamba.tasks.audio.spoken_digits import DIGITS, split_voices

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (apt-get install espeak-ng)")


def test_voice_split_is_disjoint_and_seeded():
    voices = [f"v{i}" for i in range(11)]
    split = split_voices(voices, val=2, test=3, seed=4)
    assert sorted(sum(split.values(), [])) == sorted(voices)
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (6, 2, 3)
    assert split == split_voices(list(reversed(voices)), val=2, test=3, seed=4)
    assert split != split_voices(voices, val=2, test=3, seed=5)
    with pytest.raises(ValueError, match="leave training voices"):
        split_voices(voices[:4], val=2, test=2, seed=0)


@needs_espeak
def test_builds_sc09_layout_with_unheard_test_voices(tmp_path, capsys):
    out = tmp_path / "digits"
    argv = ["data", "spoken-digits", str(out), "--voices", "3", "--takes", "1", "--val-voices", "1",
            "--test-voices", "1", "--sample-rate", "8000", "--seconds", "0.75"]
    assert main(argv) == 0
    assert "test voices (never heard in training)" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    voices = manifest["voices"]
    assert not set(voices["test"]) & set(voices["train"]) and len(voices["train"]) == 1
    for split in ("train", "val", "test"):
        files = sorted((out / split).rglob("*.flac"))
        assert len(files) == manifest["clips"][split] == 10
        assert {f.parent.name for f in files} == set(DIGITS)
        assert all(f.name.startswith(tuple(voices[split])) for f in files)
    data, rate = soundfile.read(str(files[0]))
    assert rate == 8000 and data.shape == (6000,) and 0.25 < abs(data).max() <= 0.9


@needs_espeak
def test_bad_options_are_one_line_errors(tmp_path, capsys):
    assert main(["data", "spoken-digits", str(tmp_path / "x"), "--voices", "1000"]) == 2
    assert "--voices: must be in [3," in capsys.readouterr().err
