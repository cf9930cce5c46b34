"""``report.md``: the comparison as a table, the task reports and the plots."""
from __future__ import annotations

import math
from pathlib import Path

from .config import CompareConfig
from .results import TaskResult


def summary_table(results: list[TaskResult]) -> str:
    """One Markdown row per task: budget, final loss in bits per token and per domain
    unit, throughput, and the task's headline metrics (or why it was skipped)."""
    lines = [
        "| task | task.name | steps | tokens | val bits/token | val bits/unit | unit | tokens/s | wall (s) | headline |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for r in results:
        if not r.trained:
            lines.append(f"| {r.label} | {r.task_name} | - | - | - | - | - | - | - | skipped: {r.skipped} |")
            continue
        headline = ", ".join(f"{k} {_number(v)}" for k, v in (r.report.metrics.items() if r.report else []))
        lines.append(
            f"| {r.label} | {r.task_name} | {r.steps} | {r.tokens:,} | {_number(r.bits_per_token)} | "
            f"{_number(r.bits_per_unit)} | {r.unit} | {r.tokens_per_second:,.0f} | {r.wall_seconds:.1f} | {headline} |"
        )
    return "\n".join(lines)


def write_report(path: Path, cfg: CompareConfig, results: list[TaskResult], plots: list[Path], *,
                 world_size: int) -> None:
    """Writes ``report.md``: set-up, summary table, what is missing and how to build
    it, the plots, and each task's own evaluation report."""
    model = cfg.model
    lines = [
        f"# Comparison `{cfg.name}`",
        "",
        f"One backbone shape for every task: d_model {model.d_model}, n_layer {model.n_layer}, d_state "
        f"{model.d_state}, expand {model.expand} (each task brings its vocabulary and head). Budget: "
        f"{cfg.tokens:,} training tokens per task (input positions, all processes together), on {world_size} "
        f"{'process' if world_size == 1 else 'processes'} at precision {cfg.trainer.precision}.",
        "",
        "Validation loss is the task's own loss per scored token, in bits; bits per unit divides it by the "
        "units (byte, base, sample) one token stands for. Throughput counts training steps only (no validation, "
        "no first step).",
        "",
        summary_table(results),
        "",
    ]
    skipped = [r for r in results if not r.trained]
    if skipped:
        lines += ["## Not run", ""]
        lines += [f"- `{r.label}`: {r.skipped}" + (f" Build it with: `{r.build}`" if r.build else "") for r in skipped]
        lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    for r in results:
        if r.trained and r.report is not None:
            lines += [f"## {r.label}", "", f"Run folder: `{r.run_dir}`", "", "```", r.report.format(), "```", ""]
            if r.by_length:
                lines += [f"Accuracy by context length (by {r.length_kind}): "
                          + ", ".join(f"{n}: {_number(a)}" for n, a in r.by_length), ""]
    path.write_text("\n".join(lines))


def _number(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)
