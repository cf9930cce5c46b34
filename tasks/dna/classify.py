"""``dna_classify``: one label per DNA sequence (species, promoter or not, ...).

Sequences come from a CSV/TSV, a BED file with labels, or a Genomic Benchmarks folder
(:mod:`seqmamba.tasks.dna.sources`). Each is cut to its central ``seq_len`` bases or
padded on the right; with ``pooling: cls`` a CLS token takes the first position. The
model pools the backbone's hidden states and applies a Linear head
(:class:`DNAClassifier`); ``init_from`` starts the backbone from a pretraining
checkpoint. Classes are the sorted distinct labels.
"""
# No ``from __future__ import annotations`` here: OmegaConf reads the config's
# annotations at runtime.
from dataclasses import dataclass
from typing import Optional

import torch
from omegaconf import MISSING
from torch import nn
from torch.utils.data import Dataset

from ..base import Report, StepOutput, Task, check_ids, language_model_step
from .common import DNAConfig, eval_batches
from .embed import embed_sequences, read_inputs
from .genome import FastaFile, coin
from .models import POOLINGS, DNAClassifier, load_backbone
from .sources import Example, hold_out_val, read_examples
from .tokenizer import CLS, VOCAB_SIZE, encode, pad_to, reverse_complement


@dataclass
class DNAClassifyConfig(DNAConfig):
    """Sequence classification. Besides :class:`DNAConfig`:

    Attributes:
        source: a ``.csv``/``.tsv`` file, a ``.bed`` file or a Genomic Benchmarks folder.
        fasta: the genome a BED source refers to.
        pooling: ``mean`` (over non-pad positions), ``last`` or ``cls``.
        val_fraction: when the source has no val split, the share of train examples
            held out for validation.
    """

    name: str = "dna_classify"
    source: str = MISSING
    fasta: Optional[str] = None
    pooling: str = "mean"
    val_fraction: float = 0.1

    def validate(self) -> None:
        super().validate()
        if self.pooling not in POOLINGS:
            raise ValueError(f"task.pooling: must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"task.val_fraction: must be in [0, 1), got {self.val_fraction}")
        if self.pooling == "cls" and self.seq_len < 2:
            raise ValueError("task.seq_len: with pooling 'cls' it must hold the CLS token and a base (>= 2)")


class LabelledSequences(Dataset):
    """Items ``{"input_ids": (length,) int64, "label": () int64}``."""

    def __init__(
        self,
        examples: list[Example],
        class_ids: dict[str, int],
        *,
        fasta: Optional[FastaFile],
        length: int,
        cls: bool,
        rc_augment: bool,
        seed: int,
    ) -> None:
        self.examples = examples
        self.class_ids = class_ids
        self.fasta = fasta
        self.length = length
        self.cls = cls
        self.rc_augment = rc_augment
        self.seed = seed

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        example = self.examples[index]
        body = self.length - 1 if self.cls else self.length
        if example.text is not None:
            start = max(0, (len(example.text) - body) // 2)
            text = example.text[start : start + body]
        else:
            interval = example.interval
            assert interval is not None and self.fasta is not None
            start = interval.start + max(0, (interval.length - body) // 2)
            text = self.fasta.fetch(interval.chrom, start, min(interval.end, start + body))
        ids = encode(text)
        if self.rc_augment and coin(self.seed, index):
            ids = reverse_complement(ids)
        if self.cls:
            ids = torch.cat([torch.tensor([CLS]), ids])
        input_ids, _ = pad_to(ids, self.length)
        return {"input_ids": input_ids, "label": torch.tensor(self.class_ids[example.label])}


class DNAClassify(Task):
    """Classify whole sequences; reports accuracy, per-class accuracy and MCC."""

    name = "dna_classify"
    config_class = DNAClassifyConfig
    cfg: DNAClassifyConfig

    def __init__(self, cfg: DNAClassifyConfig) -> None:
        cfg.validate()
        super().__init__(cfg)
        self.fasta = FastaFile(cfg.fasta) if cfg.fasta else None
        examples = read_examples(cfg.source, fasta=self.fasta)
        self.examples = hold_out_val(examples, fraction=cfg.val_fraction, seed=cfg.data_seed)
        self.classes = sorted({e.label for e in self.examples})
        if len(self.classes) < 2:
            raise ValueError(f"task.source: {cfg.source} has {len(self.classes)} class; classification needs at least 2")

    @property
    def vocab_size(self) -> int:
        return VOCAB_SIZE

    def split(self, name: str) -> LabelledSequences:
        return LabelledSequences(
            [e for e in self.examples if e.split == name],
            {label: i for i, label in enumerate(self.classes)},
            fasta=self.fasta,
            length=self.cfg.seq_len,
            cls=self.cfg.pooling == "cls",
            rc_augment=name == "train" and self.cfg.rc_augment,
            seed=self.cfg.data_seed,
        )

    def datasets(self) -> dict[str, Dataset]:
        splits = {name: self.split(name) for name in ("train", "val", "test")}
        for name in ("train", "val"):
            if len(splits[name]) == 0:
                raise ValueError(f"task.source: no {name} examples (for val, set task.val_fraction > 0)")
        if len(splits["test"]) == 0:
            del splits["test"]
        return splits

    def build_model(self, model_cfg) -> nn.Module:
        model = DNAClassifier(
            model_cfg, backbone=self.cfg.backbone, pooling=self.cfg.pooling, num_classes=len(self.classes)
        )
        if self.cfg.init_from:
            load_backbone(model, self.cfg.init_from)
        return model

    def check_batch(self, batch: dict[str, torch.Tensor]) -> None:
        """As ``Task.check_batch``, and batch["label"] (batch,) in [0, number of classes)."""
        super().check_batch(batch)
        check_ids(f"task {self.name!r}: batch['label']", batch["label"], len(self.classes))

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        """Cross-entropy of the class logits (batch, classes) against batch["label"] (batch,)."""
        logits = model(batch["input_ids"])
        return language_model_step(logits[:, None], batch["label"][:, None])

    def embed(
        self, model: nn.Module, input_path: str, *, device: torch.device, fasta: Optional[str] = None
    ) -> tuple[list[str], torch.Tensor]:
        """(ids, embeddings (n, width)) of the records of a FASTA file or the intervals
        of a BED file (bases from ``fasta``, else ``task.fasta``); see :mod:`.embed`."""
        sequences = read_inputs(input_path, fasta=fasta or self.cfg.fasta)
        return embed_sequences(
            model, sequences, length=self.cfg.seq_len, cls=self.cfg.pooling == "cls", batch_size=self.cfg.eval_batch_size, device=device
        )

    def evaluate(self, model: nn.Module, device: torch.device) -> Report:
        """Accuracy, MCC and per-class accuracy on the test split (val if none)."""
        splits = self.datasets()
        split = "test" if "test" in splits else "val"
        truth, predicted = [], []
        for batch in eval_batches(splits[split], batch_size=self.cfg.eval_batch_size, device=device):
            truth.append(batch["label"].cpu())
            predicted.append(model(batch["input_ids"]).argmax(-1).cpu())
        y, p = torch.cat(truth), torch.cat(predicted)
        rows = [
            {"class": name, "accuracy": float((p[y == i] == i).float().mean()) if (y == i).any() else float("nan"), "examples": int((y == i).sum())}
            for i, name in enumerate(self.classes)
        ]
        return Report(
            title=f"DNA classification on the {split} split ({len(y)} sequences, {len(self.classes)} classes, {self.cfg.backbone} backbone)",
            metrics={f"{split}_accuracy": float((p == y).float().mean()), f"{split}_mcc": matthews_corrcoef(y, p, len(self.classes))},
            rows=rows,
        )


def matthews_corrcoef(truth: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> float:
    """Multi-class Matthews correlation (Gorodkin's R_K) of int labels (n,): 1 perfect,
    0 no better than chance; 0 when it is undefined (all truths or predictions one class)."""
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    confusion.index_put_((truth, predicted), torch.ones(len(truth), dtype=torch.float64), accumulate=True)
    n = confusion.sum()
    correct = confusion.trace()
    true_counts, predicted_counts = confusion.sum(1), confusion.sum(0)
    numerator = correct * n - (true_counts * predicted_counts).sum()
    denominator = torch.sqrt((n * n - (predicted_counts**2).sum()) * (n * n - (true_counts**2).sum()))
    return float(numerator / denominator) if denominator > 0 else 0.0
