"""``text_pretrain``: causal language modelling on an ingested corpus.

Every position of a window predicts the next token (across document boundaries).
Besides the loss (nats per token) and accuracy, each step reports bits per byte:

    bits per byte = (total nats over the scored tokens) / (ln 2 * UTF-8 bytes those tokens decode to)

Bits per token depend on the tokenizer (a BPE token holds several bytes, a byte token
one); bits per byte do not, so byte-level and BPE runs compare on it. The end-of-
document token is scored but stands for no byte. During training ``val/bits_per_byte``
is logged beside ``val/loss``; the evaluation scores the validation split (at most
``eval_max_tokens`` of it, in windows spread evenly over it).
"""
# No ``from __future__ import annotations`` here: OmegaConf reads the config's
# annotations at runtime.
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from omegaconf import MISSING
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..base import IGNORE_INDEX, Metric, Report, StepOutput, Task, TaskConfig, language_model_loss
from .shards import Corpus
from .windows import WINDOWS, Windows


@dataclass
class TextPretrainConfig(TaskConfig):
    """Language-model pretraining on a corpus folder written by ``seqmamba data text``.

    Attributes:
        data: the corpus folder (``index.json``, token shards, the tokenizer).
        seq_len: tokens per training window.
        windows: ``random`` (windows start at any token, in a keyed random order) or
            ``sequential`` (consecutive windows in corpus order); see :mod:`.windows`.
        eval_max_tokens: the evaluation scores at most this many validation tokens
            (``null``: all of them).
    """

    name: str = "text_pretrain"
    data: str = MISSING
    seq_len: int = 1024
    windows: str = "random"
    eval_max_tokens: Optional[int] = 1 << 20

    def validate(self) -> None:
        """Raise ValueError naming the first ``task.<key>`` that cannot work."""
        for key in ("batch_size", "eval_batch_size", "seq_len"):
            if getattr(self, key) < 1:
                raise ValueError(f"task.{key}: must be a positive integer, got {getattr(self, key)}")
        if self.num_workers < 0:
            raise ValueError(f"task.num_workers: must be >= 0, got {self.num_workers}")
        if self.windows not in WINDOWS:
            raise ValueError(f"task.windows: must be one of {', '.join(WINDOWS)}, got {self.windows!r}")
        if self.eval_max_tokens is not None and self.eval_max_tokens < self.seq_len:
            raise ValueError(f"task.eval_max_tokens: must be >= task.seq_len ({self.seq_len}) or null, "
                             f"got {self.eval_max_tokens}")


def bits_per_byte(nats: float, num_bytes: int) -> float:
    """Total nats of a text's tokens -> bits per UTF-8 byte of that text."""
    if num_bytes <= 0:
        raise ValueError(f"bits per byte: the scored tokens decode to {num_bytes} bytes; score some text")
    return nats / (math.log(2) * num_bytes)


class TextPretrain(Task):
    """Next-token prediction over windows of an ingested corpus."""

    name = "text_pretrain"
    config_class = TextPretrainConfig
    cfg: TextPretrainConfig

    def __init__(self, cfg: TextPretrainConfig) -> None:
        cfg.validate()
        super().__init__(cfg)
        self.corpus = Corpus(cfg.data)
        self.tokenizer = self.corpus.tokenizer()
        self.token_bytes = torch.from_numpy(self.tokenizer.token_bytes())  # (vocab,) int64
        self._token_bytes_on: dict[torch.device, torch.Tensor] = {}

    @property
    def vocab_size(self) -> int:
        return self.corpus.vocab_size

    def datasets(self) -> dict[str, Dataset]:
        return {
            "train": Windows(self.corpus.stream("train"), length=self.cfg.seq_len, mode=self.cfg.windows),
            "val": Windows(self.corpus.stream("val"), length=self.cfg.seq_len, mode="sequential", split="val"),
        }

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        """batch["input_ids"], batch["labels"]: (batch, L) int64."""
        out = language_model_loss(model, batch["input_ids"], batch["labels"])
        labels = batch["labels"]
        scored = labels != IGNORE_INDEX
        if labels.device not in self._token_bytes_on:  # copied to each device once, not every step
            self._token_bytes_on[labels.device] = self.token_bytes.to(labels.device)
        token_bytes = self._token_bytes_on[labels.device]
        # A product with the mask, not boolean indexing: indexing sizes its result on the
        # host, a device sync in every training step.
        num_bytes = (token_bytes[labels.clamp(min=0)] * scored).sum()
        out.metrics["bits_per_byte"] = Metric(out.metrics["loss"].total / math.log(2), num_bytes)
        return out

    def loss_unit(self) -> tuple[str, float]:
        return "byte", self.corpus.count("val", "bytes") / self.corpus.count("val", "tokens")

    def evaluate(self, model: nn.Module, device: torch.device) -> Report:
        """Bits per byte, bits per token and perplexity (per token) on the validation split."""
        data = self.datasets()["val"]
        if self.cfg.eval_max_tokens is not None and len(data) * self.cfg.seq_len > self.cfg.eval_max_tokens:
            count = self.cfg.eval_max_tokens // self.cfg.seq_len
            data = Subset(data, [i * len(data) // count for i in range(count)])
        nats, tokens, num_bytes = 0.0, 0, 0
        for batch in DataLoader(data, batch_size=self.cfg.eval_batch_size, shuffle=False):
            out = self.step(model, {key: value.to(device) for key, value in batch.items()})
            nats += float(out.metrics["loss"].total)
            tokens += int(out.metrics["loss"].count)
            num_bytes += int(out.metrics["bits_per_byte"].count)
        per_token = nats / tokens
        metrics = {
            "val_bits_per_byte": bits_per_byte(nats, num_bytes),
            "val_bits_per_token": per_token / math.log(2),
            "val_perplexity": math.exp(per_token),
            "val_bytes_per_token": num_bytes / tokens,
            "val_tokens": tokens,
        }
        tokenizer = "byte-level" if self.tokenizer.name == "byte" else "tokenizer.json"
        return Report(
            title=f"Text language model ({tokenizer} tokenizer, vocabulary {self.vocab_size}, windows of "
                  f"{self.cfg.seq_len} tokens, {tokens} validation tokens scored)",
            metrics=metrics,
        )

    # --- generation: a prompt is the start of a new document ---

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """The end-of-document token (so the model starts a new document), then the
        prompt's tokens; (1 + n,) int64. An empty prompt generates from scratch."""
        ids = [self.tokenizer.eod_id, *self.tokenizer.encode(prompt).tolist()]
        return torch.tensor(ids, dtype=torch.long)

    def decode_output(self, ids: torch.Tensor, *, prompt_length: int, output_dir: Path, index: int) -> str:
        """A header line, then the prompt and its continuation as text, up to the first
        end-of-document token the model generated."""
        values = ids.tolist()
        new = values[prompt_length:]
        if self.tokenizer.eod_id in new:
            new = new[: new.index(self.tokenizer.eod_id)]
        return f"--- sample {index} ---\n" + self.tokenizer.decode(values[:prompt_length] + new)
