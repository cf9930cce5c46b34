"""Random token data, a next-token task on it and run configs for the training tests."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch.utils.data import Dataset

from seqmamba.tasks import Report, Task, TaskConfig


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


@dataclass
class TokenTaskConfig(TaskConfig):
    """Sizes of a :class:`TokenTask`'s data; ``data_vocab`` (default: ``vocab``) bounds
    the ids in the data, so a test can put ids there the model cannot take."""

    vocab: int = 11
    seq_len: int = 13
    train_size: int = 24
    val_size: int = 8
    data_vocab: Optional[int] = None


class TokenTask(Task):
    """Next-token prediction on :class:`IndexedSequences` (train seed 1, val seed 2).
    Test tasks subclass it with their ``name``, ``config_class`` and what they record."""

    cfg: TokenTaskConfig

    @property
    def vocab_size(self) -> int:
        return self.cfg.vocab

    def datasets(self) -> dict[str, Dataset]:
        cfg = self.cfg
        vocab = cfg.data_vocab if cfg.data_vocab is not None else cfg.vocab
        return {
            "train": IndexedSequences(cfg.train_size, seq_len=cfg.seq_len, vocab=vocab, seed=1),
            "val": IndexedSequences(cfg.val_size, seq_len=cfg.seq_len, vocab=vocab, seed=2),
        }

    def evaluate(self, model: torch.nn.Module, device: torch.device) -> Report:
        return Report(title=self.name)


def write_config(tmp: Path, name: str, task: str, *, model: str = "{d_model: 8, n_layer: 2, d_state: 4}",
                 batch_size: int = 4, **trainer: object) -> Path:
    """A run's YAML in ``tmp``: the task with ``batch_size``, a CPU trainer on one device
    without progress bar or evaluation, output under ``tmp/runs``; ``trainer`` entries
    add to or replace those (``max_steps``, ``accelerator``, ``precision`` ...)."""
    settings = {"max_steps": 3, "val_every_n_steps": 3, "log_every_n_steps": 100, "accelerator": "cpu",
                "precision": "32-true", "devices": 1, "progress_bar": "false", "evaluate": "false",
                "output_dir": str(tmp / "runs"), **trainer}
    lines = [f"name: {name}", f"model: {model}",
             f"task: {{name: {task}, batch_size: {batch_size}, eval_batch_size: 4}}", "trainer:"]
    lines += [f"  {key}: {value}" for key, value in settings.items()]
    path = tmp / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path
