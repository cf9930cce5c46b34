"""Audio files and data sets: reads (partial, mono, resampled), clip and crop examples,
short files, and clear errors for bad folders and files."""
from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile
import torch

from seqmamba.tasks import IGNORE_INDEX, get_task
from seqmamba.tasks.audio.codec import quantize
from seqmamba.tasks.audio.data import AudioData, AudioDataConfig
from seqmamba.tasks.audio.files import audio_info, read_audio

from audio_helpers import tone, write


def pretrain(data, **fields):
    cls = get_task("audio_pretrain")
    return cls(cls.config_class(data=str(data), **fields))


def test_clips_have_the_configured_length_and_rate(clips):
    task = pretrain(clips, sample_rate=8000, seq_len=301)
    splits = task.datasets()
    assert {k: len(v) for k, v in splits.items()} == {"train": 8, "val": 2, "test": 2}
    silence = quantize(torch.zeros(1))
    for split in splits.values():
        for i in range(len(split)):
            item = split[i]
            assert item["input_ids"].shape == item["labels"].shape == (301,)
            assert item["input_ids"][0] == silence  # the start token
            assert torch.equal(item["input_ids"][1:], item["labels"][:-1])
    # Each item is the file's first seq_len samples, resampled to 8000 Hz.
    path = sorted((clips / "train" / "high").iterdir())[0]
    expected = quantize(read_audio(path, sample_rate=8000)[:301])
    assert torch.equal(splits["train"][0]["labels"], expected)
    assert audio_info(path).frames_at(8000) == len(read_audio(path, sample_rate=8000)) == math.ceil(551 * 8000 / 11025)


def test_reads_resample_mix_down_and_read_parts(tmp_path):
    rate, freq = 22050, 440.0
    left = tone(0.5, rate, freq=freq, seed=3)
    stereo = np.stack([left, 0.25 * left], axis=1)
    path = write(tmp_path / "s.flac", stereo, rate)
    same_rate = read_audio(path, sample_rate=rate)
    assert torch.allclose(same_rate, torch.from_numpy(0.625 * left), atol=2e-4)  # the channels' mean, 16-bit
    whole = read_audio(path, sample_rate=8000)
    assert len(whole) == math.ceil(len(left) * 8000 / rate)
    # A partial read (start, length) gives the same samples as a whole-file read, at
    # either end of the file too, down- or upsampling.
    for start, length in ((1001, 523), (0, 50), (len(whole) - 97, 97), (5, 7)):
        part = read_audio(path, sample_rate=8000, start=start, length=length)
        assert part.shape == (length,)
        assert torch.allclose(part, whole[start:start + length], atol=1e-5)
    up = read_audio(path, sample_rate=48000)
    assert torch.allclose(read_audio(path, sample_rate=48000, start=7001, length=301), up[7001:7302], atol=1e-5)


def test_short_clips_pad_or_skip_and_say_so(clips, capsys):
    padded = pretrain(clips, sample_rate=8000, seq_len=433, short="pad")  # the clips hold 400 samples
    err = capsys.readouterr().err
    assert "8 of 8 train files are shorter than task.seq_len=433 samples at 8000 Hz" in err
    assert "padded with silence, which is not scored (task.short=pad)" in err
    labels = padded.datasets()["train"][0]["labels"]
    assert labels.shape == (433,)
    assert bool((labels[400:] == IGNORE_INDEX).all()) and bool((labels[:400] != IGNORE_INDEX).all())

    write(clips / "train" / "low" / "long.wav", tone(0.1, 11025, freq=300.0, seed=9), 11025)
    write(clips / "val" / "high" / "long.flac", tone(0.1, 11025, freq=1500.0, seed=8), 11025)
    skipped = pretrain(clips, sample_rate=8000, seq_len=433, short="skip")
    assert "8 of 9 train files are shorter" in capsys.readouterr().err
    assert {k: len(v) for k, v in skipped.datasets().items()} == {"train": 1, "val": 1}
    assert bool((skipped.datasets()["train"][0]["labels"] != IGNORE_INDEX).all())

    with pytest.raises(ValueError, match="set task.short=pad .* or task.short=skip"):
        pretrain(clips, sample_rate=8000, seq_len=433, short="error")


def test_folders_without_splits_hold_out_files_by_hash(tmp_path):
    for k in range(12):
        write(tmp_path / "flat" / f"part{k // 6}" / f"f{k}.wav", tone(0.05, 8000, freq=200.0 + 50 * k, seed=k), 8000)
    first = AudioData(AudioDataConfig(data=str(tmp_path / "flat"), sample_rate=8000, seq_len=300, val_fraction=0.3))
    again = AudioData(AudioDataConfig(data=str(tmp_path / "flat"), sample_rate=8000, seq_len=300, val_fraction=0.3))
    other = AudioData(AudioDataConfig(data=str(tmp_path / "flat"), sample_rate=8000, seq_len=300, val_fraction=0.3,
                                      data_seed=1))
    val = [f.info.path.name for f in first.splits["val"]]
    assert 0 < len(val) < 12 and len(first.splits["train"]) == 12 - len(val)
    assert val == [f.info.path.name for f in again.splits["val"]]
    assert val != [f.info.path.name for f in other.splits["val"]]
    assert first.classes == ["part0", "part1"] and first.split_names() == ["train", "val"]


def test_crops_of_long_recordings(tmp_path):
    for split, seconds in (("train", 0.61), ("val", 0.45)):
        write(tmp_path / "long" / split / "rec.flac", tone(seconds, 8000, freq=330.0, seed=1), 8000)
    task = pretrain(tmp_path / "long", sample_rate=8000, seq_len=97, mode="crop")
    train, val = task.datasets()["train"], task.datasets()["val"]
    assert len(train) == 4880 // 97 and len(val) == 3600 // 97
    whole = quantize(read_audio(tmp_path / "long" / "val" / "rec.flac", sample_rate=8000))
    for k in (0, 5):  # validation: consecutive windows
        assert torch.equal(val[k]["labels"], whole[k * 97:(k + 1) * 97])
    # Training: a random crop per index, the same on every read, different across indices.
    train_whole = quantize(read_audio(tmp_path / "long" / "train" / "rec.flac", sample_rate=8000))
    starts = []
    for index in range(len(train)):
        labels = train[index]["labels"]
        assert torch.equal(labels, train[index]["labels"])
        matches = [s for s in range(len(train_whole) - 96) if torch.equal(train_whole[s:s + 97], labels)]
        assert matches
        starts.append(matches[0])
    assert len(set(starts)) > len(train) // 2


def test_bad_folders_and_files_are_clear_errors(tmp_path, clips):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no audio files"):
        pretrain(tmp_path / "empty")
    with pytest.raises(ValueError, match="no such folder"):
        pretrain(tmp_path / "missing")
    bad = clips / "train" / "low" / "broken.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(40)))
    with pytest.raises(ValueError, match="broken.wav: not a readable audio file"):
        pretrain(clips, sample_rate=8000, seq_len=301)
    bad.unlink()
    soundfile.write(str(clips / "train" / "low" / "nan.wav"), np.full(600, np.nan, dtype=np.float32), 8000,
                    subtype="FLOAT")
    task = pretrain(clips, sample_rate=8000, seq_len=301)
    with pytest.raises(ValueError, match="nan.wav: holds samples that are not finite"):
        [task.datasets()["train"][i] for i in range(len(task.datasets()["train"]))]
    (clips / "train" / "low" / "nan.wav").unlink()
    soundfile.write(str(clips / "train" / "low" / "none.wav"), np.zeros(0, dtype=np.float32), 8000)
    with pytest.raises(ValueError, match="none.wav: holds no samples"):
        pretrain(clips, sample_rate=8000, seq_len=301)


@pytest.mark.parametrize(
    ("fields", "key"),
    [({"mode": "stream"}, "task.mode"), ({"short": "trim"}, "task.short"), ({"quantization": "alaw"}, "task.quantization"),
     ({"bits": 17}, "task.bits"), ({"seq_len": 0}, "task.seq_len"), ({"val_fraction": 1.0}, "task.val_fraction")],
)
def test_config_values_that_cannot_work_name_their_key(fields, key):
    with pytest.raises(ValueError, match=key):
        AudioDataConfig(data="x", **fields).validate()
