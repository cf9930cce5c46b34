"""The on-disk format of an ingested corpus, and reading it back.

A corpus folder (written by ``seqmamba data text``) holds::

    index.json              what the task reads: tokenizer, dtype, the shards of each split
    tokenizer.json          a copy of the tokenizer file (absent for the byte tokenizer)
    plan.json               the settings and input files, checked when ingestion resumes
    shards/train-00000.bin  token ids, raw little-endian uint16 or uint32, documents
    shards/val-00000.bin    back to back, each followed by the end-of-document token
    shards/00000.json       a shard's counts, written last: the shard is complete

Each split is one token stream: its shards concatenated in order.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .tokenizer import BYTE, Tokenizer, load_tokenizer

FORMAT = 1
SPLITS = ("train", "val")
DTYPES = {"uint16": np.uint16, "uint32": np.uint32}


def shard_dtype(vocab_size: int, requested: str = "auto") -> str:
    """The shard dtype name: ``requested`` (``uint16``/``uint32``) if it holds every id
    of the vocabulary, ``auto``: uint16 when the vocabulary fits, else uint32."""
    if requested == "auto":
        requested = "uint16" if vocab_size <= 1 << 16 else "uint32"
    if requested not in DTYPES:
        raise ValueError(f"--dtype: must be auto, uint16 or uint32, got {requested!r}")
    limit = int(np.iinfo(DTYPES[requested]).max) + 1
    if vocab_size > limit:
        wider = "; use --dtype uint32 or auto" if requested == "uint16" else ""
        raise ValueError(
            f"--dtype {requested}: holds token ids below {limit}, but the tokenizer has {vocab_size} tokens{wider}"
        )
    return requested


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, so that ``path`` is either
    absent or complete, never half-written (an interrupted run leaves no bad shard)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, (json.dumps(value, indent=1) + "\n").encode())


@dataclass(frozen=True)
class ShardFile:
    """One shard of a split: its file (relative to the corpus folder) and counts."""

    file: str
    tokens: int
    documents: int
    bytes: int


class Corpus:
    """An ingested corpus folder: its tokenizer and the token stream of each split."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        index_path = self.root / "index.json"
        if not index_path.is_file():
            raise ValueError(
                f"task.data: {self.root} has no index.json; build it with 'seqmamba data text INPUT... --out {self.root}'"
                + (" (an ingestion into it did not finish: run the same command again to complete it)"
                   if (self.root / "plan.json").is_file() else "")
            )
        index = json.loads(index_path.read_text())
        if index.get("format") != FORMAT:
            raise ValueError(f"task.data: {index_path} has format {index.get('format')}, this version reads {FORMAT}")
        self.index = index
        self.dtype: str = index["dtype"]
        self.vocab_size: int = index["vocab_size"]
        self.eod_id: int = index["eod_id"]
        self.splits = {name: [ShardFile(**s) for s in index["splits"][name]] for name in SPLITS}

    def tokenizer(self) -> Tokenizer:
        """The tokenizer the corpus was made with (a copy kept in the folder)."""
        spec = BYTE if self.index["tokenizer"] == BYTE else self.root / self.index["tokenizer"]
        tokenizer = load_tokenizer(spec, eod_token=self.index["eod_token"])
        if (tokenizer.vocab_size, tokenizer.eod_id) != (self.vocab_size, self.eod_id):
            raise ValueError(
                f"task.data: {spec} has {tokenizer.vocab_size} tokens and end-of-document id {tokenizer.eod_id}, "
                f"but the shards were written with {self.vocab_size} and {self.eod_id}; ingest the corpus again"
            )
        return tokenizer

    def stream(self, split: str) -> TokenStream:
        return TokenStream([self.root / s.file for s in self.splits[split]], [s.tokens for s in self.splits[split]],
                           dtype=self.dtype)

    def count(self, split: str, key: str) -> int:
        """Total ``tokens``, ``documents`` or ``bytes`` (of UTF-8 text) of a split."""
        return sum(getattr(s, key) for s in self.splits[split])


class TokenStream:
    """A split's shards as one sequence of token ids, read through memory maps.

    The maps are opened on first use in each process, so a stream can be handed to
    DataLoader workers (pickling it copies only file names).
    """

    def __init__(self, files: list[Path], lengths: list[int], *, dtype: str) -> None:
        self.files = files
        self.lengths = lengths
        self.dtype = DTYPES[dtype]
        self.starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        self._maps: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": None}

    def _open(self) -> list[np.ndarray]:
        if self._maps is None:
            maps = []
            for path, length in zip(self.files, self.lengths):
                array = np.memmap(path, dtype=self.dtype, mode="r")
                if len(array) != length:
                    raise ValueError(f"{path}: holds {len(array)} tokens, the corpus index says {length}; ingest again")
                maps.append(array)
            self._maps = maps
        return self._maps

    def read(self, start: int, count: int) -> np.ndarray:
        """Ids ``[start, start + count)`` of the stream, (count,) int64; may span shards."""
        assert 0 <= start and start + count <= len(self), (start, count, len(self))
        maps = self._open()
        out = np.empty(count, dtype=np.int64)
        shard = int(np.searchsorted(self.starts, start, side="right")) - 1
        done = 0
        while done < count:
            offset = start + done - int(self.starts[shard])
            take = min(count - done, self.lengths[shard] - offset)
            out[done:done + take] = maps[shard][offset:offset + take]
            done += take
            shard += 1
        return out
