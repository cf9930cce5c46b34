"""What a comparison measures besides the task's own evaluation: the validation loss
against tokens seen, the size of a training item, and accuracy by position."""
from __future__ import annotations

import itertools
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from seqmamba.tasks import IGNORE_INDEX, Report, Task


class ValidationCurve(L.Callback):
    """Records ``(tokens seen, val/loss)`` after every validation of a run (process 0).

    Args:
        tokens_per_step: training tokens of one optimizer step, all processes together.
    """

    def __init__(self, tokens_per_step: int) -> None:
        self.tokens_per_step = tokens_per_step
        self.points: list[tuple[int, float]] = []

    def on_validation_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        loss = trainer.callback_metrics.get("val/loss")
        if loss is not None:
            self.points.append((trainer.global_step * self.tokens_per_step, float(loss)))


def tokens_per_item(task: Task) -> int:
    """Token positions of one training item: the size of its ``input_ids``."""
    train = task.datasets()["train"]
    item = next(iter(train)) if isinstance(train, IterableDataset) else train[0]
    if not isinstance(item, dict) or "input_ids" not in item:
        raise ValueError(f"task {task.name!r}: compare counts tokens by the items' 'input_ids', which its items lack")
    return int(item["input_ids"].numel())


def length_rows(report: Report) -> list[tuple[int, float]]:
    """``(length, accuracy)`` of a task evaluation that sweeps sequence lengths (rows
    with a ``length`` and an ``accuracy`` or ``token_accuracy`` column); else []."""
    rows = report.rows
    if not rows or "length" not in rows[0]:
        return []
    key = "accuracy" if "accuracy" in rows[0] else "token_accuracy" if "token_accuracy" in rows[0] else None
    if key is None:
        return []
    return [(int(row["length"]), float(row[key])) for row in rows]


def accuracy_by_position(task: Task, model: nn.Module, *, device: torch.device, max_batches: int
                         ) -> list[tuple[int, float]]:
    """Accuracy of per-position predictions by how many tokens the position has read:
    ``(n, accuracy)`` over positions 0-based ``t`` with ``n/2 < t + 1 <= n`` for
    ``n = 1, 2, 4, ...``, on the first ``max_batches`` validation batches.

    Only for tasks whose batches hold ``input_ids`` and ``labels`` of one shape
    (batch, L) and whose model maps them to logits (batch, L, vocab); [] otherwise, and
    when fewer than two buckets are scored (e.g. one answer per sequence).
    """
    val = task.datasets()["val"]
    loader = DataLoader(val, batch_size=task.cfg.eval_batch_size, shuffle=False)
    right: torch.Tensor | None = None
    scored: torch.Tensor | None = None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in itertools.islice(loader, max_batches):
                ids, labels = batch.get("input_ids"), batch.get("labels")
                if ids is None or labels is None or ids.ndim != 2 or labels.shape != ids.shape:
                    return []
                logits = model(ids.to(device))
                if logits.ndim != 3 or logits.shape[:2] != ids.shape:
                    return []
                labels = labels.to(device)
                mask = labels != IGNORE_INDEX
                hits = ((logits.argmax(-1) == labels) & mask).sum(0).double().cpu()  # (L,)
                counts = mask.sum(0).double().cpu()
                right = hits if right is None else right + hits
                scored = counts if scored is None else scored + counts
    finally:
        model.train(was_training)
    if right is None or scored is None:
        return []
    rows = []
    for upper in (1 << k for k in range(len(scored).bit_length() + 1)):
        lower = upper // 2  # positions t with lower < t + 1 <= upper
        n = scored[lower:upper].sum().item()
        if n > 0:
            rows.append((upper, right[lower:upper].sum().item() / n))
    return rows if len(rows) >= 2 else []
