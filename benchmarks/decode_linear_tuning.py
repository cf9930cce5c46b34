"""Decode-step tuning: which of a layer's small products run as Triton dependent launches.

``seqmamba.kernels.decode_linear`` runs x_proj and out_proj either as its Triton kernel
(a dependent launch that prefetches its weight) or as cuBLAS's product, by a rule on the
row count and the product's width (kernels/decode_linear/kernel.py). This script judges
the choices where they run: a whole decode step of the Mamba-130M shape in a CUDA graph,
replayed (proj_conv_tuning.graphed_step_ms). For each batch it times x_proj and out_proj
each on cuBLAS or on the kernel, the rule itself, and out_proj on a few other launch
shapes of the kernel, each checked against F.linear first, and prints ms per token.

    python benchmarks/decode_linear_tuning.py [--batches 1,2,4,8,16,32,64] [--replays 200]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from bench_scan import rel_err
from proj_conv_tuning import D_INNER, graphed_step_ms
from seqmamba.kernels.decode_linear import kernel as linear_kernel
from seqmamba.kernels.decode_linear.kernel import Launch, decode_linear_triton
from seqmamba.kernels.sizes import smallest_block_m

X_PROJ_N = 80  # dt_rank 48 + 2 x d_state 16 at the 130M shape
OUT_PROJ_N = 768


def out_proj_launches(batch: int) -> list[Launch]:
    """Launch shapes tried for out_proj besides the rule's."""
    m = smallest_block_m(batch)
    return [(m, 16, 256, 2, 3), (m, 32, 256, 4, 3), (m, 32, 128, 2, 3), (m, 16, 256, 4, 2)]


def check(launch: Launch, batch: int, n: int, k: int = D_INNER, device: str = "cuda") -> float:
    """Relative error of the kernel with ``launch`` against F.linear on random inputs."""
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, k, generator=g).to(device, torch.bfloat16)
    w = (torch.randn(n, k, generator=g) * k**-0.5).to(device, torch.bfloat16)
    return rel_err(decode_linear_triton(x, w, None, launch), F.linear(x, w))


def sweep(batch: int, replays: int) -> None:
    measure = graphed_step_ms(batch, replays)
    rule = linear_kernel.default_launch
    kernel_default = (smallest_block_m(batch), 16, 256, 4, 3)
    choices: list[tuple[str, Launch | None, Launch | None]] = [
        ("cuBLAS x_proj, cuBLAS out_proj", None, None),
        ("kernel x_proj, cuBLAS out_proj", kernel_default, None),
        ("cuBLAS x_proj, kernel out_proj", None, kernel_default),
        ("kernel x_proj, kernel out_proj", kernel_default, kernel_default),
    ] + [(f"kernel x_proj, out_proj M{m} N{n} K{k} w{w} s{s}", kernel_default, (m, n, k, w, s))
         for m, n, k, w, s in out_proj_launches(batch)]
    rows = [(measure(), "rule")]
    try:
        for label, x_launch, out_launch in choices:
            errors = [check(launch, batch, n) for launch, n in ((x_launch, X_PROJ_N), (out_launch, OUT_PROJ_N)) if launch]
            linear_kernel.default_launch = (
                lambda b, n, x_launch=x_launch, out_launch=out_launch: x_launch if n == X_PROJ_N else out_launch)
            err = f"  (rel err {max(errors):.1e})" if errors else ""
            rows.append((measure(), label + err))
    finally:
        linear_kernel.default_launch = rule
    print(f"batch {batch}: decode step of the Mamba-130M shape from a CUDA graph, ms per token "
          f"(rule: x_proj {'kernel' if rule(batch, X_PROJ_N) else 'cuBLAS'}, "
          f"out_proj {'kernel' if rule(batch, OUT_PROJ_N) else 'cuBLAS'})")
    for ms, label in sorted(rows):
        print(f"    {ms:.4f}  {label}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="1,2,4,8,16,32,64")
    p.add_argument("--replays", type=int, default=200)
    args = p.parse_args()
    if not torch.cuda.is_available():
        p.error("needs a CUDA device")
    for batch in map(int, args.batches.split(",")):
        sweep(batch, args.replays)


if __name__ == "__main__":
    main()
