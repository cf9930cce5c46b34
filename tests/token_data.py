"""Random token data for the training tests."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset


class IndexedSequences(Dataset):
    """Random token sequences of ids in [0, vocab); item i is a function of (seed, i) and
    carries i. Labels are the next ids."""

    def __init__(self, size: int, *, seq_len: int, vocab: int, seed: int) -> None:
        self.size, self.seq_len, self.vocab, self.seed = size, seq_len, vocab, seed

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + i)
        tokens = torch.randint(0, self.vocab, (self.seq_len + 1,), generator=generator)
        return {"index": torch.tensor(i), "input_ids": tokens[:-1], "labels": tokens[1:]}
