"""The comparison's plots, one PNG each (matplotlib's object API, no global state)."""
from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure

from .results import TaskResult

LOSS_CURVES = "val_loss_vs_tokens.png"
BITS = "bits.png"
THROUGHPUT = "throughput.png"
ACCURACY_BY_LENGTH = "accuracy_by_length.png"


def write_plots(directory: Path, results: list[TaskResult]) -> list[Path]:
    """Writes the plots of the trained tasks into ``directory``; returns their paths.
    The accuracy-by-length plot is written only when a task has such figures."""
    trained = [r for r in results if r.trained]
    if not trained:
        return []
    paths = [_loss_curves(directory / LOSS_CURVES, trained), _bits(directory / BITS, trained),
             _throughput(directory / THROUGHPUT, trained)]
    with_lengths = [r for r in trained if r.by_length]
    if with_lengths:
        paths.append(_accuracy_by_length(directory / ACCURACY_BY_LENGTH, with_lengths))
    return paths


def _loss_curves(path: Path, results: list[TaskResult]) -> Path:
    series = [(r.label, [t for t, _ in r.curve], [loss / math.log(2) for _, loss in r.curve]) for r in results]
    return _lines(path, series, xlabel="training tokens seen", ylabel="validation loss (bits per scored token)",
                  title="Validation loss against tokens seen")


def _bits(path: Path, results: list[TaskResult]) -> Path:
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    positions = range(len(results))
    width = 0.38
    ax.bar([p - width / 2 for p in positions], [r.bits_per_token for r in results], width, label="bits per token")
    ax.bar([p + width / 2 for p in positions], [r.bits_per_unit for r in results], width,
           label="bits per domain unit")
    ax.set_xticks(list(positions), [f"{r.label}\n(per {r.unit})" for r in results])
    ax.set_ylabel("bits")
    ax.set_title("Final validation loss")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return _save(fig, path)


def _throughput(path: Path, results: list[TaskResult]) -> Path:
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    ax.bar([r.label for r in results], [r.tokens_per_second for r in results], color="tab:green")
    ax.set_ylabel("training tokens per second")
    ax.set_title("Training throughput")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _accuracy_by_length(path: Path, results: list[TaskResult]) -> Path:
    series = [(f"{r.label} (by {r.length_kind})", [n for n, _ in r.by_length], [a for _, a in r.by_length])
              for r in results]
    return _lines(path, series, xlabel="context length (tokens)", ylabel="accuracy",
                  title="Accuracy by context length", log2_x=True, unit_interval=True)


def _lines(path: Path, series: list[tuple[str, list[float], list[float]]], *, xlabel: str, ylabel: str,
           title: str, log2_x: bool = False, unit_interval: bool = False) -> Path:
    """One marked line per ``(label, xs, ys)``."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for label, xs, ys in series:
        ax.plot(xs, ys, marker="o", label=label)
    if log2_x:
        ax.set_xscale("log", base=2)
    if unit_interval:
        ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
