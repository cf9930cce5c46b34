"""DNA species classification accuracy by window length (the Great Apes table's shape).

Trains configs/dna/species_by_length.yaml once per length, each run with the same number
of bases per step (batch = tokens_per_step / L) and the same number of steps, then reads
each run's test report and prints one markdown table.

    seqmamba data dna-species data/dna_species --length 1024 4096 16384 65536 131072
    python benchmarks/dna_accuracy_by_length.py --data data/dna_species
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "dna" / "species_by_length.yaml"


def run_length(length: int, args: argparse.Namespace) -> dict:
    """Trains and evaluates at one length; returns the row of the table."""
    bed = args.data / f"windows_{length}.bed"
    if not bed.is_file():
        raise SystemExit(f"{bed} is missing: build it with "
                         f"'seqmamba data dna-species {args.data} --length {length}'")
    batch = max(1, args.tokens_per_step // length)
    name = f"dna_species_L{length}"
    command = [
        sys.executable, "-m", "seqmamba.cli", "train", str(args.config),
        f"name={name}", f"task.seq_len={length}", f"task.source={bed}", f"task.fasta={args.data / 'genomes.fa'}",
        f"task.batch_size={batch}", f"task.eval_batch_size={max(1, args.eval_tokens // length)}",
        f"trainer.max_steps={args.steps}", f"trainer.output_dir={args.output_dir}", "trainer.overwrite=true",
        *args.overrides,
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - start
    report = json.loads((args.output_dir / name / "eval.json").read_text())
    metrics = report["metrics"]
    return dict(length=length, batch=batch, steps=args.steps, seconds=seconds,
                tokens_per_s=batch * length * args.steps / seconds, **metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/dna_species"))
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384, 65536, 131072])
    parser.add_argument("--tokens-per-step", type=int, default=1 << 17)
    parser.add_argument("--eval-tokens", type=int, default=1 << 17, help="bases per evaluation batch")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--output-dir", type=Path, default=Path("runs"))
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    args = parser.parse_args()
    rows = [run_length(length, args) for length in args.lengths]
    metric_names = [k for k in rows[0] if k not in ("length", "batch", "steps", "seconds", "tokens_per_s")]
    print("| length | batch x steps | train+eval s | bases/s | " + " | ".join(metric_names) + " |")
    print("| --- | --- | --- | --- | " + " | ".join("---" for _ in metric_names) + " |")
    for row in rows:
        values = " | ".join(f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k in metric_names)
        print(f"| {row['length']} | {row['batch']} x {row['steps']} | {row['seconds']:.0f} | {row['tokens_per_s']:,.0f} | {values} |")


if __name__ == "__main__":
    main()
