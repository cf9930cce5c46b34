"""Running a task's evaluation on a trained model."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from seqmamba.tasks import Report, Task

_AUTOCAST = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}
_TRUE_DTYPES = {"16-true": torch.float16, "bf16-true": torch.bfloat16, "64-true": torch.float64}


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a Lightning precision setting, None where it does not autocast."""
    return _AUTOCAST.get(str(precision))


def evaluate_model(task: Task, model: nn.Module, *, device: torch.device, precision: str) -> Report:
    """``task.evaluate`` with ``model`` on ``device`` in eval mode, without gradients,
    at the training precision (autocast for ``*-mixed``, a cast for ``*-true``)."""
    model = model.to(device)
    if precision in _TRUE_DTYPES:
        model = model.to(_TRUE_DTYPES[precision])
    model.eval()
    if (dtype := autocast_dtype(precision)) is not None:
        context: contextlib.AbstractContextManager = torch.autocast(device.type, dtype=dtype)
    else:
        context = contextlib.nullcontext()
    with torch.no_grad(), context:
        return task.evaluate(model, device)
