"""causal_conv1d and rms_norm side by side: seqmamba's Triton kernels, the references,
plain PyTorch, and the ``causal_conv1d`` package / mamba_ssm's ``layer_norm_fn``.

Shapes default to Mamba-130M training: the conv on x (batch 8, D 1536, L 2048) with
width 4, bias and SiLU, x contiguous or channel-last (a slice of the (batch, L, 2D)
projection viewed as (batch, D, L), as the Mamba block makes it); the norm on
(batch * L, 768) rows with the residual add, residual in fp32 (``residual_in_fp32``) or
in x's dtype. Activations are bf16 and parameters fp32, as under autocast.

    conv  ours       seqmamba.kernels.causal_conv1d(..., backend="triton")
          reference  seqmamba.kernels.causal_conv1d(..., backend="reference") (fp32 F.conv1d)
          torch      F.conv1d in the activation dtype, as mamba_ssm's layer without the package
          package    causal_conv1d.causal_conv1d_fn (when importable; CUDA only)
    norm  ours       seqmamba.kernels.rms_norm(..., backend="triton")
          reference  seqmamba.kernels.rms_norm(..., backend="reference")
          torch      the add and F.rms_norm in PyTorch, residual kept as the reference keeps it
          mamba_ssm  mamba_ssm's layer_norm_fn(..., is_rms_norm=True, prenorm=True) (when importable)

Before timing, every implementation's outputs and input gradients are compared with the
reference at the full shape; the script exits with status 1 on a disagreement. Timings
are medians of CUDA-event timings (triton.testing.do_bench, L2 flushed between runs); on
the CPU, medians of wall-clock runs. On CUDA, "fwd+bwd kernels" is the device's kernel
time per forward and backward (torch.profiler, 10 in a row): a small op's autograd
backward is launched more slowly than it runs, so its CUDA-event time measures the host.
GB/s counts the bytes a forward must move (inputs read once, outputs written once).

    python benchmarks/bench_ops.py                    # CUDA, Mamba-130M shapes
    python benchmarks/bench_ops.py --device cpu       # tiny shapes, Triton on the interpreter
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

TOL = 1e-2  # relative norm error; bf16 rounding of outputs and gradients is ~4e-3
Run = Callable[[dict], tuple[torch.Tensor, ...]]


# --- causal_conv1d ------------------------------------------------------------------


def conv_inputs(batch: int, dim: int, length: int, width: int, channel_last: bool, device: str) -> dict:
    g = torch.Generator().manual_seed(0)
    if channel_last:
        x = torch.randn(batch, length, 2 * dim, generator=g)[..., :dim].to(device, torch.bfloat16).transpose(1, 2)
    else:
        x = torch.randn(batch, dim, length, generator=g).to(device, torch.bfloat16)
    weight = (torch.randn(dim, width, generator=g) / math.sqrt(width)).to(device)
    return {"x": x, "weight": weight, "bias": torch.randn(dim, generator=g).to(device)}


def conv_ours(t: dict) -> tuple[torch.Tensor, ...]:
    from seqmamba.kernels import causal_conv1d

    return (causal_conv1d(t["x"], t["weight"], t["bias"], activation="silu", backend="triton"),)


def conv_reference(t: dict) -> tuple[torch.Tensor, ...]:
    from seqmamba.kernels import causal_conv1d

    return (causal_conv1d(t["x"], t["weight"], t["bias"], activation="silu", backend="reference"),)


def conv_torch(t: dict) -> tuple[torch.Tensor, ...]:
    x, dim, width = t["x"], t["weight"].shape[0], t["weight"].shape[1]
    w, b = t["weight"].to(x.dtype)[:, None, :], t["bias"].to(x.dtype)
    return (F.silu(F.conv1d(x, w, b, padding=width - 1, groups=dim)[..., : x.shape[-1]]),)


def conv_package(t: dict) -> tuple[torch.Tensor, ...]:
    from causal_conv1d import causal_conv1d_fn

    return (causal_conv1d_fn(t["x"], t["weight"], t["bias"], activation="silu"),)


# --- rms_norm -----------------------------------------------------------------------


def norm_inputs(rows: int, hidden: int, residual_fp32: bool, device: str) -> dict:
    g = torch.Generator().manual_seed(1)
    res_dtype = torch.float32 if residual_fp32 else torch.bfloat16
    return {
        "x": torch.randn(rows, hidden, generator=g).to(device, torch.bfloat16),
        "weight": (1 + 0.2 * torch.randn(hidden, generator=g)).to(device),
        "residual": (2 * torch.randn(rows, hidden, generator=g)).to(device, res_dtype),
    }


def _fp32_residual(t: dict) -> bool:
    return t["residual"].dtype == torch.float32


def norm_ours(t: dict) -> tuple[torch.Tensor, ...]:
    from seqmamba.kernels import rms_norm

    return rms_norm(t["x"], t["weight"], t["residual"], residual_in_fp32=_fp32_residual(t), backend="triton")


def norm_reference(t: dict) -> tuple[torch.Tensor, ...]:
    from seqmamba.kernels import rms_norm

    return rms_norm(t["x"], t["weight"], t["residual"], residual_in_fp32=_fp32_residual(t), backend="reference")


def norm_torch(t: dict) -> tuple[torch.Tensor, ...]:
    x = t["x"]
    new_residual = (x.float() + t["residual"].float()).to(t["residual"].dtype)
    normed = F.rms_norm(new_residual.float(), (x.shape[-1],), t["weight"], eps=1e-5).to(x.dtype)
    return normed, new_residual


def norm_mamba_ssm(t: dict) -> tuple[torch.Tensor, ...]:
    from mamba_ssm.ops.triton.layer_norm import layer_norm_fn

    return layer_norm_fn(t["x"], t["weight"], None, residual=t["residual"], eps=1e-5, prenorm=True,
                         residual_in_fp32=_fp32_residual(t), is_rms_norm=True)


# --- checking and timing ------------------------------------------------------------


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    err = ((a - b).norm() / b.norm().clamp_min(1e-30)).item()
    return err if math.isfinite(err) else math.inf


def leaves(t: dict) -> dict:
    """Copies that require grad, keeping each tensor's strides (channel-last stays a view)."""
    out = {}
    for k, v in t.items():
        if k == "x" and not v.is_contiguous():
            base = v.transpose(1, 2).detach().clone().requires_grad_(True)  # (batch, L, D) view of the slice
            out[k] = base.transpose(1, 2)
            out["_leaf_x"] = base
        else:
            out[k] = v.detach().clone().requires_grad_(True)
    return out


def forward_backward(run: Run, t: dict, grads_out: list[torch.Tensor]) -> tuple[list, list]:
    ins = leaves(t)
    outs = run(ins)
    torch.autograd.backward(list(outs), grads_out)
    params = [ins.get("_leaf_x", ins["x"])] + [v for k, v in ins.items() if k not in ("x", "_leaf_x")]
    return [o.detach() for o in outs], [p.grad for p in params]


def check(run: Run, truth: Run, t: dict) -> float:
    """Largest relative error of ``run`` against ``truth`` over outputs and input gradients."""
    g = torch.Generator().manual_seed(2)
    ref_outs = truth(t)
    grads_out = [torch.randn(o.shape, generator=g).to(o.device, o.dtype) for o in ref_outs]
    outs, grads = forward_backward(run, t, grads_out)
    outs_t, grads_t = forward_backward(truth, t, grads_out)
    return max(rel_err(a, b) for a, b in zip(outs + grads, outs_t + grads_t))


def time_ms(fn: Callable[[], object], device: str, grad_to_none: list[torch.Tensor]) -> float:
    """Median milliseconds per call; gradients are reset between calls, not accumulated."""
    if device == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, warmup=25, rep=100, grad_to_none=grad_to_none, return_mode="median")
    times = []
    for _ in range(4):  # the first is a warm-up
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        for t in grad_to_none:
            t.grad = None
    return 1e3 * statistics.median(times[1:])


def kernel_ms(fn: Callable[[], object], grad_to_none: list[torch.Tensor]) -> float:
    """GPU kernel time per call (torch.profiler, 10 calls); gradients reset between calls."""
    from kernel_profile import kernel_ms_per_call

    def call() -> None:
        fn()
        for t in grad_to_none:
            t.grad = None

    return kernel_ms_per_call(call, calls=10)


def bench(name: str, impls: dict[str, Run], t: dict, fwd_bytes: int, device: str, rows: list) -> bool:
    """Checks each implementation against the reference, then times it; True if all agree."""
    ok = True
    truth = impls["reference"]
    for impl, run in impls.items():
        try:
            err = check(run, truth, t)
        except (ImportError, RuntimeError, ValueError, TypeError, NotImplementedError) as e:
            rows.append((name, impl, "-", "-", "-", "-", "-", f"unavailable: {type(e).__name__}: {str(e)[:60]}"))
            continue
        agree = err <= TOL
        ok &= agree
        ins = leaves(t)
        grads_out = [torch.ones_like(o) for o in run(ins)]
        params = [v for k, v in ins.items() if v.is_leaf]
        fwd = time_ms(lambda: run(ins), device, params)
        def step() -> None:
            torch.autograd.backward(list(run(ins)), grads_out)

        fwd_bwd = time_ms(step, device, params)
        kernels = kernel_ms(step, params) if device == "cuda" else None
        gbs = fwd_bytes / (fwd * 1e-3) / 1e9
        rows.append((name, impl, f"{fwd:.4f}", f"{fwd_bwd:.4f}", "-" if kernels is None else f"{kernels:.4f}",
                     f"{gbs:.0f}", f"{err:.1e}",
                     "ok" if agree else "DISAGREES"))
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, help="default 8 (cuda), 2 (cpu)")
    p.add_argument("--length", type=int, help="default 2048 (cuda), 33 (cpu)")
    p.add_argument("--dim", type=int, help="conv channels D; default 1536 (cuda), 40 (cpu)")
    p.add_argument("--hidden", type=int, help="norm width; default 768 (cuda), 48 (cpu)")
    p.add_argument("--width", type=int, default=4)
    args = p.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here; use --device cpu")
    if not cuda:
        os.environ["TRITON_INTERPRET"] = "1"  # before the kernels are first imported
    batch = args.batch or (8 if cuda else 2)
    length = args.length or (2048 if cuda else 33)
    dim = args.dim or (1536 if cuda else 40)
    hidden = args.hidden or (768 if cuda else 48)

    conv_impls = {"reference": conv_reference, "ours": conv_ours, "torch": conv_torch, "package": conv_package}
    norm_impls = {"reference": norm_reference, "ours": norm_ours, "torch": norm_torch, "mamba_ssm": norm_mamba_ssm}
    rows: list = []
    ok = True
    elems = batch * dim * length
    for channel_last in (False, True):
        t = conv_inputs(batch, dim, length, args.width, channel_last, args.device)
        name = f"conv {batch}x{dim}x{length} w{args.width} {'channel-last' if channel_last else 'contiguous'}"
        ok &= bench(name, conv_impls, t, 4 * elems, args.device, rows)
    n_rows = batch * length
    for residual_fp32 in (True, False):
        t = norm_inputs(n_rows, hidden, residual_fp32, args.device)
        res_bytes = 4 if residual_fp32 else 2
        fwd_bytes = n_rows * hidden * (2 + res_bytes + 2 + res_bytes)
        name = f"rms_norm {n_rows}x{hidden} residual {'fp32' if residual_fp32 else 'bf16'}"
        ok &= bench(name, norm_impls, t, fwd_bytes, args.device, rows)

    device = torch.cuda.get_device_name() if cuda else "CPU (Triton interpreter)"
    print(f"device: {device}; torch {torch.__version__}; bf16 activations, fp32 parameters")
    header = ("case", "impl", "fwd ms", "fwd+bwd ms", "fwd+bwd kernels ms", "fwd GB/s", "max rel err", "check")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for r in [header, tuple("-" * w for w in widths)] + rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
