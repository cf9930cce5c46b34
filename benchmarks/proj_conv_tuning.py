"""Decode-step tuning: the input projection with the conv step as its epilogue.

``seqmamba.kernels.proj_conv_update`` replaces two kernels of every layer's decode step
(in_proj's cuBLAS product, then the conv step) by one Triton kernel. This script judges
it where it runs: one whole decode step of the Mamba-130M shape (bf16 weights, random),
recorded in a CUDA graph and replayed token after token, so each layer's weights come
from memory as in generation (a replayed graph of one layer would keep them in the L2
cache). For each batch it times

- ``split``: the product and the conv step as two kernels (F.linear, then the Triton
  ``causal_conv1d_update``), as the decode step ran before the fusion;
- ``rule``: the op as it runs (kernels/proj_conv_update/kernel.py): the fused kernel
  with its launch rule, or, above FUSED_MAX_BATCH rows, the same two kernels as split;
- every launch shape of the sweep for the fused kernel, (BLOCK_N, BLOCK_K, warps,
  stages) with the fewest rows a tile covering the batch takes, each first checked
  against the reference on random inputs.

and prints ms per token (median of replays), fastest first.

    python benchmarks/proj_conv_tuning.py [--batches 1,16,64] [--top 8] [--replays 200]
"""
from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from bench_scan import rel_err
from seqmamba.kernels import causal_conv1d_update
from seqmamba.kernels.decode_linear.reference import linear_deferred_norm_reference
from seqmamba.kernels.proj_conv_update import kernel as fused_kernel
from seqmamba.kernels.proj_conv_update.kernel import Launch, default_launch, proj_conv_update_triton
from seqmamba.kernels.proj_conv_update.reference import proj_conv_update_reference
from seqmamba.kernels.sizes import smallest_block_m
from seqmamba.models import decode

D_MODEL, D_INNER, WIDTH = 768, 1536, 4


def split_step(hidden, proj_weight, conv_state, conv_weight, conv_bias=None, proj_bias=None, activation=None,
               backend=None, *, early_loads=False, row_sumsq=None, eps=1e-5):
    """The two-kernel step the fused op replaced (cuBLAS's product and the conv step
    kernel), with proj_conv_update's signature (``early_loads`` unused: cuBLAS's
    product does not signal early; a deferred norm's ``row_sumsq`` scales the product's
    rows in torch, one more kernel)."""
    if row_sumsq is None:
        xz = F.linear(hidden, proj_weight, proj_bias)
    else:
        xz = linear_deferred_norm_reference(hidden, proj_weight, proj_bias, row_sumsq, eps)
    x, z = xz.chunk(2, dim=-1)
    return causal_conv1d_update(x, conv_state, conv_weight, conv_bias, activation, backend=backend), z


def launch_shapes(block_m: int) -> list[Launch]:
    """The sweep's (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages) for one BLOCK_M."""
    return [(block_m, n, k, w, s) for n, k, w, s in itertools.product((16, 32, 64), (64, 128, 256), (2, 4), (2, 3))]


def check_launch(launch: Launch, batch: int, *, device: str = "cuda", dim: int = D_INNER, k: int = D_MODEL) -> float:
    """Relative error of the fused kernel with ``launch`` against the reference (output and window)."""
    g = torch.Generator().manual_seed(batch)
    bf = torch.bfloat16

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * scale).to(device, bf)

    hidden, weight = randn(batch, k), randn(2 * dim, k, scale=k**-0.5)
    state, taps, bias = randn(batch, dim, WIDTH), randn(dim, WIDTH, scale=0.5), randn(dim)
    want_state, got_state = state.clone(), state.clone()
    want = proj_conv_update_reference(hidden, weight, None, want_state, taps, bias, True)
    got = proj_conv_update_triton(hidden, weight, None, got_state, taps, bias, True, launch=launch)
    return max(rel_err(got, want), rel_err(got_state, want_state))


def step_recorder(batch: int, state_dtype: torch.dtype = torch.float32) -> Callable[[], Callable[[], None]]:
    """A function that records the Mamba-130M shape's decode step at ``batch`` in a CUDA
    graph (with whatever op and launch rule are in place when called) and returns the
    graph's replay; the model (random bf16 weights) and its cache (SSM states in
    ``state_dtype``) are made once."""
    from seqmamba.models import MambaLM, ModelConfig, allocate_inference_cache
    from seqmamba.models.graphs import CUDAGraphRecorder

    torch.manual_seed(0)
    model = MambaLM(ModelConfig(d_model=D_MODEL, n_layer=24, vocab_size=50277)).to(device="cuda", dtype=torch.bfloat16)
    cache = allocate_inference_cache(model.eval(), batch, state_dtype=state_dtype)
    ids = torch.randint(0, 50277, (batch,), device="cuda")

    def record() -> Callable[[], None]:
        with torch.no_grad():
            return CUDAGraphRecorder().record(lambda: decode.decode_step(model, ids, cache))[1]

    return record


def graphed_step_ms(batch: int, replays: int, state_dtype: torch.dtype = torch.float32) -> Callable[[], float]:
    """A function that records the decode step at ``batch`` (:func:`step_recorder`) and
    returns its median ms per replay. The first graph of a process replayed faster than
    every later one (by 1.5-3% on an H100, whatever it held): one is recorded and timed
    here and discarded, so that the caller's first measurement is comparable to the rest."""
    record = step_recorder(batch, state_dtype)

    def measure() -> float:
        replay = record()
        times = []
        for _ in range(replays):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            replay()
            end.record()
            times.append((start, end))
        torch.cuda.synchronize()
        return sorted(s.elapsed_time(e) for s, e in times)[replays // 2]

    measure()
    return measure


def sweep(batch: int, top: int, replays: int, shapes: list[Launch] | None = None) -> None:
    """The decode step with the split product, the rule's choice and each fused launch of
    ``shapes`` (default: :func:`launch_shapes` at the smallest BLOCK_M for ``batch``)."""
    measure = graphed_step_ms(batch, replays)
    rule = default_launch(batch, D_INNER)
    rows = []
    original_op, original_rule = decode.proj_conv_update, fused_kernel.default_launch
    try:
        decode.proj_conv_update = split_step
        rows.append((measure(), "split (F.linear + conv step)", None))
        decode.proj_conv_update = original_op
        if rule is None:
            rows.append((measure(), "rule: two kernels", None))
        candidates = shapes if shapes is not None else launch_shapes(smallest_block_m(batch))
        for launch in [s for s in [rule] if s] + [s for s in candidates if s != rule]:
            try:
                err = check_launch(launch, batch)
            except Exception as e:  # noqa: BLE001 (a shape the GPU cannot launch, e.g. out of shared memory)
                print(f"    {launch}: {type(e).__name__}: {str(e).splitlines()[0][:100]}")
                continue
            fused_kernel.default_launch = lambda b, d, launch=launch: launch
            label = (f"{'rule ' if launch == rule else ''}M{launch[0]} N{launch[1]} K{launch[2]} w{launch[3]} "
                     f"s{launch[4]}{' reload' if launch[5:] and launch[5] else ''}")
            rows.append((measure(), label, err))
    finally:
        decode.proj_conv_update, fused_kernel.default_launch = original_op, original_rule
    split_ms = rows[0][0]
    print(f"batch {batch}: decode step of the Mamba-130M shape from a CUDA graph, ms per token "
          f"(split {split_ms:.4f}; rule {next(ms for ms, label, _ in rows if label_is_rule(label)):.4f})")
    shown = sorted(rows, key=lambda r: r[0])[:top]
    for ms, label, err in shown + [r for r in rows if r not in shown and (r[2] is None or label_is_rule(r[1]))]:
        checked = "" if err is None else f"  (rel err {err:.1e})"
        print(f"    {label:32s} {ms:.4f}  {split_ms / ms:.3f}x split{checked}")


def label_is_rule(label: str) -> bool:
    return label.startswith("rule")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="1,16,64")
    p.add_argument("--top", type=int, default=8)
    p.add_argument("--replays", type=int, default=200)
    p.add_argument("--shapes", default=None, metavar="MxNxKxWxS[xR],...",
                   help="fused launches to time (BLOCK_M x BLOCK_N x BLOCK_K x warps x stages) instead of the sweep")
    args = p.parse_args()
    if not torch.cuda.is_available():
        p.error("needs a CUDA device")
    shapes = None
    if args.shapes:
        try:
            shapes = [tuple(int(v) for v in item.split("x")) for item in args.shapes.split(",")]
        except ValueError:
            p.error(f"--shapes: expected items like 64x32x256x4x3, got {args.shapes!r}")
        if any(len(shape) not in (5, 6) for shape in shapes):
            p.error(f"--shapes: each item has five or six numbers (MxNxKxWxS, R = 1: the conv step on the x "
                    f"tile read back), got {args.shapes!r}")
    for batch in map(int, args.batches.split(",")):
        sweep(batch, args.top, args.replays, shapes)


if __name__ == "__main__":
    main()
