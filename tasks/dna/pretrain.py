"""``dna_pretrain``: self-supervised pretraining on genome windows.

Objective, set by the backbone:

* ``unidirectional``: next-base prediction (position t predicts base t + 1), as in
  HyenaDNA. Padding is never a target.
* any other backbone sees the future, so next-base prediction would be trivial; it is
  trained by masked prediction instead, BERT-style as in Caduceus: 15% (``mask_prob``)
  of the real bases of a window are chosen; of those, 80% become MASK, 10% a random
  base, 10% stay as they are; only the chosen positions are scored. The choice is a
  function of (data_seed, window index), so validation scores are comparable across
  runs.

Windows come from a FASTA file: from ``bed`` regions (``chrom start end split``) or,
without one, from whole contigs, whose last ``val_fraction`` is held out for
validation. Regions are tiled into windows of ``seq_len`` every ``stride`` bases.
"""
# No ``from __future__ import annotations`` here: OmegaConf reads the config's
# annotations at runtime.
import math
from dataclasses import dataclass
from typing import Optional

import torch
from omegaconf import MISSING
from torch import nn
from torch.utils.data import Dataset, Subset

from ..base import IGNORE_INDEX, Report, StepOutput, Task, language_model_step
from .common import DNAConfig, eval_batches
from .embed import embed_sequences, read_inputs
from .genome import FastaFile, GenomeWindows, mix64, read_bed, tile, whole_contigs
from .models import DNALanguageModel, load_backbone
from .tokenizer import BASES, MASK, VOCAB_SIZE, next_base_labels


@dataclass
class DNAPretrainConfig(DNAConfig):
    """Pretraining. Besides :class:`DNAConfig`:

    Attributes:
        fasta: the genome (uncompressed FASTA; its ``.fai`` index is built if missing).
        bed: regions with splits (``chrom start end split``); ``null``: whole contigs.
        stride: bases between window starts; ``null`` means ``seq_len`` (no overlap).
        val_fraction: without ``bed``, the share at the end of each contig held out
            for validation.
        mask_prob: share of bases chosen for masked prediction (non-causal backbones).
        eval_max_windows: the final evaluation scores at most this many windows per
            split (evenly spread over the split).
    """

    name: str = "dna_pretrain"
    fasta: str = MISSING
    bed: Optional[str] = None
    stride: Optional[int] = None
    val_fraction: float = 0.05
    mask_prob: float = 0.15
    eval_max_windows: int = 512

    def validate(self) -> None:
        super().validate()
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"task.stride: must be a positive integer or null, got {self.stride}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"task.val_fraction: must be in [0, 1), got {self.val_fraction}")
        if not 0 < self.mask_prob < 1:
            raise ValueError(f"task.mask_prob: must be in (0, 1), got {self.mask_prob}")
        if self.eval_max_windows < 1:
            raise ValueError(f"task.eval_max_windows: must be a positive integer, got {self.eval_max_windows}")


class PretrainWindows(Dataset):
    """Training items of genome windows: ``{"input_ids": (L,), "labels": (L,)}`` int64,
    next-base labels (``masked=False``) or masked-prediction inputs and labels."""

    def __init__(self, windows: GenomeWindows, *, masked: bool, mask_prob: float, seed: int) -> None:
        self.windows = windows
        self.masked = masked
        self.mask_prob = mask_prob
        self.seed = seed

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.windows[index]
        if not self.masked:
            return {"input_ids": item["input_ids"], "labels": next_base_labels(item["input_ids"])}
        generator = torch.Generator().manual_seed(mix64(mix64(self.seed) ^ index) >> 1)
        return mask_tokens(item["input_ids"], item["valid"], prob=self.mask_prob, generator=generator)


def mask_tokens(
    ids: torch.Tensor, valid: torch.Tensor, *, prob: float, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """BERT-style masking of ids (L,) at valid (L,) positions; see the module docstring.
    Returns ``{"input_ids", "labels"}`` (L,) with IGNORE_INDEX on unchosen positions."""
    draw = torch.rand(ids.shape, generator=generator)
    chosen = (draw < prob) & valid
    if valid.any() and not chosen.any():
        # Every window scores at least one base, so no batch has an empty loss.
        chosen[int(torch.multinomial(valid.float(), 1, generator=generator))] = True
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    action = torch.rand(ids.shape, generator=generator)
    random_bases = torch.tensor(BASES)[torch.randint(0, len(BASES), ids.shape, generator=generator)]
    inputs = torch.where(chosen & (action < 0.8), torch.full_like(ids, MASK), ids)
    inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_bases, inputs)
    return {"input_ids": inputs, "labels": labels}


class DNAPretrain(Task):
    """Next-base or masked prediction over genome windows."""

    name = "dna_pretrain"
    config_class = DNAPretrainConfig
    cfg: DNAPretrainConfig

    def __init__(self, cfg: DNAPretrainConfig) -> None:
        cfg.validate()
        super().__init__(cfg)
        self.fasta = FastaFile(cfg.fasta)  # builds the .fai once, before any worker
        regions = (
            read_bed(cfg.bed, self.fasta.lengths)
            if cfg.bed
            else whole_contigs(self.fasta.lengths, val_fraction=cfg.val_fraction)
        )
        self.windows = tile(regions, length=cfg.seq_len, stride=cfg.stride or cfg.seq_len)

    @property
    def masked(self) -> bool:
        """Masked prediction (True) or next-base prediction (False)."""
        return self.cfg.backbone != "unidirectional"

    @property
    def vocab_size(self) -> int:
        return VOCAB_SIZE

    def split(self, name: str, *, augment: bool = False) -> PretrainWindows:
        windows = [w for w in self.windows if w.split == name]
        genome = GenomeWindows(
            self.fasta, windows, length=self.cfg.seq_len, rc_augment=augment and self.cfg.rc_augment, seed=self.cfg.data_seed
        )
        return PretrainWindows(genome, masked=self.masked, mask_prob=self.cfg.mask_prob, seed=self.cfg.data_seed)

    def datasets(self) -> dict[str, Dataset]:
        splits = {"train": self.split("train", augment=True), "val": self.split("val")}
        for name in ("train", "val"):
            if len(splits[name]) == 0:
                raise ValueError(
                    f"task: no {name} windows (set task.val_fraction > 0, or give {name} regions in task.bed)"
                )
        test = self.split("test")
        if len(test):
            splits["test"] = test
        return splits

    def build_model(self, model_cfg) -> nn.Module:
        model = DNALanguageModel(model_cfg, backbone=self.cfg.backbone)
        if self.cfg.init_from:
            load_backbone(model, self.cfg.init_from)
        return model

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        return language_model_step(model(batch["input_ids"]), batch["labels"])

    def loss_unit(self) -> tuple[str, float]:
        return "base", 1.0  # one token per base; padding is never scored

    def embed(
        self, model: nn.Module, input_path: str, *, device: torch.device, fasta: Optional[str] = None
    ) -> tuple[list[str], torch.Tensor]:
        """(ids, embeddings (n, width)) of the records of a FASTA file or the intervals
        of a BED file (bases from ``fasta``, else ``task.fasta``); see :mod:`.embed`."""
        sequences = read_inputs(input_path, fasta=fasta or self.cfg.fasta)
        return embed_sequences(
            model, sequences, length=self.cfg.seq_len, cls=False, batch_size=self.cfg.eval_batch_size, device=device
        )

    def evaluate(self, model: nn.Module, device: torch.device) -> Report:
        """Bits per base, perplexity and accuracy of the scored bases, per split."""
        rows = []
        for name, data in self.datasets().items():
            if name == "train":
                continue
            if len(data) > self.cfg.eval_max_windows:
                step = len(data) / self.cfg.eval_max_windows
                data = Subset(data, [int(i * step) for i in range(self.cfg.eval_max_windows)])
            totals = torch.zeros(3, dtype=torch.float64)  # loss sum (nats), right, scored
            for batch in eval_batches(data, batch_size=self.cfg.eval_batch_size, device=device):
                out = self.step(model, batch)
                totals += torch.tensor(
                    [float(out.metrics["loss"].total), float(out.metrics["accuracy"].total), float(out.metrics["loss"].count)],
                    dtype=torch.float64,
                )
            nats = (totals[0] / totals[2].clamp(min=1)).item()
            rows.append(
                {
                    "split": name,
                    "bits_per_base": nats / math.log(2),
                    "perplexity": math.exp(nats),
                    "accuracy": (totals[1] / totals[2].clamp(min=1)).item(),
                    "windows": len(data),
                }
            )
        objective = "masked prediction" if self.masked else "next-base prediction"
        last = rows[-1]
        return Report(
            title=f"DNA pretraining ({objective}, {self.cfg.backbone} backbone, windows of {self.cfg.seq_len})",
            metrics={f"{last['split']}_{k}": last[k] for k in ("bits_per_base", "perplexity", "accuracy")},
            rows=rows,
        )
