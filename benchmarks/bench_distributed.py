"""Training on two GPUs against one: the loss curve at the same global batch, and throughput.

Three runs of the same model, data and global batch, each its own process (Lightning
starts the second rank of a two-device run by running this script again):

    1gpu    one device, task.batch_size = G
    ddp2    two devices, trainer.strategy=ddp, task.batch_size = G/2 per device
    fsdp2   two devices, trainer.strategy=fsdp, task.batch_size = G/2 per device

Every run reads the same global batches in the same order (the data stream is a
function of seed and step), so the per-step training losses should agree up to
floating-point reduction order; a sharding mistake would make them differ by the
batch-to-batch noise instead. The table gives, per run: tokens/s over the training
steps (validation and the first step left out), speed-up over 1gpu, and the largest
and mean |loss - 1gpu loss| per step next to the 1gpu curve's own step-to-step noise
(median |loss[t+1] - loss[t]|). It is written to summary.json and summary.md with a
plot of the curves (loss_curves.png) under --out.

On a machine with two GPUs (about 3 minutes: three runs of about a minute each, most
of it start-up; Triton compiles the kernels in the first):
    python benchmarks/bench_distributed.py --out runs/bench_distributed
Tiny check on the CPU (two gloo processes, no FSDP, seconds):
    python benchmarks/bench_distributed.py --tiny --out /tmp/bench_distributed
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "synthetic" / "selective_copying.yaml"

# (name, devices, strategy, batch divisor): the runs of one benchmark, same global batch.
RUNS = (("1gpu", 1, "auto", 1), ("ddp2", 2, "ddp", 2), ("fsdp2", 2, "fsdp", 2))

# The Mamba-130M backbone shape; 16 x 2048 tokens per step (8 x 2048 per GPU on two).
GPU = dict(d_model=768, n_layer=24, seq_len=2048, data_tokens=16, global_batch=16, steps=60,
           precision="bf16-mixed", accelerator="gpu", workers=2)
TINY = dict(d_model=32, n_layer=2, seq_len=65, data_tokens=4, global_batch=8, steps=8,
            precision="32-true", accelerator="cpu", workers=0)


def overrides(size: dict, *, name: str, devices: int, strategy: str, batch: int, out: Path) -> list[str]:
    """The training config's overrides of one run (selective copying, one validation)."""
    return [
        f"name={name}", f"model.d_model={size['d_model']}", f"model.n_layer={size['n_layer']}",
        f"task.seq_len={size['seq_len']}", f"task.num_data_tokens={size['data_tokens']}",
        f"task.batch_size={batch}", f"task.eval_batch_size={batch}", f"task.num_workers={size['workers']}",
        f"trainer.max_steps={size['steps']}", f"trainer.val_every_n_steps={size['steps']}",
        "trainer.limit_val_batches=2", "trainer.log_every_n_steps=1", "trainer.evaluate=false",
        "trainer.progress_bar=false", "trainer.overwrite=true", f"trainer.output_dir={out}",
        f"trainer.precision={size['precision']}", f"trainer.accelerator={size['accelerator']}",
        f"trainer.devices={devices}", f"trainer.strategy={strategy}",
        # A schedule that does not depend on the run's length.
        "schedule.warmup_steps=10", f"schedule.decay_steps={max(11, size['steps'])}",
    ]


def run_one(args: argparse.Namespace) -> None:
    """One training run (on every rank); rank 0 writes <out>/<name>/result.json."""
    from seqmamba.config import load_config
    from seqmamba.train import Throughput, train

    size = TINY if args.tiny else GPU
    global_batch = args.batch * args.devices
    tokens_per_batch = global_batch * size["seq_len"]
    cfg = load_config(CONFIG, overrides(size, name=args.name, devices=args.devices, strategy=args.strategy,
                                        batch=args.batch, out=args.out))
    throughput = Throughput(tokens_per_batch)
    start = time.perf_counter()
    result = train(cfg, callbacks=[throughput])
    if not result.is_global_zero:
        return
    with open(result.run_dir / "logs" / "csv" / "version_0" / "metrics.csv") as f:
        losses = {int(row["step"]): float(row["train/loss"]) for row in csv.DictReader(f) if row.get("train/loss")}
    summary = dict(name=args.name, devices=args.devices, strategy=args.strategy, batch_per_device=args.batch,
                   global_batch=global_batch, seq_len=size["seq_len"], tokens_per_s=throughput.tokens_per_second,
                   timed_steps=throughput.batches, wall_s=time.perf_counter() - start,
                   losses=[losses[step] for step in sorted(losses)])
    (result.run_dir / "result.json").write_text(json.dumps(summary, indent=2) + "\n")


def compare_runs(results: list[dict]) -> list[dict]:
    """Table rows: throughput, speed-up and loss-curve distance to the first run."""
    base = results[0]
    noise = statistics.median(abs(b - a) for a, b in zip(base["losses"], base["losses"][1:]))
    rows = []
    for r in results:
        assert len(r["losses"]) == len(base["losses"]), "runs logged different numbers of steps"
        gaps = [abs(a - b) for a, b in zip(r["losses"], base["losses"])]
        rows.append(dict(run=r["name"], devices=r["devices"], strategy=r["strategy"],
                         batch=f"{r['batch_per_device']} x {r['devices']}", tokens_per_s=r["tokens_per_s"],
                         speedup=r["tokens_per_s"] / base["tokens_per_s"], max_gap=max(gaps),
                         mean_gap=sum(gaps) / len(gaps), noise=noise, first_loss=r["losses"][0],
                         last_loss=r["losses"][-1]))
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| run | devices | strategy | batch/device x devices | tokens/s | speed-up | max abs loss diff | "
             "mean abs loss diff | 1gpu step-to-step noise | first / last loss |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['devices']} | {r['strategy']} | {r['batch']} | {r['tokens_per_s']:,.0f} | "
                     f"{r['speedup']:.2f}x | {r['max_gap']:.2e} | {r['mean_gap']:.2e} | {r['noise']:.2e} | "
                     f"{r['first_loss']:.4f} / {r['last_loss']:.4f} |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for r in results:
        ax.plot(range(len(r["losses"])), r["losses"], label=f"{r['name']} ({r['tokens_per_s']:,.0f} tokens/s)")
    ax.set_xlabel("optimizer step (same global batch in every run)")
    ax.set_ylabel("training loss (nats per scored token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def drive(args: argparse.Namespace) -> None:
    """Runs every benchmark run in its own process, then writes and prints the table."""
    size = TINY if args.tiny else GPU
    runs = [run for run in RUNS if not (args.tiny and run[2] == "fsdp")]  # FSDP needs GPUs
    results = []
    for name, devices, strategy, divisor in runs:
        batch = size["global_batch"] // divisor
        command = [sys.executable, __file__, "run", "--name", name, "--devices", str(devices), "--strategy", strategy,
                   "--batch", str(batch), "--out", str(args.out), *(["--tiny"] if args.tiny else [])]
        print(f"== {name}: {' '.join(command[2:])}", flush=True)
        subprocess.run(command, check=True)
        results.append(json.loads((args.out / name / "result.json").read_text()))
    rows = compare_runs(results)
    table = markdown(rows)
    header = (f"Selective copying, d_model {size['d_model']}, n_layer {size['n_layer']}, L={size['seq_len']}, "
              f"global batch {size['global_batch']}, {size['steps']} steps, {size['precision']}")
    (args.out / "summary.md").write_text(header + "\n\n" + table + "\n")
    (args.out / "summary.json").write_text(json.dumps(dict(setup=header, rows=rows, runs=results), indent=2) + "\n")
    plot(results, args.out / "loss_curves.png")
    print("\n" + header + "\n\n" + table)
    for r in rows[1:]:
        verdict = "within" if r["mean_gap"] <= r["noise"] else "NOT within"
        print(f"{r['run']}: loss curve {verdict} the 1gpu step-to-step noise; speed-up {r['speedup']:.2f}x "
              f"({'meets' if r['speedup'] >= 1.8 else 'below'} 1.8x)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", choices=["run"], help="internal: one run (the driver starts these)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_distributed"))
    parser.add_argument("--tiny", action="store_true", help="a tiny model on the CPU (two gloo processes, no FSDP)")
    parser.add_argument("--name", default="1gpu")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    if args.mode == "run":
        run_one(args)
    else:
        drive(args)


if __name__ == "__main__":
    main()
