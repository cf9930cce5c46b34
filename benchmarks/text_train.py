"""A text pretraining run measured for RESULTS.md: training tokens/s, the validation
curve (bits per byte and loss by step) and the final evaluation.

    seqmamba data text CORPUS... --workers 16 --out data/text
    python3 benchmarks/text_train.py configs/text/mamba_130m.yaml [key=value ...] [--json OUT.json]

Tokens/s count the training steps only (data loading, forward, backward, optimizer),
not validation, checkpoints or the first step (see seqmamba.train.Throughput).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from seqmamba.config import load_config, to_experiment
from seqmamba.train import Throughput, train
from seqmamba.train.strategy import planned_world_size


class BitsPerByteCurve(L.Callback):
    """``(step, val/bits_per_byte, val/loss)`` after every validation (process 0)."""

    def __init__(self) -> None:
        self.points: list[tuple[int, float, float]] = []

    def on_validation_end(self, trainer: L.Trainer, *args: Any) -> None:
        metrics = trainer.callback_metrics
        if trainer.sanity_checking or not trainer.is_global_zero or "val/bits_per_byte" not in metrics:
            return
        self.points.append((trainer.global_step, float(metrics["val/bits_per_byte"]), float(metrics["val/loss"])))


def run(config: str, overrides: list[str]) -> dict[str, Any]:
    """Train ``config`` with ``overrides``; the measurements as a dict."""
    cfg = load_config(config, overrides)
    experiment = to_experiment(cfg)
    tc = experiment.trainer
    per_batch = experiment.task.batch_size * experiment.task.seq_len * planned_world_size(tc)
    throughput, curve = Throughput(per_batch), BitsPerByteCurve()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = train(cfg, callbacks=[throughput, curve])
    wall = time.perf_counter() - start
    return {
        "config": config, "overrides": overrides, "device": torch.cuda.get_device_name() if torch.cuda.is_available()
        else "cpu", "steps": tc.max_steps, "tokens_per_step": per_batch * tc.accumulate_grad_batches,
        "train_tokens_per_s": throughput.tokens_per_second, "wall_s": wall,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "curve": [{"step": s, "val_bits_per_byte": b, "val_loss": v} for s, b, v in curve.points],
        "eval": result.report.metrics if result.report is not None else {}, "run_dir": str(result.run_dir),
    }


def markdown(row: dict[str, Any]) -> str:
    """The run as RESULTS.md lines: a summary line and the validation curve table."""
    peak = f", peak {row['peak_gib']:.1f} GiB" if row["peak_gib"] is not None else ""
    lines = [
        f"{row['device']}: {row['steps']} steps of {row['tokens_per_step']:,} tokens, "
        f"{row['train_tokens_per_s']:,.0f} training tokens/s{peak}, {row['wall_s']:.0f} s wall in all",
        "",
        "| steps | " + " | ".join(str(p["step"]) for p in row["curve"]) + " |",
        "| --- | " + " | ".join("---" for _ in row["curve"]) + " |",
        "| val bits per byte | " + " | ".join(f"{p['val_bits_per_byte']:.3f}" for p in row["curve"]) + " |",
        "| val loss (nats/token) | " + " | ".join(f"{p['val_loss']:.3f}" for p in row["curve"]) + " |",
    ]
    if row["eval"]:
        lines += ["", "final evaluation: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                                       for k, v in row["eval"].items())]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a text_pretrain config, e.g. configs/text/mamba_130m.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    parser.add_argument("--json", type=Path, help="also write the measurements to this JSON file")
    args = parser.parse_args()
    row = run(args.config, args.overrides)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(row, indent=2) + "\n")
    print(markdown(row))


if __name__ == "__main__":
    main()
