"""Decode-step kernel tuning: times launch shapes of the Triton selective_state_update.

The step as the model's decode runs it (seqmamba.models.decode.mixer_step): bf16
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
launch for steps this short.)

    python benchmarks/state_update_tuning.py [--batches 1,16,64] [--top 6]
"""
from __future__ import annotations

import argparse
import itertools

import torch
import torch.nn.functional as F
import triton.testing

from bench_scan import rel_err
from seqmamba.kernels.selective_state_update.reference import selective_state_update_reference
from seqmamba.kernels.selective_state_update.triton_kernel import launch_config, selective_state_update_triton

D_MODEL, D_INNER, N_STATE, RANK = 768, 1536, 16, 48


def model_step_inputs(batch: int, state_dtype: torch.dtype, seed: int = 0) -> dict:
    """Random inputs laid out as the decode step passes them (strided bf16 slices)."""
    g = torch.Generator().manual_seed(seed)
    bf = torch.bfloat16

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to("cuda")

    xz = randn(batch, 2 * D_INNER).to(bf)
    x_dbl = randn(batch, RANK + 2 * N_STATE).to(bf)
    dt, B, C = torch.split(x_dbl, [RANK, N_STATE, N_STATE], dim=-1)
    return dict(
        state=randn(batch, D_INNER, N_STATE).to(state_dtype), x=xz[:, :D_INNER], dt=dt,
        A=torch.log(torch.arange(1, N_STATE + 1, dtype=torch.float32, device="cuda")).expand(D_INNER, -1).to(bf),
        B=B, C=C, D=torch.ones(D_INNER, device="cuda", dtype=bf), z=xz[:, D_INNER:],
        dt_bias=(randn(D_INNER) * 0.5 - 4.0).to(bf), dt_softplus=True, A_is_log=True,
        dt_weight=(randn(D_INNER, RANK) / RANK**0.5).to(bf),
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


def sweep(batch: int, state_dtype: torch.dtype, top: int) -> None:
    inputs = model_step_inputs(batch, state_dtype)
    rule = launch_config(batch, D_INNER, N_STATE)
    timings = []
    for tile, warps in itertools.product((256, 512, 1024, 2048, 4096), (1, 2, 4, 8)):
        block_d = tile // N_STATE
        if block_d > D_INNER or tile < 128 * warps:
            continue
        ref_state = inputs["state"].clone()
        y_ref = selective_state_update_reference(**{**inputs, "state": ref_state})
        state = inputs["state"].clone()
        y = run({**inputs, "state": state}, block_d=block_d, num_warps=warps)
        err = max(rel_err(y, y_ref), rel_err(state, ref_state))
        work = {**inputs, "state": inputs["state"].clone()}
        us = graph_us(lambda: run(work, block_d=block_d, num_warps=warps))
        timings.append((us, (block_d, warps), err))
    timings.sort()
    chosen = (rule[0], rule[2])
    name = {torch.float32: "fp32", torch.bfloat16: "bf16"}[state_dtype]
    print(f"batch {batch}, state {name}: rule {chosen} -> "
          f"{next((us for us, cfg, _ in timings if cfg == chosen), float('nan')):.2f} us")
    for us, cfg, err in timings[:top]:
        print(f"    BLOCK_D {cfg[0]:4d} warps {cfg[1]}: {us:6.2f} us  (rel err {err:.1e})")
    try:
        step = mamba_ssm_step({**inputs, "state": inputs["state"].clone()})
        print(f"    mamba_ssm (dt_proj product + its kernel): {graph_us(step):6.2f} us")
    except ImportError:
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="1,16,64")
    p.add_argument("--top", type=int, default=6)
    args = p.parse_args()
    if not torch.cuda.is_available():
        p.error("needs a CUDA device")
    for state_dtype in (torch.float32, torch.bfloat16):
        for batch in map(int, args.batches.split(",")):
            sweep(batch, state_dtype, args.top)


if __name__ == "__main__":
    main()
