"""Running a comparison: each selected task trained for the same token budget on the
same backbone shape, evaluated, then one report with plots."""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only

from seqmamba.tasks import get_task
from seqmamba.train import Throughput, load_trained_model, train
from seqmamba.train.strategy import planned_world_size

from .config import CompareConfig, task_experiment
from .measure import ValidationCurve, accuracy_by_position, length_rows, tokens_per_item
from .plots import write_plots
from .report import summary_table, write_report
from .results import TaskResult


@dataclass
class CompareResult:
    """Where a comparison left its outputs (``report`` is None on processes other
    than the first of a multi-device run)."""

    run_root: Path
    report: Path | None
    plots: list[Path]
    results: list[TaskResult]


def compare(cfg: CompareConfig, *, source: str, say: Callable[[str], None] = print) -> CompareResult:
    """Trains and evaluates every selected task of ``cfg`` in turn; writes
    ``<run_root>/report.md`` and the plots. A task whose ``needs`` are missing is
    skipped with a message naming them and the command that builds them."""
    world_size = planned_world_size(cfg.trainer)
    first = rank_zero_only.rank == 0
    tell = say if first else (lambda _: None)
    labels = cfg.labels()
    results = []
    for index, label in enumerate(labels, start=1):
        entry = cfg.tasks[label]
        missing = [need for need in entry.needs if not Path(need).exists()]
        if missing:
            result = TaskResult(label=label, task_name=entry.task.name, skipped=f"missing {', '.join(missing)}.",
                                build=entry.build)
            tell(f"[{index}/{len(labels)}] {label}: skipped, missing {', '.join(missing)}; build it with: {entry.build}")
        else:
            result = _run_task(cfg, label, source=source, world_size=world_size,
                               tell=lambda text, i=index: tell(f"[{i}/{len(labels)}] {text}"))
        results.append(result)
    if not first:
        return CompareResult(run_root=cfg.run_root(), report=None, plots=[], results=results)
    cfg.run_root().mkdir(parents=True, exist_ok=True)
    plots = write_plots(cfg.run_root(), results)
    report = cfg.run_root() / "report.md"
    write_report(report, cfg, results, plots, world_size=world_size)
    tell("\n" + summary_table(results))
    return CompareResult(run_root=cfg.run_root(), report=report, plots=plots, results=results)


def _run_task(cfg: CompareConfig, label: str, *, source: str, world_size: int,
              tell: Callable[[str], None]) -> TaskResult:
    entry = cfg.tasks[label]
    task = get_task(entry.task.name)(entry.task)
    per_batch = entry.task.batch_size * tokens_per_item(task) * world_size
    per_step = per_batch * cfg.trainer.accumulate_grad_batches
    steps = max(1, math.ceil(cfg.tokens / per_step))
    experiment = task_experiment(cfg, label, max_steps=steps, val_every_n_steps=math.ceil(steps / cfg.evals),
                                 source=source)
    unit, units_per_token = task.loss_unit()
    tell(f"{label} ({entry.task.name}): {steps} steps of {per_step:,} tokens")
    curve, throughput = ValidationCurve(per_step), Throughput(per_batch)
    start = time.perf_counter()
    trained = train(experiment, callbacks=[curve, throughput])
    wall = time.perf_counter() - start
    result = TaskResult(label=label, task_name=entry.task.name, steps=steps, tokens_per_step=per_step, unit=unit,
                        units_per_token=units_per_token, curve=curve.points,
                        tokens_per_second=throughput.tokens_per_second, wall_seconds=wall, report=trained.report,
                        run_dir=trained.run_dir)
    if not trained.is_global_zero:
        return result
    if trained.report is not None:
        result.by_length = length_rows(trained.report)
        result.length_kind = "test length" if result.by_length else ""
    if not result.by_length:
        loaded = load_trained_model(experiment, trained.last_checkpoint)
        model = loaded.model.to(loaded.device)
        result.by_length = accuracy_by_position(loaded.task, model, device=loaded.device,
                                                max_batches=cfg.context_batches)
        result.length_kind = "position" if result.by_length else ""
    return result
