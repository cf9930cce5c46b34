"""``seqmamba compare``: one backbone shape on several tasks, one report."""
from __future__ import annotations

import argparse

from .common import add_config_arguments

SUMMARY = "train one backbone shape on several tasks (domains) for the same token budget and compare them"
DESCRIPTION = """\
Train the backbone of CONFIG's model section on each task of its tasks section (or those
named by select=[...]) for the same number of training tokens, evaluate each, and write
<trainer.output_dir>/<name>/report.md with PNG plots beside it:

  val_loss_vs_tokens.png   validation loss (bits per token) against training tokens seen
  bits.png                 final loss in bits per token and per domain unit (byte, base, sample)
  throughput.png           training tokens per second of each task
  accuracy_by_length.png   accuracy by context length, for tasks with a length sweep (synthetic)
                           or per-position predictions (e.g. DNA next-base)

Each task's run (checkpoints, logs, eval.txt) is in <trainer.output_dir>/<name>/<label>/.
A task whose data is missing (its 'needs') is skipped with the command that builds it;
the others still run. trainer.* settings apply to every task; trainer.max_steps and
trainer.val_every_n_steps follow from 'tokens' and 'evals'."""
EXAMPLES = """\
examples:
  seqmamba compare configs/compare/quick.yaml
  seqmamba compare configs/compare/quick.yaml 'select=[induction_heads,dna]' tokens=200000
  seqmamba compare configs/compare/quick.yaml trainer.overwrite=true
  seqmamba compare configs/compare/gpu.yaml trainer.devices=2 trainer.strategy=ddp"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from seqmamba.compare import compare, load_compare_config

    cfg = load_compare_config(args.config, args.overrides)
    result = compare(cfg, source=args.config)
    if result.report is not None:
        print(f"\nreport: {result.report}")
        for path in result.plots:
            print(f"plot:   {path}")
    return 0
