"""Decode-step tuning: how each of a layer's small products runs.

``seqmamba.kernels.decode_linear`` runs x_proj, out_proj, (above the rows of the fused
in_proj + conv kernel) in_proj and the LM head either as its Triton kernel (a dependent launch that
prefetches its weight; optionally split over K) or as cuBLAS's product, by a rule on the
row count and the product's width (kernels/decode_linear/kernel.py). This script judges
the choices where they run: a whole decode step of the Mamba-130M shape in a CUDA graph,
replayed (proj_conv_tuning.graphed_step_ms). For each batch it times the rule, then each
product's candidate launches in turn (cuBLAS, the kernel's tiles and splits of K; each
checked against F.linear first) with the other products at the rule, then every
product at its best together, and prints ms per token. ``--timeline`` instead profiles
the rule's replayed step and charges each kernel the time by which it extends the step.

    python benchmarks/decode_linear_tuning.py [--batches 1,2,4,8,16,32,64] [--replays 200] [--timeline]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
import triton

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
HEAD_N = 50280  # the vocabulary 50277 padded to a multiple of 8
NAMES = {X_PROJ_N: "x_proj", OUT_PROJ_N: "out_proj", IN_PROJ_N: "in_proj", HEAD_N: "lm_head"}


def in_features(n: int) -> int:
    """K of the product of width ``n``: in_proj and the head read d_model, the others d_inner."""
    return D_MODEL if n in (IN_PROJ_N, HEAD_N) else D_INNER


def candidates(batch: int, n: int) -> list[Launch | None]:
    """Launches tried for the product of width ``n`` at ``batch`` rows (None: cuBLAS's):
    the kernel's default tile, wider tiles and splits of K (the sixth field)."""
    m = smallest_block_m(batch)
    out: list[Launch | None] = [None, (m, 16, 256, 4, 3)]
    if n == X_PROJ_N:
        out += [(m, 16, 256, 4, 3, 3), (m, 16, 256, 4, 3, 6), (m, 16, 128, 4, 3, 12)]
        out += [(32, 16, 256, 4, 3, 6)] if m == 64 else []
    elif n == OUT_PROJ_N:
        out += [(m, 16, 256, 2, 3), (m, 32, 256, 4, 3), (m, 16, 256, 4, 3, 6), (m, 32, 256, 4, 3, 6),
                (m, 64, 256, 4, 3, 6), (m, 32, 512, 4, 3, 3)]
        out += [(32, 16, 256, 4, 3), (32, 32, 256, 4, 3)] if m == 64 else []  # two row blocks
    elif n == IN_PROJ_N:
        out += [(m, 32, 256, 4, 3), (m, 16, 256, 4, 3, 3), (m, 32, 256, 4, 3, 3), (m, 64, 256, 4, 3, 3),
                (m, 32, 128, 4, 3, 6)]
    else:  # the head: few, wide programs streaming the vocabulary's weight
        out = [None, (m, 64, 256, 4, 2), (m, 64, 128, 4, 3), (m, 128, 128, 4, 2), (m, 128, 64, 4, 3),
               (m, 256, 64, 8, 2)]
    return out


def widths(batch: int) -> list[int]:
    """The products decode_linear runs at ``batch``: in_proj only above the fused kernel's
    rows; the head (on cuBLAS by the rule) last."""
    return [X_PROJ_N, OUT_PROJ_N] + ([IN_PROJ_N] if batch > FUSED_MAX_BATCH else []) + [HEAD_N]


def check(launch: Launch, batch: int, n: int, k: int = D_INNER, device: str = "cuda") -> float:
    """Relative error of the kernel with ``launch`` against F.linear on random inputs."""
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, k, generator=g).to(device, torch.bfloat16)
    w = (torch.randn(n, k, generator=g) * k**-0.5).to(device, torch.bfloat16)
    return rel_err(decode_linear_triton(x, w, None, launch), F.linear(x, w))


def describe(launch: Launch | None) -> str:
    if launch is None:
        return "cuBLAS"
    m, n, k, w, s, *split = launch
    return f"M{m} N{n} K{k} w{w} s{s}" + (f" split {split[0]}" if split else "")


def describe_rule(batch: int) -> str:
    rule = linear_kernel.default_launch
    return ", ".join(f"{NAMES[n]} {describe(rule(batch, n, in_features(n)))}" for n in widths(batch))


def sweep(batch: int, replays: int, products: list[str] | None = None) -> None:
    """Each product's candidates in turn, the others at the rule; then every product at
    its best candidate together."""
    measure = graphed_step_ms(batch, replays)
    rule = linear_kernel.default_launch

    def timed(launches: dict[int, Launch | None]) -> float:
        def chosen(b: int, n: int, k: int) -> Launch | None:
            return launches[n] if n in launches else rule(b, n, k)

        linear_kernel.default_launch = chosen
        try:
            return measure()
        finally:
            linear_kernel.default_launch = rule

    print(f"batch {batch}: decode step of the Mamba-130M shape from a CUDA graph, ms per token "
          f"(rule: {describe_rule(batch)})")
    ruled = measure()
    print(f"    {ruled:.4f}  rule")
    best: dict[int, Launch | None] = {}
    for n in widths(batch):
        if products and NAMES[n] not in products:
            continue
        k = in_features(n)
        rows = []
        for launch in candidates(batch, n):
            try:
                err = "" if launch is None else f"  (rel err {check(launch, batch, n, k=k):.1e})"
            except triton.runtime.errors.OutOfResources as e:  # a tile too large for this GPU
                print(f"    skipped {describe(launch)}: {e}")
                continue
            rows.append((timed({n: launch}), describe(launch) + err, launch))
        rows.sort(key=lambda r: r[0])
        best[n] = rows[0][2]
        print(f"  {NAMES[n]}, the others at the rule:")
        for ms, label, _ in rows:
            print(f"    {ms:.4f}  {label}")
    print(f"    {timed(best):.4f}  each at its best: " + ", ".join(f"{NAMES[n]} {describe(l)}" for n, l in best.items()))
    return best


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
    p.add_argument("--products", help="comma-separated: only these products' candidates "
                   "(x_proj, out_proj, in_proj, lm_head; default all)")
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
            sweep(batch, args.replays, args.products.split(",") if args.products else None)


if __name__ == "__main__":
    main()
