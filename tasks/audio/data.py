"""Audio data sets: a folder of audio files -> fixed-length examples of class ids.

Layout of ``task.data``: either split folders ``train/``, ``val/`` (or ``valid/``,
``validation/``) and optionally ``test/``, or any tree of files, of which a share
(``task.val_fraction``, chosen by a hash of ``task.data_seed`` and the file's path, so
the same files every run) is held out for validation. A file's label (for
classification) is its folder's path below the split folder, e.g. ``train/seven/x.wav``
is a ``seven`` (the SC09 layout).

Examples (``task.mode``), every one ``task.seq_len`` samples at ``task.sample_rate``:

* ``clip`` (SC09 style): one per file, its first ``seq_len`` samples.
* ``crop`` (YouTubeMix style): long recordings cut into ``n // seq_len`` examples
  each; in training each is a crop at a random place (a hash of ``data_seed`` and the
  example's index, so a resumed run sees the same crops), in validation and test the
  consecutive windows.

A file shorter than ``seq_len`` (``task.short``): ``pad`` it with silence at the end
(padding is never scored), ``skip`` it, or stop with an ``error``. The task says how
many files were padded or skipped.
"""
# No ``from __future__ import annotations`` here: OmegaConf reads the config's
# annotations at runtime.
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import torch
from omegaconf import MISSING
from torch.utils.data import Dataset, Subset

from ..base import TaskConfig
from .codec import check_quantization, quantize
from .files import AudioInfo, audio_info, find_audio_files, read_audio

MODES = ("clip", "crop")
SHORT_POLICIES = ("pad", "skip", "error")
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


@dataclass
class AudioDataConfig(TaskConfig):
    """Fields of every audio task (see the module docstring).

    Attributes:
        data: folder of audio files (split folders or one tree).
        sample_rate: every file is resampled to this rate (Hz).
        seq_len: samples per example.
        mode: ``clip`` or ``crop``.
        short: ``pad``, ``skip`` or ``error`` for files shorter than ``seq_len``.
        quantization: ``mulaw`` or ``linear`` (:mod:`.codec`).
        bits: bits per sample: ``2 ** bits`` classes (8: 256).
        val_fraction: without split folders, the share of files held out for validation.
        data_seed: seeds the held-out files and the training crops.
        eval_max_examples: the final evaluation reads at most this many examples per
            split, spread evenly over it (``null``: all).
    """

    data: str = MISSING
    sample_rate: int = 16000
    seq_len: int = 16000
    mode: str = "clip"
    short: str = "pad"
    quantization: str = "mulaw"
    bits: int = 8
    val_fraction: float = 0.1
    data_seed: int = 0
    eval_max_examples: Optional[int] = 512

    def validate(self) -> None:
        """Raise ValueError naming the first ``task.<key>`` that cannot work."""
        for key in ("batch_size", "eval_batch_size", "seq_len", "sample_rate"):
            if getattr(self, key) < 1:
                raise ValueError(f"task.{key}: must be a positive integer, got {getattr(self, key)}")
        if self.mode not in MODES:
            raise ValueError(f"task.mode: must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.short not in SHORT_POLICIES:
            raise ValueError(f"task.short: must be one of {', '.join(SHORT_POLICIES)}, got {self.short!r}")
        check_quantization(self.quantization, self.bits)
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"task.val_fraction: must be in [0, 1), got {self.val_fraction}")
        if self.num_workers < 0 or self.data_seed < 0:
            raise ValueError("task.num_workers and task.data_seed: must be >= 0")
        if self.eval_max_examples is not None and self.eval_max_examples < 1:
            raise ValueError(f"task.eval_max_examples: must be a positive integer or null, got {self.eval_max_examples}")


@dataclass(frozen=True)
class AudioFile:
    """One file of the data set: its header, split and label ("" without one)."""

    info: AudioInfo
    split: str
    label: str

    def samples(self, sample_rate: int) -> int:
        return self.info.frames_at(sample_rate)


def _hash_fraction(*parts: object) -> float:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def index_files(root: str | Path, *, val_fraction: float, seed: int) -> list[AudioFile]:
    """Every audio file under ``root`` with its split and label; ValueError for a
    missing or empty folder, or a file that is not readable audio."""
    root = Path(root)
    split_roots = {
        split: next((root / name for name in names if (root / name).is_dir()), None)
        for split, names in SPLIT_FOLDERS.items()
    }
    files = []
    if split_roots["train"] is not None:
        for split, folder in split_roots.items():
            for path in find_audio_files(folder) if folder is not None else []:
                files.append((path, split, path.parent.relative_to(folder).as_posix()))
    else:
        for path in find_audio_files(root):
            relative = path.relative_to(root).as_posix()
            split = "val" if _hash_fraction(seed, relative) < val_fraction else "train"
            files.append((path, split, path.parent.relative_to(root).as_posix()))
    indexed = []
    for path, split, label in files:
        info = audio_info(path)
        if info.frames == 0:
            raise ValueError(f"{path}: holds no samples; remove it from {root}")
        indexed.append(AudioFile(info=info, split=split, label="" if label == "." else label))
    return indexed


def keep_long_enough(files: list[AudioFile], *, config: AudioDataConfig, split: str) -> list[AudioFile]:
    """The files of ``split`` that can make examples under ``task.short``; says on
    stderr how many were padded or skipped, ValueError under ``short: error``."""
    chosen = [f for f in files if f.split == split]
    short = [f for f in chosen if f.samples(config.sample_rate) < config.seq_len]
    if not short:
        return chosen
    what = (f"{len(short)} of {len(chosen)} {split} files are shorter than task.seq_len={config.seq_len} samples "
            f"at {config.sample_rate} Hz (e.g. {short[0].info.path}, {short[0].samples(config.sample_rate)} samples)")
    if config.short == "error":
        raise ValueError(f"task.data: {what}; set task.short=pad to pad them with silence or task.short=skip to leave them out")
    action = "padded with silence, which is not scored" if config.short == "pad" else "skipped"
    print(f"note: {what}: {action} (task.short={config.short})", file=sys.stderr)
    return chosen if config.short == "pad" else [f for f in chosen if f not in short]


RANDOM_START = -1
"""Window start meaning "a random crop, drawn from the example's index"."""


class AudioWindows(Dataset):
    """Examples of ``length`` samples: ``{"ids": (length,) int64, "valid": () int64,
    "label": () int64}``; ids past ``valid`` are padding (silence).

    ``windows`` are (file index, start sample) pairs; a start of :data:`RANDOM_START`
    is drawn per item from ``(seed, index)``.
    """

    def __init__(
        self,
        files: list[AudioFile],
        windows: list[tuple[int, int]],
        *,
        config: AudioDataConfig,
        classes: list[str],
    ) -> None:
        self.files = files
        self.windows = windows
        self.config = config
        self.class_ids = {name: i for i, name in enumerate(classes)}

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        cfg = self.config
        file_index, start = self.windows[index]
        audio = self.files[file_index]
        if start == RANDOM_START:
            room = max(0, audio.samples(cfg.sample_rate) - cfg.seq_len)
            start = int(_hash_fraction(cfg.data_seed, "crop", index) * (room + 1))
        samples = read_audio(audio.info.path, sample_rate=cfg.sample_rate, start=start, length=cfg.seq_len, info=audio.info)
        ids = quantize(samples, quantization=cfg.quantization, bits=cfg.bits)
        valid = len(ids)
        if valid < cfg.seq_len:
            pad = quantize(torch.zeros(cfg.seq_len - valid), quantization=cfg.quantization, bits=cfg.bits)
            ids = torch.cat([ids, pad])
        return {
            "ids": ids,
            "valid": torch.tensor(valid),
            "label": torch.tensor(self.class_ids.get(audio.label, -1)),
        }


def windows_of(files: list[AudioFile], *, config: AudioDataConfig, train: bool) -> list[tuple[int, int]]:
    """The (file index, start) of every example of ``files`` (see the module docstring)."""
    if config.mode == "clip":
        return [(i, 0) for i in range(len(files))]
    windows = []
    for i, audio in enumerate(files):
        count = max(1, audio.samples(config.sample_rate) // config.seq_len)
        windows += [(i, RANDOM_START if train else k * config.seq_len) for k in range(count)]
    return windows


class AudioData:
    """The indexed folder of an audio task and its example sets per split."""

    def __init__(self, config: AudioDataConfig) -> None:
        self.config = config
        self.files = index_files(config.data, val_fraction=config.val_fraction, seed=config.data_seed)
        self.classes: List[str] = sorted({f.label for f in self.files})
        self.splits = {split: keep_long_enough(self.files, config=config, split=split) for split in SPLIT_FOLDERS}
        for split in ("train", "val"):
            if not self.splits[split]:
                hint = "add files to its split folder" if split == "train" else "set task.val_fraction > 0 or add a val/ folder"
                raise ValueError(f"task.data: no {split} files with at least one usable example in {config.data} ({hint})")

    def windows(self, split: str) -> AudioWindows:
        files = self.splits[split]
        return AudioWindows(files, windows_of(files, config=self.config, train=split == "train"),
                            config=self.config, classes=self.classes)

    def split_names(self) -> list[str]:
        """train, val, and test when the data set has test files."""
        return [s for s in SPLIT_FOLDERS if self.splits[s]]


def spread(data: Dataset, limit: Optional[int]) -> Dataset:
    """At most ``limit`` items of ``data`` (all if None), evenly spread over it."""
    if limit is None or len(data) <= limit:
        return data
    return Subset(data, [i * len(data) // limit for i in range(limit)])
