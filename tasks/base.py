"""What a task is: the part of an experiment that knows its domain.

A task turns its typed config into datasets, a model (backbone plus head) and a loss
with metrics. The generic training module (``seqmamba.train``) drives any task through
this interface and never looks inside one.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from omegaconf import MISSING
from torch import nn
from torch.utils.data import Dataset

from seqmamba.kernels.checks import first_id_outside
from seqmamba.models import MambaLM, ModelConfig

IGNORE_INDEX = -100
"""Label value that the loss and the metrics skip (padding, prompt positions)."""


@dataclass
class TaskConfig:
    """Fields every task has. Each task subclasses this with its own typed fields."""

    name: str = MISSING
    batch_size: int = 32
    eval_batch_size: int = 64
    num_workers: int = 0


@dataclass
class Metric:
    """A metric accumulated as a sum over items and a count of items, so that averages
    over many batches (and processes) are exact: value = total / count."""

    total: torch.Tensor
    count: torch.Tensor


@dataclass
class StepOutput:
    """What one batch gives: the loss to minimise and metrics to average."""

    loss: torch.Tensor
    metrics: dict[str, Metric] = field(default_factory=dict)


@dataclass
class Report:
    """A task's evaluation: headline metrics and an optional table to print.

    ``rows`` are dicts with the same keys, e.g. accuracy per test length.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    title: str = ""

    def format(self) -> str:
        """The report as plain text: a title, ``key: value`` lines and an aligned table."""
        lines = [self.title] if self.title else []
        lines += [f"{key}: {_fmt(value)}" for key, value in self.metrics.items()]
        if self.rows:
            columns = list(self.rows[0])
            cells = [[_fmt(row[c]) for c in columns] for row in self.rows]
            widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
            lines.append("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
            lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


class Task(abc.ABC):
    """A domain's datasets, model head, loss and metrics.

    Subclasses set ``name`` (the ``task.name`` that selects them in a config) and
    ``config_class`` (their ``TaskConfig`` subclass), and register with
    :func:`seqmamba.tasks.register_task`.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[TaskConfig]]

    def __init__(self, cfg: TaskConfig) -> None:
        self.cfg = cfg

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of token ids the model must embed (before padding to a multiple of 8)."""

    @abc.abstractmethod
    def datasets(self) -> dict[str, Dataset]:
        """Datasets by split: "train" and "val" always, "test" when the task has one.

        Items are dicts of tensors that the default collate function can stack.
        Datasets must be deterministic given the config (seeds come from the config).
        """

    def build_model(self, model_cfg: ModelConfig) -> nn.Module:
        """The backbone plus this task's head. Default: a language model over the task's
        vocabulary (``model_cfg.vocab_size`` is overwritten by ``self.vocab_size``)."""
        return MambaLM(model_cfg.with_vocab_size(self.vocab_size))

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        """Loss and metrics for one batch. Default: next-token cross-entropy on the
        positions of ``batch["labels"]`` that are not ``IGNORE_INDEX``, plus token accuracy.

        batch["input_ids"], batch["labels"]: (batch, L) int64.
        """
        return language_model_loss(model, batch["input_ids"], batch["labels"])

    def check_batch(self, batch: dict[str, torch.Tensor]) -> None:
        """Raise ValueError if a batch holds token ids the model cannot take.

        The training module calls this on each batch on the host, before its copy to the
        device: an id outside the vocabulary would otherwise fail deep inside a GPU kernel
        (a device-side assert) or, checked there, make the host wait for the GPU once a
        step. Default: ``batch["input_ids"]`` in [0, vocab_size) and ``batch["labels"]``
        in [0, vocab_size) or IGNORE_INDEX, for whichever of the two the batch has.
        Tasks whose batches carry other ids (class labels, say) extend it.
        """
        if "input_ids" in batch:
            check_ids(f"task {self.name!r}: batch['input_ids']", batch["input_ids"], self.vocab_size)
        if "labels" in batch:
            check_ids(f"task {self.name!r}: batch['labels']", batch["labels"], self.vocab_size, allowed=IGNORE_INDEX)

    def loss_unit(self) -> tuple[str, float]:
        """The domain's own unit, for comparing losses across domains (``seqmamba
        compare``): its name and how many of it one scored token stands for.

        Bits per unit = bits per token / units per token. E.g. ``("base", 1.0)`` for
        DNA read one base per token, ``("byte", 3.8)`` for a text tokenizer whose
        tokens average 3.8 bytes of the validation text, ``("sample", 1.0)`` for audio
        quantised one sample per token. Default: ``("token", 1.0)``.
        """
        return "token", 1.0

    @abc.abstractmethod
    def evaluate(self, model: nn.Module, device: torch.device) -> Report:
        """The task's full evaluation (e.g. accuracy per test length), run after training
        and by ``seqmamba evaluate``."""

    # --- generation (``seqmamba generate``): the task's tokens <-> what a user reads ---

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """A prompt as given on the command line -> token ids (L,) int64.

        Default: the prompt is the token ids themselves, separated by spaces
        (``"3 14 15"``). A text task would tokenize text, a DNA task map bases to ids.
        """
        words = prompt.split()
        if not words or not all(w.isdigit() for w in words):
            raise ValueError(
                f"prompt: task {self.name!r} takes prompts as space-separated token ids (e.g. '3 14 15'), "
                f"got {prompt!r}"
            )
        ids = [int(w) for w in words]
        if max(ids) >= self.vocab_size:
            raise ValueError(f"prompt: token id {max(ids)} is outside the vocabulary [0, {self.vocab_size})")
        return torch.tensor(ids, dtype=torch.long)

    def decode_output(self, ids: torch.Tensor, *, prompt_length: int, output_dir: Path, index: int) -> str:
        """What ``seqmamba generate`` prints for one generated sequence.

        ids: (L,) int64, the prompt (first ``prompt_length`` ids, no padding) followed
        by the generated ids. Tasks whose outputs are not text (audio) write a file
        under ``output_dir`` (named after ``index``, the sequence's number) and return
        a line naming it. Default: the generated ids, separated by spaces.
        """
        return " ".join(str(i) for i in ids[prompt_length:].tolist())

    def describe_speed(self, tokens_per_second: float, *, sequences: int) -> str:
        """A line for ``seqmamba generate`` about decoding speed in the domain's own
        terms (audio: against real time), given the new tokens per second of each
        sequence and how many sequences were decoded together. Default: ``""``, nothing."""
        return ""


def check_ids(name: str, ids: torch.Tensor, limit: int, *, allowed: int | None = None) -> None:
    """Raise ValueError naming the first entry of ``ids`` (any shape, an integer dtype)
    outside [0, limit) that is not ``allowed``: its value and its index.

    Meant for host tensors: on a GPU tensor it waits for the queued kernels.
    """
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    found = first_id_outside(ids, limit, allowed=allowed)
    if found is not None:
        flat, value = found
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), ids.shape))
        also = f" or equal {allowed}" if allowed is not None else ""
        raise ValueError(
            f"{name}: entry {index} is {value}; ids must lie in [0, {limit}){also}. "
            "Check the dataset's tokenizer against the task's vocabulary"
        )


def language_model_loss(model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor) -> StepOutput:
    """As :func:`language_model_step` on ``model(input_ids)``; for a :class:`MambaLM`
    without the (batch, L, vocab) logits in memory (``MambaLM.loss``: the same values,
    its head's products run a block of tokens at a time).

    input_ids, labels: (batch, L) int64.
    """
    if not isinstance(model, MambaLM):
        return language_model_step(model(input_ids), labels)
    out = model.loss(input_ids, labels, ignore_index=IGNORE_INDEX)
    return StepOutput(
        loss=out.total / out.count.clamp(min=1),
        metrics={
            "loss": Metric(out.total.detach(), out.count),
            "accuracy": Metric(out.correct.float(), out.count),
        },
    )


def language_model_step(logits: torch.Tensor, labels: torch.Tensor) -> StepOutput:
    """Cross-entropy and accuracy over the labelled positions.

    logits: (batch, L, vocab) float; labels: (batch, L) int64 with IGNORE_INDEX where
    no prediction is scored.
    """
    flat_logits = logits.reshape(-1, logits.shape[-1]).float()
    flat_labels = labels.reshape(-1)
    mask = flat_labels != IGNORE_INDEX
    count = mask.sum()
    losses = nn.functional.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE_INDEX, reduction="none")
    total_loss = losses.sum()
    loss = total_loss / count.clamp(min=1)
    correct = ((flat_logits.argmax(-1) == flat_labels) & mask).sum()
    return StepOutput(
        loss=loss,
        metrics={
            "loss": Metric(total_loss.detach(), count),
            "accuracy": Metric(correct.float(), count),
        },
    )
