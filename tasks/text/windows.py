"""Training and validation items: windows of a token stream, across document
boundaries (the end-of-document token between documents is an ordinary target).

Item ``i`` of :class:`Windows` is a function of ``i`` alone, so which windows a run
reads is decided by the generic training stream (:mod:`seqmamba.train.data`): by the
trainer's seed and the position in the run, and a resumed run continues with the
window the uninterrupted run would have read next.

* ``sequential``: consecutive windows ``[i * L, (i + 1) * L]``, read in corpus order;
  every token is read once per pass. For corpora shuffled before ingestion.
* ``random``: a window may start at any token; the starts are visited in a
  pseudo-random order (a keyed permutation of every start, new each pass).
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from .shards import TokenStream

WINDOWS = ("random", "sequential")


class Windows(Dataset):
    """Next-token items ``{"input_ids": (L,), "labels": (L,)}`` int64 of a stream:
    a window of L + 1 tokens, the labels the inputs shifted by one."""

    def __init__(self, stream: TokenStream, *, length: int, mode: str, split: str = "train") -> None:
        assert mode in WINDOWS, mode
        if len(stream) < length + 1:
            raise ValueError(
                f"task.seq_len: the {split} split holds {len(stream)} tokens, fewer than seq_len + 1 = {length + 1}; "
                "lower task.seq_len or ingest more text"
            )
        self.stream = stream
        self.length = length
        self.mode = mode
        # Read by the training stream: sequential windows go in index (corpus) order.
        self.in_order = mode == "sequential"

    def __len__(self) -> int:
        if self.mode == "sequential":
            return (len(self.stream) - 1) // self.length
        return len(self.stream) - self.length

    def start(self, index: int) -> int:
        """First token of window ``index``."""
        return index * self.length if self.mode == "sequential" else index

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        window = torch.from_numpy(self.stream.read(self.start(index), self.length + 1))
        return {"input_ids": window[:-1], "labels": window[1:]}
