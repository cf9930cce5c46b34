"""Decode-step tuning: which of a layer's small products run as Triton dependent launches.

``seqmamba.kernels.decode_linear`` runs x_proj, out_proj and (above the rows of the fused
in_proj + conv kernel) in_proj either as its Triton kernel (a dependent launch that
prefetches its weight) or as cuBLAS's product, by a rule on the row count and the
product's width (kernels/decode_linear/kernel.py). This script judges the choices where
they run: a whole decode step of the Mamba-130M shape in a CUDA graph, replayed
(proj_conv_tuning.graphed_step_ms). For each batch it times x_proj and out_proj each on
cuBLAS or on the kernel, the rule itself, out_proj on a few other launch shapes of the
kernel and, where in_proj runs alone, in_proj the same ways; each launch is checked
against F.linear first; it prints ms per token. ``--timeline`` instead profiles the
rule's replayed step and charges each kernel the time by which it extends the step.

    python benchmarks/decode_linear_tuning.py [--batches 1,2,4,8,16,32,64] [--replays 200] [--timeline]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from bench_scan import rel_err
from kernel_profile import critical_path, format_critical_path, profile_step
from proj_conv_tuning import D_INNER, D_MODEL, graphed_step_ms, step_recorder
from seqmamba.kernels.decode_linear import kernel as linear_kernel
from seqmamba.kernels.decode_linear.kernel import Launch, decode_linear_triton
from seqmamba.kernels.proj_conv_update.kernel import FUSED_MAX_BATCH
from seqmamba.kernels.sizes import smallest_block_m

X_PROJ_N = 80  # dt_rank 48 + 2 x d_state 16 at the 130M shape
OUT_PROJ_N = 768
IN_PROJ_N = 2 * D_INNER
NAMES = {X_PROJ_N: "x_proj", OUT_PROJ_N: "out_proj", IN_PROJ_N: "in_proj"}
RULE = "rule"  # in a choice: the product keeps the launch rule's choice

# A choice: label and, per product width, a launch (None: cuBLAS's product) or RULE.
Choice = tuple[str, dict[int, "Launch | None | str"]]


def wide_launches(batch: int) -> list[Launch]:
    """Launch shapes tried for the wide products (out_proj, in_proj) besides the default."""
    m = smallest_block_m(batch)
    return [(m, 16, 256, 2, 3), (m, 32, 256, 4, 3), (m, 32, 128, 2, 3), (m, 16, 256, 4, 2), (m, 16, 128, 4, 4)]


def check(launch: Launch, batch: int, n: int, k: int = D_INNER, device: str = "cuda") -> float:
    """Relative error of the kernel with ``launch`` against F.linear on random inputs."""
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, k, generator=g).to(device, torch.bfloat16)
    w = (torch.randn(n, k, generator=g) * k**-0.5).to(device, torch.bfloat16)
    return rel_err(decode_linear_triton(x, w, None, launch), F.linear(x, w))


def choices(batch: int) -> list[Choice]:
    """What is timed at ``batch``: each of x_proj and out_proj on cuBLAS or the kernel,
    out_proj's other launch shapes; where in_proj runs alone (above the fused kernel's
    rows), in_proj on cuBLAS, on the kernel and its other launch shapes too."""
    kernel = (smallest_block_m(batch), 16, 256, 4, 3)
    out: list[Choice] = [
        ("cuBLAS x_proj, cuBLAS out_proj", {X_PROJ_N: None, OUT_PROJ_N: None}),
        ("kernel x_proj, cuBLAS out_proj", {X_PROJ_N: kernel, OUT_PROJ_N: None}),
        ("cuBLAS x_proj, kernel out_proj", {X_PROJ_N: None, OUT_PROJ_N: kernel}),
        ("kernel x_proj, kernel out_proj", {X_PROJ_N: kernel, OUT_PROJ_N: kernel}),
    ]
    out += [(f"kernel x_proj, out_proj M{m} N{n} K{k} w{w} s{s}", {X_PROJ_N: kernel, OUT_PROJ_N: (m, n, k, w, s)})
            for m, n, k, w, s in wide_launches(batch)]
    if batch > FUSED_MAX_BATCH:
        out += [("in_proj cuBLAS", {IN_PROJ_N: None}), ("in_proj kernel", {IN_PROJ_N: kernel})]
        out += [(f"in_proj M{m} N{n} K{k} w{w} s{s}", {IN_PROJ_N: (m, n, k, w, s)})
                for m, n, k, w, s in wide_launches(batch)]
    return out


def describe_rule(batch: int) -> str:
    rule = linear_kernel.default_launch
    widths = [X_PROJ_N, OUT_PROJ_N] + ([IN_PROJ_N] if batch > FUSED_MAX_BATCH else [])
    return ", ".join(f"{NAMES[n]} {'kernel' if rule(batch, n) else 'cuBLAS'}" for n in widths)


def sweep(batch: int, replays: int) -> None:
    measure = graphed_step_ms(batch, replays)
    rule = linear_kernel.default_launch
    rows = [(measure(), "rule")]
    try:
        for label, launches in choices(batch):
            errors = [check(launch, batch, n, k=D_MODEL if n == IN_PROJ_N else D_INNER)
                      for n, launch in launches.items() if launch not in (None, RULE)]

            def chosen(b: int, n: int, launches=launches) -> Launch | None:
                launch = launches.get(n, RULE)
                return rule(b, n) if launch == RULE else launch

            linear_kernel.default_launch = chosen
            err = f"  (rel err {max(errors):.1e})" if errors else ""
            rows.append((measure(), label + err))
    finally:
        linear_kernel.default_launch = rule
    print(f"batch {batch}: decode step of the Mamba-130M shape from a CUDA graph, ms per token "
          f"(rule: {describe_rule(batch)})")
    for ms, label in sorted(rows):
        print(f"    {ms:.4f}  {label}")


def timeline(batch: int, replays: int) -> None:
    """Profiles ``replays`` replays of the graphed step at ``batch`` (the rule's choices)
    and prints where the time goes along the critical path."""
    replay = step_recorder(batch)()
    for _ in range(3):
        replay()
    torch.cuda.synchronize()

    def replays_in_a_row() -> None:
        for _ in range(replays):
            replay()

    table = critical_path(profile_step(replays_in_a_row), replays)
    print(f"batch {batch}: the graphed decode step along its critical path, {replays} replays profiled "
          f"(rule: {describe_rule(batch)})")
    print(format_critical_path(table))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="1,2,4,8,16,32,64")
    p.add_argument("--replays", type=int, default=200)
    p.add_argument("--timeline", action="store_true",
                   help="instead of timing the choices, profile the rule's graphed step and print "
                        "each kernel's share of the critical path")
    args = p.parse_args()
    if not torch.cuda.is_available():
        p.error("needs a CUDA device")
    for batch in map(int, args.batches.split(",")):
        if args.timeline:
            timeline(batch, min(args.replays, 50))
        else:
            sweep(batch, args.replays)


if __name__ == "__main__":
    main()
