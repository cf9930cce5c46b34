"""``seqmamba generate``: continue prompts with a trained checkpoint."""
# No ``from __future__ import annotations`` here: OmegaConf reads the options'
# annotations at runtime.
import argparse
from dataclasses import dataclass, fields
from typing import List, Optional

from .common import add_config_arguments, take_option

SUMMARY = "continue prompts with a trained checkpoint (recurrent decoding)"
DESCRIPTION = """\
Load the weights of a checkpoint written by 'seqmamba train' (ckpt=PATH, or 'last' /
'best' for the run that CONFIG names), encode each prompt=... with the task, generate
a continuation and show it the task's way: text is printed; other tasks may write
files (e.g. audio) under output_dir. Tasks without their own format take prompts as
space-separated token ids and print the generated ids. Timing (time to the first new
token, then tokens per second) goes to stderr.

Generation options (key=value, no dots): prompt (repeat it for a batch of prompts of
any lengths), max_new_tokens, temperature (0: greedy), top_k, top_p, min_p,
repetition_penalty, eos_token_id, pad_token_id, seed, num_samples (samples per
prompt), dtype (float32, bfloat16, float16), cuda_graph (true/false; default: on
CUDA), output_dir. Other key=value arguments are config overrides, e.g.
trainer.accelerator=cpu to generate on the CPU."""
EXAMPLES = """\
examples:
  seqmamba generate configs/synthetic/induction_heads.yaml ckpt=last prompt='3 7 1 16 5' max_new_tokens=8 temperature=0
  seqmamba generate runs/ih/config.yaml ckpt=runs/ih/checkpoints/last.ckpt prompt='1 2 3' prompt='4 5' seed=0 top_p=0.9
  seqmamba generate configs/synthetic/induction_heads.yaml ckpt=best prompt='2 2' num_samples=4 trainer.accelerator=cpu"""

DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class GenerateOptions:
    """The ``key=value`` options of ``seqmamba generate`` (see DESCRIPTION)."""

    prompt: List[str]
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    eos_token_id: Optional[int] = None
    pad_token_id: Optional[int] = None
    seed: Optional[int] = None
    num_samples: int = 1
    dtype: str = "float32"
    cuda_graph: Optional[bool] = None
    output_dir: str = "generated"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def split_options(overrides: list[str]) -> tuple[GenerateOptions, list[str]]:
    """The generation options (typed, checked) and the remaining config overrides."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from seqmamba.config import ConfigError
    from seqmamba.config.errors import describe_merge_error

    prompts = [item[len("prompt="):] for item in overrides if item.startswith("prompt=")]
    rest = [item for item in overrides if not item.startswith("prompt=")]
    given = {}
    for field in fields(GenerateOptions):
        if field.name != "prompt":
            value, rest = take_option(rest, field.name)
            if value is not None:
                given[field.name] = value
    if not prompts:
        raise ConfigError("generate needs at least one prompt=... (repeat prompt= for several)")
    schema = OmegaConf.structured(GenerateOptions)
    data = OmegaConf.create({**given, "prompt": prompts})
    try:
        options: GenerateOptions = OmegaConf.to_object(OmegaConf.merge(schema, data))  # type: ignore[assignment]
    except OmegaConfBaseException as exc:
        raise ConfigError(f"generate option {describe_merge_error(exc, schema, data)}") from None
    if options.dtype not in DTYPES:
        raise ConfigError(f"generate option dtype: must be one of {', '.join(DTYPES)}, got {options.dtype!r}")
    if options.num_samples < 1:
        raise ConfigError(f"generate option num_samples: must be a positive integer, got {options.num_samples}")
    return options, rest


def run(args: argparse.Namespace) -> int:
    import sys
    import time
    from pathlib import Path

    import torch

    from seqmamba.config import ConfigError, load_config, run_dir
    from seqmamba.train import load_trained_model

    from .evaluate import _run_checkpoint

    checkpoint, overrides = take_option(args.overrides, "ckpt")
    if not checkpoint:
        raise ConfigError("generate needs ckpt=PATH (a checkpoint file, or ckpt=last / ckpt=best)")
    options, overrides = split_options(overrides)
    cfg = load_config(args.config, overrides)
    if checkpoint in ("last", "best"):
        checkpoint = _run_checkpoint(run_dir(cfg) / "checkpoints", checkpoint)
    trained = load_trained_model(cfg, checkpoint)
    for note in trained.notes:
        print(note, file=sys.stderr)
    task, device = trained.task, trained.device
    model = trained.model.to(device=device, dtype=getattr(torch, options.dtype)).eval()
    if not hasattr(model, "generate"):
        raise ConfigError(f"task {task.name!r} builds a {type(model).__name__}, which cannot generate")

    prompts = [task.encode_prompt(text) for text in options.prompt for _ in range(options.num_samples)]
    first_token_at: list[float] = []

    def on_token(tokens: torch.Tensor) -> None:
        if not first_token_at:
            first_token_at.append(time.perf_counter())

    start = time.perf_counter()
    out = model.generate(
        prompts,
        options.max_new_tokens,
        temperature=options.temperature,
        top_k=options.top_k,
        top_p=options.top_p,
        min_p=options.min_p,
        repetition_penalty=options.repetition_penalty,
        eos_token_id=options.eos_token_id,
        pad_token_id=options.pad_token_id,
        seed=options.seed,
        callback=on_token,
        cuda_graph=options.cuda_graph,
    ).cpu()
    end = time.perf_counter()

    output_dir = Path(options.output_dir)
    width = max(len(p) for p in prompts)  # prompts are left-padded to this width
    for index, prompt in enumerate(prompts):
        sequence = out[index, width - len(prompt):]
        print(task.decode_output(sequence, prompt_length=len(prompt), output_dir=output_dir, index=index))
    new = out.shape[1] - width
    decode_s = end - first_token_at[0]
    rate = f"{len(prompts) * (new - 1) / decode_s:.1f} tokens/s" if new > 1 and decode_s > 0 else "n/a tokens/s"
    print(
        f"generated {new} tokens x {len(prompts)} sequences on {device}: first token after "
        f"{(first_token_at[0] - start) * 1e3:.1f} ms (prefill), then {rate}",
        file=sys.stderr,
    )
    if new > 1 and decode_s > 0:
        note = task.describe_speed((new - 1) / decode_s, sequences=len(prompts))
        if note:
            print(note, file=sys.stderr)
    return 0
