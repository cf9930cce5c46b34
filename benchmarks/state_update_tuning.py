"""Decode-step kernel tuning: times launch shapes of the Triton selective_state_update.

The step as the model's decode runs it (seqmamba.models.decode.mixer_inner_step): bf16
strided slices of the projections for x, z, the low-rank Δ input, B and C; A as a bf16
A_log; dt_proj's bf16 weight applied inside the kernel; D and dt_bias in bf16. For
each batch and state dtype, every (BLOCK_D, num_warps) of the sweep is
checked against the reference and timed from a CUDA graph (median); the table lists
the fastest few and the current launch rule's choice. mamba_ssm's kernel (with a
separate Δ matrix product, as mamba_ssm's decode runs it) is timed beside them when
it imports. Chooses the rule in kernels/selective_state_update/triton_kernel.py.

A replayed graph of one step keeps the state in the L2 cache, which a model's decode
step does not (the other layers' weights pass through the cache in between): take the
ranking here as a shortlist and judge it in the model, with
``bench_generate.py --profile`` (the step's kernels) and its ms/token. (Timing each call
after a cache flush instead, as triton.testing.do_bench does, measures the host's
launch for steps this short.) ``--in-model`` does that judging: the decode step of the
Mamba-130M shape in a CUDA graph, replayed, with each launch shape in turn, programs
of 1 to 16 batch rows among them (ms per token).

    python benchmarks/state_update_tuning.py [--batches 1,16,64] [--top 6] [--in-model | --early-ab | --early-params-ab]
"""
from __future__ import annotations

import argparse
import itertools

import torch
import torch.nn.functional as F
import triton.testing

from bench_scan import rel_err
from seqmamba.kernels.selective_state_update import triton_kernel
from seqmamba.kernels.selective_state_update.reference import selective_state_update_reference
from seqmamba.kernels.selective_state_update.triton_kernel import (
    launch_config,
    rows_per_program,
    selective_state_update_triton,
)

D_MODEL, D_INNER, N_STATE, RANK = 768, 1536, 16, 48


def model_step_inputs(batch: int, state_dtype: torch.dtype, seed: int = 0, device: str = "cuda",
                      dim: int = D_INNER) -> dict:
    """Random inputs laid out as the decode step passes them (strided bf16 slices)."""
    g = torch.Generator().manual_seed(seed)
    bf = torch.bfloat16

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(device)

    xz = randn(batch, 2 * dim).to(bf)
    x_dbl = randn(batch, RANK + 2 * N_STATE).to(bf)
    dt, B, C = torch.split(x_dbl, [RANK, N_STATE, N_STATE], dim=-1)
    return dict(
        state=randn(batch, dim, N_STATE).to(state_dtype), x=xz[:, :dim], dt=dt,
        A=torch.log(torch.arange(1, N_STATE + 1, dtype=torch.float32, device=device)).expand(dim, -1).to(bf),
        B=B, C=C, D=torch.ones(dim, device=device, dtype=bf), z=xz[:, dim:],
        dt_bias=(randn(dim) * 0.5 - 4.0).to(bf), dt_softplus=True, A_is_log=True,
        dt_weight=(randn(dim, RANK) / RANK**0.5).to(bf),
    )


def run(inputs: dict, **launch) -> torch.Tensor:
    keys = ("state", "x", "dt", "A", "B", "C", "D", "z", "dt_bias", "dt_softplus", "A_is_log", "dt_weight")
    return selective_state_update_triton(*(inputs[k] for k in keys), **launch)


def mamba_ssm_step(inputs: dict):
    """mamba_ssm's decode step for the same inputs: dt_proj's product, then its kernel."""
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update as theirs

    A = -torch.exp(inputs["A"].float())
    D, dt_bias = inputs["D"].float(), inputs["dt_bias"].float()

    def step() -> torch.Tensor:
        dt = F.linear(inputs["dt"], inputs["dt_weight"])
        return theirs(inputs["state"], inputs["x"], dt, A, inputs["B"], inputs["C"], D, z=inputs["z"],
                      dt_bias=dt_bias, dt_softplus=True)

    return step


def graph_us(fn) -> float:
    return 1e3 * triton.testing.do_bench_cudagraph(fn, return_mode="median")


def launch_shapes(dim: int = D_INNER) -> list[tuple[int, int]]:
    """(BLOCK_D, num_warps) of the sweep: tiles of 256-4096 state elements, no idle warp."""
    return [(tile // N_STATE, warps) for tile, warps in itertools.product((256, 512, 1024, 2048, 4096), (1, 2, 4, 8))
            if tile // N_STATE <= dim and tile >= 128 * warps]


def in_model_shapes() -> list[tuple[int, int, int]]:
    """(batch rows, BLOCK_D, num_warps) tried inside the model: tiles of 512 to 2048
    state elements over 1-16 batch rows, one or two warps (more lost at every batch)."""
    return [(rows, tile // (rows * N_STATE), warps)
            for rows, tile, warps in itertools.product((1, 2, 4, 8, 16), (512, 1024, 2048), (1, 2))]


def in_model_sweep(batch: int, state_dtype: torch.dtype, top: int, replays: int = 100) -> None:
    """The decode step of the Mamba-130M shape (bf16, random weights) recorded in a CUDA
    graph and replayed (ms per token, median), with each launch shape of
    :func:`in_model_shapes` for its SSM step in turn."""
    from proj_conv_tuning import graphed_step_ms

    measure = graphed_step_ms(batch, replays, state_dtype)
    block_d, _, warps = launch_config(batch, D_INNER, N_STATE)
    rule = (rows_per_program(batch, D_INNER, N_STATE), block_d, warps)
    timings = [(measure(), rule)]
    try:
        for shape in in_model_shapes():
            triton_kernel.launch_config = lambda b, d, n, shape=shape: (shape[1], N_STATE, shape[2])
            triton_kernel.rows_per_program = lambda b, d, n, shape=shape: shape[0]
            timings.append((measure(), shape))
    finally:
        triton_kernel.launch_config, triton_kernel.rows_per_program = launch_config, rows_per_program
    timings.sort(key=lambda t: t[0])
    name = {torch.float32: "fp32", torch.bfloat16: "bf16"}[state_dtype]
    print(f"batch {batch}, state {name}, the graphed decode step, ms per token: rule (rows, BLOCK_D, warps) "
          f"{rule} -> {next(ms for ms, cfg in timings if cfg == rule):.4f}")
    for ms, (rows, block_d, warps) in timings[:top]:
        print(f"    rows {rows} BLOCK_D {block_d:4d} warps {warps}: {ms:.4f} ms")


def early_loads_ab(batch: int, state_dtype: torch.dtype, rounds: int = 4, replays: int = 100, *,
                   params_only: bool = False) -> None:
    """The graphed decode step of the Mamba-130M shape with early loads off and on (the
    SSM step reading its state, x, z and parameters before it waits for x_proj's
    product; above 16 rows also the conv step its windows and taps before it waits for
    in_proj's), alternated ``rounds`` times (ms per token, median of each). With
    ``params_only``, off and on are the large steps' early reads of everything but their
    state (``LARGE_STEPS_EARLY_PARAMS``), early loads otherwise at the rule."""
    from proj_conv_tuning import graphed_step_ms
    from seqmamba.kernels import dependent_launch
    from seqmamba.kernels.selective_state_update import triton_kernel

    owner, switch = (triton_kernel, "LARGE_STEPS_EARLY_PARAMS") if params_only else (dependent_launch, "EARLY_LOADS")
    measure = graphed_step_ms(batch, replays, state_dtype)
    original = getattr(owner, switch)
    times: dict[bool, list[float]] = {False: [], True: []}
    try:
        for _ in range(rounds):
            for early in (False, True):
                setattr(owner, switch, early)
                times[early].append(measure())
    finally:
        setattr(owner, switch, original)
    name = {torch.float32: "fp32", torch.bfloat16: "bf16"}[state_dtype]
    what = "large steps' early parameter loads" if params_only else "early loads"
    off, on = (sorted(times[e])[rounds // 2] for e in (False, True))
    print(f"batch {batch}, state {name}, the graphed decode step, ms per token: {what} off {off:.4f} "
          f"({' '.join(f'{t:.4f}' for t in times[False])}), on {on:.4f} "
          f"({' '.join(f'{t:.4f}' for t in times[True])}): {off / on:.3f}x")


def report(batch: int, state_dtype: torch.dtype, rule: tuple[int, int], timings: list, top: int, where: str) -> None:
    name = {torch.float32: "fp32", torch.bfloat16: "bf16"}[state_dtype]
    print(f"batch {batch}, state {name}, {where}: rule {rule} -> "
          f"{next((us for us, cfg, _ in timings if cfg == rule), float('nan')):.2f} us")
    for us, cfg, err in timings[:top]:
        checked = "" if err is None else f"  (rel err {err:.1e})"
        print(f"    BLOCK_D {cfg[0]:4d} warps {cfg[1]}: {us:6.2f} us{checked}")


def sweep(batch: int, state_dtype: torch.dtype, top: int, *, device: str = "cuda", dim: int = D_INNER,
          timer=None) -> list:
    """Every launch shape checked against the reference and timed (``timer``: default
    graph_us); prints the fastest ``top`` and returns all as (us, (BLOCK_D, warps), err)."""
    timer = timer or graph_us
    inputs = model_step_inputs(batch, state_dtype, device=device, dim=dim)
    rule = launch_config(batch, dim, N_STATE)
    timings = []
    for block_d, warps in launch_shapes(dim):
        ref_state = inputs["state"].clone()
        y_ref = selective_state_update_reference(**{**inputs, "state": ref_state})
        state = inputs["state"].clone()
        y = run({**inputs, "state": state}, block_d=block_d, num_warps=warps)
        err = max(rel_err(y, y_ref), rel_err(state, ref_state))
        work = {**inputs, "state": inputs["state"].clone()}
        us = timer(lambda: run(work, block_d=block_d, num_warps=warps))
        timings.append((us, (block_d, warps), err))
    timings.sort(key=lambda t: t[0])
    report(batch, state_dtype, (rule[0], rule[2]), timings, top, "one step from a CUDA graph")
    if device == "cuda":
        try:
            step = mamba_ssm_step({**inputs, "state": inputs["state"].clone()})
            print(f"    mamba_ssm (dt_proj product + its kernel): {graph_us(step):6.2f} us")
        except ImportError:
            pass
    return timings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="1,16,64")
    p.add_argument("--top", type=int, default=6)
    p.add_argument("--in-model", action="store_true", help="time each launch shape inside the model's graphed decode step")
    p.add_argument("--early-ab", action="store_true",
                   help="time the model's graphed decode step with early loads off and on")
    p.add_argument("--early-params-ab", action="store_true",
                   help="the same for large steps reading all but their state early (batch 64 of the 130M shape)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        p.error("needs a CUDA device")
    for state_dtype in (torch.float32, torch.bfloat16):
        for batch in map(int, args.batches.split(",")):
            if args.early_ab or args.early_params_ab:
                early_loads_ab(batch, state_dtype, params_only=args.early_params_ab)
            else:
                (in_model_sweep if args.in_model else sweep)(batch, state_dtype, args.top)


if __name__ == "__main__":
    main()
