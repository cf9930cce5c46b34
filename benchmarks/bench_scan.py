"""Selective scan side by side: seqmamba's Triton kernel, mamba_ssm's CUDA kernel, the reference.

Times the forward and forward+backward of

    selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True)

with bf16 u, delta, z, B, C and fp32 A, D, delta_bias; B and C input-dependent,
(batch, N, L). Implementations:

    ours       seqmamba.kernels.selective_scan(..., backend="triton")
    mamba_ssm  mamba_ssm's selective_scan_fn (when importable; CUDA only)
    reference  seqmamba.kernels.selective_scan(..., backend="reference"), only up to
               --reference-max-len steps (it loops over steps in Python)

Before timing, each implementation's output and gradients are compared with the
reference on a slice of the inputs (first --check-batch rows, first --check-len steps),
and ours with mamba_ssm at the full shape. Timings are medians of CUDA-event timings
(triton.testing.do_bench); on the CPU, medians of wall-clock runs. Effective GB/s counts
the fewest bytes a forward must move: u, delta, z read and y written (2 bytes each per
(b, d, l)) plus B and C read (2 bytes each per (b, n, l)).

    python benchmarks/bench_scan.py                                   # the four shapes, CUDA
    python benchmarks/bench_scan.py --shapes 8x1536x2048x16 --impls ours,mamba_ssm --out r.json
    python benchmarks/bench_scan.py --device cpu --shapes tiny        # smoke test, no GPU needed
    python benchmarks/bench_scan.py --impls ours,mamba_ssm --ours-launch autoa/autoa,autoa@128/autoa@168
                                               # rows of our scan with other launch shapes too

Prints one table, then a markdown version for benchmarks/RESULTS.md. Exits with status 1
if any implementation disagrees with the reference (or ours with mamba_ssm).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import itertools
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import torch

from kernel_profile import format_kernels, profile_step, rank_kernels
from seqmamba.kernels import selective_scan

SHAPES = {  # name -> (batch, D, L, N)
    "tiny": (2, 16, 37, 8),
    "8x1536x2048x16": (8, 1536, 2048, 16),
    "8x4096x2048x16": (8, 4096, 2048, 16),
    "4x1536x16384x16": (4, 1536, 16384, 16),
    "1x1536x131072x16": (1, 1536, 131072, 16),
}
GPU_SHAPES = ("8x1536x2048x16", "8x4096x2048x16", "4x1536x16384x16", "1x1536x131072x16")
IMPLS = ("ours", "mamba_ssm", "reference")
FWD_TOL = 1e-2  # bf16 output rounding is ~4e-3 relative
GRAD_TOL = 5e-2  # bf16 gradients of u, delta, z, B, C; fp32 sums over long sequences for A, D, bias


@dataclasses.dataclass
class Inputs:
    """u, delta, z: (batch, D, L) bf16; A: (D, N); B, C: (batch, N, L) bf16; D, delta_bias: (D,)."""

    u: torch.Tensor
    delta: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    D: torch.Tensor
    z: torch.Tensor
    delta_bias: torch.Tensor

    def tensors(self) -> list[torch.Tensor]:
        return [getattr(self, f.name) for f in dataclasses.fields(self)]

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Inputs:
        return Inputs(*(fn(t) for t in self.tensors()))

    def sliced(self, batch: int, length: int) -> Inputs:
        """The first ``batch`` rows and ``length`` steps (A, D, delta_bias unchanged)."""
        return Inputs(
            self.u[:batch, :, :length], self.delta[:batch, :, :length], self.A, self.B[:batch, :, :length],
            self.C[:batch, :, :length], self.D, self.z[:batch, :, :length], self.delta_bias,
        )

    def leaves(self) -> Inputs:
        """Contiguous copies that require grad."""
        return self.map(lambda t: t.detach().clone().contiguous().requires_grad_(True))


def make_inputs(shape: tuple[int, int, int, int], device: str, seed: int) -> Inputs:
    """Random inputs shaped like a trained Mamba layer's (never zeros).

    delta_bias puts softplus(delta + bias) around dt in [1e-3, 1e-1] (Mamba's dt init);
    A = -exp(log(1..N) + noise) stays near the S4D-real init a trained model keeps.
    """
    batch, dim, length, n = shape
    g = torch.Generator(device="cpu").manual_seed(seed)
    bf16 = torch.bfloat16

    def randn(*size: int) -> torch.Tensor:
        return torch.randn(*size, generator=g)

    dt = torch.exp(torch.rand(dim, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    x = Inputs(
        u=randn(batch, dim, length).to(bf16),
        delta=(0.5 * randn(batch, dim, length)).to(bf16),
        A=-torch.exp(torch.log(torch.arange(1, n + 1, dtype=torch.float32)) + 0.1 * randn(dim, n)),
        B=randn(batch, n, length).to(bf16),
        C=randn(batch, n, length).to(bf16),
        D=randn(dim),
        z=randn(batch, dim, length).to(bf16),
        delta_bias=dt + torch.log(-torch.expm1(-dt)),  # inverse softplus
    )
    return x.map(lambda t: t.to(device))


def run_ours(x: Inputs) -> torch.Tensor:
    return selective_scan(
        x.u, x.delta, x.A, x.B, x.C, D=x.D, z=x.z, delta_bias=x.delta_bias, delta_softplus=True, backend="triton"
    )


def run_reference(x: Inputs) -> torch.Tensor:
    return selective_scan(
        x.u, x.delta, x.A, x.B, x.C, D=x.D, z=x.z, delta_bias=x.delta_bias, delta_softplus=True, backend="reference"
    )


def run_mamba_ssm(x: Inputs) -> torch.Tensor:
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    return selective_scan_fn(x.u, x.delta, x.A, x.B, x.C, x.D, x.z, x.delta_bias, delta_softplus=True)


RUNNERS: dict[str, Callable[[Inputs], torch.Tensor]] = {
    "ours": run_ours, "mamba_ssm": run_mamba_ssm, "reference": run_reference,
}


def is_ours(name: str) -> bool:
    """Whether a row runs our scan: 'ours', or 'ours[FWD/BWD]' with other launch shapes."""
    return name == "ours" or name.startswith("ours[")


def runner(name: str) -> Callable[[Inputs], torch.Tensor]:
    """The function an implementation's row runs."""
    return RUNNERS["ours" if is_ours(name) else name]


def launch_shapes(name: str) -> contextlib.AbstractContextManager:
    """Where an implementation's row runs: ours[FWD/BWD] with the scan's launch shapes
    FWD and BWD as scan_tuning.py names them (an empty side keeps the default's choice),
    every other row as it is."""
    if not name.startswith("ours["):
        return contextlib.nullcontext()
    from scan_tuning import scan_launch_shapes

    fwd, _, bwd = name[len("ours["):-1].partition("/")
    return scan_launch_shapes(fwd or None, bwd or None)


def unavailable_reason(name: str, device: str) -> str | None:
    """Why implementation ``name`` cannot run on ``device`` (None if it can)."""
    if name == "mamba_ssm" and device != "cuda":
        return "mamba_ssm runs on CUDA only"
    try:
        runner(name)(make_inputs(SHAPES["tiny"], device, seed=0))
    except ImportError as e:
        return f"{name} is not importable ({e})"
    except (ValueError, NotImplementedError, RuntimeError) as e:
        return f"{name} cannot run here ({type(e).__name__}: {e})"
    return None


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a - b‖ / ‖b‖ in float64; NaN anywhere gives inf."""
    a, b = a.detach().double(), b.detach().double()
    err = ((a - b).norm() / b.norm().clamp_min(1e-30)).item()
    return err if math.isfinite(err) else math.inf


def forward_backward(run: Callable[[Inputs], torch.Tensor], x: Inputs, grad_out: torch.Tensor):
    """(out, grads of every input) for ``run`` on fresh leaf copies of ``x``.

    grads is a string saying why when ``run`` has no backward (a forward-only kernel).
    """
    leaves = x.leaves()
    out = run(leaves)
    try:
        out.backward(grad_out)
    except (RuntimeError, NotImplementedError) as e:
        return out.detach(), f"no backward ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    return out.detach(), [t.grad for t in leaves.tensors()]


def compare(run: Callable[[Inputs], torch.Tensor], truth: Callable[[Inputs], torch.Tensor], x: Inputs, seed: int):
    """(forward rel err, largest gradient rel err) of ``run`` against ``truth`` on ``x``.

    The gradient error is None when ``run`` has no backward.
    """
    g = torch.Generator(device="cpu").manual_seed(seed)
    grad_out = torch.randn(x.u.shape, generator=g).to(device=x.u.device, dtype=x.u.dtype)
    out, grads = forward_backward(run, x, grad_out)
    out_t, grads_t = forward_backward(truth, x, grad_out)
    assert not isinstance(grads_t, str), grads_t
    if isinstance(grads, str):
        print(f"  {grads}: checking and timing the forward only", flush=True)
        return rel_err(out, out_t), None
    return rel_err(out, out_t), max(rel_err(a, b) for a, b in zip(grads, grads_t))


def _within(fwd_err: float, grad_err: float | None) -> bool:
    return fwd_err <= FWD_TOL and (grad_err is None or grad_err <= GRAD_TOL)


def time_ms(fn: Callable[[], object], device: str, grad_to_none: Sequence[torch.Tensor] | None = None,
            cpu_budget_s: float = 0.5) -> float:
    """Median milliseconds per call of ``fn``."""
    if device == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, warmup=25, rep=100, grad_to_none=grad_to_none, return_mode="median")
    fn()  # warm-up
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (len(times) < 20 and time.perf_counter() - start < cpu_budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if grad_to_none:
            for t in grad_to_none:
                t.grad = None
    return 1e3 * statistics.median(times)


def input_sets(shape: tuple[int, int, int, int], device: str, seed: int) -> list[Inputs]:
    """Enough distinct input sets that rotating through them defeats the L2 cache."""
    first = make_inputs(shape, device, seed)
    n_sets = 1
    if device == "cuda":
        l2 = torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size
        set_bytes = sum(t.numel() * t.element_size() for t in first.tensors())
        n_sets = min(8, max(1, math.ceil(2 * l2 / set_bytes)))
    return [first] + [make_inputs(shape, device, seed + 1000 * i) for i in range(1, n_sets)]


def forward_bytes(shape: tuple[int, int, int, int]) -> int:
    batch, dim, length, n = shape
    return 2 * 4 * batch * dim * length + 2 * 2 * batch * n * length


def bench_shape(shape, impls: Sequence[str], args) -> list[dict]:
    """One record per implementation at ``shape``: checks first, then timings."""
    batch, dim, length, n = shape
    sets = input_sets(shape, args.device, args.seed)
    small = sets[0].sliced(min(batch, args.check_batch), min(length, args.check_len))
    records = []
    for name in impls:
        rec: dict = {"shape": list(shape), "impl": name}
        if name == "reference" and length > args.reference_max_len:
            rec["skipped"] = f"L={length} > --reference-max-len {args.reference_max_len} (steps run in Python)"
            records.append(rec)
            continue
        if name != "reference":
            with launch_shapes(name):
                rec["fwd_err"], rec["grad_err"] = compare(runner(name), run_reference, small, args.seed)
                rec["ok"] = _within(rec["fwd_err"], rec["grad_err"])
                if is_ours(name) and "mamba_ssm" in impls:  # and at the full shape
                    rec["fwd_err_vs_mamba_ssm"], rec["grad_err_vs_mamba_ssm"] = compare(
                        runner(name), run_mamba_ssm, sets[0], args.seed + 1
                    )
                    rec["ok"] = rec["ok"] and _within(rec["fwd_err_vs_mamba_ssm"], rec["grad_err_vs_mamba_ssm"])
        records.append(rec)

    grad_out = torch.randn_like(sets[0].u)
    leaf_sets = [x.leaves() for x in sets] if "fwdbwd" in args.modes else []
    leaves = [t for x in leaf_sets for t in x.tensors()]
    for rec in records:
        if "skipped" in rec:
            continue
        run = runner(rec["impl"])
        with launch_shapes(rec["impl"]):
            if "fwd" in args.modes:
                cycle = itertools.cycle(sets)

                def fwd() -> None:
                    with torch.no_grad():
                        run(next(cycle))

                rec["fwd_ms"] = time_ms(fwd, args.device)
                rec["fwd_gbps"] = forward_bytes(shape) / rec["fwd_ms"] / 1e6
            if "fwdbwd" in args.modes and rec.get("grad_err", 0.0) is not None:
                cycle_grad = itertools.cycle(leaf_sets)

                def fwdbwd() -> None:
                    run(next(cycle_grad)).backward(grad_out)

                rec["fwdbwd_ms"] = time_ms(fwdbwd, args.device, grad_to_none=leaves)
                if args.profile:
                    print_fwdbwd_kernels(rec["impl"], shape, fwdbwd, leaves, args.profile)
    anchor = next((r for r in records if r["impl"] == "mamba_ssm" and "skipped" not in r), None)
    for rec in records:
        for mode in ("fwd", "fwdbwd"):
            if anchor and f"{mode}_ms" in rec and f"{mode}_ms" in anchor:
                rec[f"{mode}_speedup_vs_mamba_ssm"] = anchor[f"{mode}_ms"] / rec[f"{mode}_ms"]
    return records


def print_fwdbwd_kernels(name: str, shape, fwdbwd: Callable[[], None], leaves: Sequence[torch.Tensor], rows: int) -> None:
    """Where one forward + backward's device time goes: its ``rows`` costliest kernels
    (the small ones around the scan's own, zeroing and casting, included)."""
    for t in leaves:
        t.grad = None
    ranked = rank_kernels(profile_step(fwdbwd))
    print(f"  one forward + backward of {name} at {tuple(shape)}: {sum(n for _, _, n in ranked)} launches, "
          f"{sum(us for _, us, _ in ranked) / 1e3:.3f} ms of kernel time", flush=True)
    print(format_kernels(ranked, rows), flush=True)


def _speedup(v: float) -> str:
    """2.00x, or 1/830x for something 830 times slower."""
    return f"{v:.2f}x" if v >= 0.1 else f"1/{1 / v:.0f}x"


COLUMNS = (  # header, record key, format
    ("batch, D, L, N", "shape", lambda s: ", ".join(map(str, s))),
    ("impl", "impl", str),
    ("fwd ms", "fwd_ms", lambda v: f"{v:.3f}"),
    ("fwd GB/s", "fwd_gbps", lambda v: f"{v:.0f}" if v >= 10 else f"{v:.2g}"),
    ("fwd+bwd ms", "fwdbwd_ms", lambda v: f"{v:.3f}"),
    ("fwd speedup", "fwd_speedup_vs_mamba_ssm", lambda v: _speedup(v)),
    ("fwd+bwd speedup", "fwdbwd_speedup_vs_mamba_ssm", lambda v: _speedup(v)),
    ("rel err out / grads", "fwd_err", None),
)


def _cells(rec: dict) -> list[str]:
    cells = []
    for _, key, fmt in COLUMNS:
        if key == "fwd_err":
            if "fwd_err" in rec:
                grad = "no bwd" if rec["grad_err"] is None else f"{rec['grad_err']:.1e}"
                cell = f"{rec['fwd_err']:.1e} / {grad}" + ("" if rec["ok"] else " MISMATCH")
            else:
                cell = "skipped" if "skipped" in rec else "-"
        else:
            cell = fmt(rec[key]) if key in rec else "-"
        cells.append(cell)
    return cells


LEGEND = (
    "speedup = mamba_ssm's time / this time (above 1: faster than mamba_ssm); rel err = ‖out - ref‖ / ‖ref‖ "
    "of the output and the worst input gradient against the reference on the checked slice"
)


def format_tables(records: Sequence[dict]) -> tuple[str, str]:
    """(aligned plain-text table, markdown table)."""
    headers = [h for h, _, _ in COLUMNS]
    rows = [_cells(r) for r in records]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    plain = "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in [headers, ["-" * w for w in widths], *rows]
    )
    md = "\n".join("| " + " | ".join(row) + " |" for row in [headers, ["---"] * len(headers), *rows])
    return plain, md


def environment(device: str) -> dict:
    env = {"date": datetime.date.today().isoformat(), "torch": torch.__version__, "device": device}
    if device == "cuda":
        from seqmamba.kernels import dependent_launch

        env["device"] = torch.cuda.get_device_name()
        # The decode step's kernels run as dependent launches unless switched off.
        env["dependent_launch"] = dependent_launch.enabled_for(torch.device("cuda"))
    for module in ("triton", "mamba_ssm"):
        try:
            env[module] = __import__(module).__version__
        except ImportError:
            pass
    return env


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default=None,
                   help=f"comma-separated names from {sorted(SHAPES)} or BxDxLxN; default: the four GPU shapes "
                        "on CUDA, 'tiny' on the CPU")
    p.add_argument("--impls", default=",".join(IMPLS), help=f"comma-separated subset of {IMPLS}")
    p.add_argument("--modes", default="fwd,fwdbwd", help="comma-separated subset of fwd,fwdbwd")
    p.add_argument("--ours-launch", default="",
                   help="comma-separated FWD/BWD launch shapes of our scan, named as scan_tuning.py's --configs "
                        "and --bwd-configs name them (e.g. autoa/autoa@168; an empty side keeps the default's "
                        "choice); each adds a row 'ours[FWD/BWD]' beside the others")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cuda", "cpu"))
    p.add_argument("--reference-max-len", type=int, default=2048, help="time the reference only up to this L")
    p.add_argument("--check-len", type=int, default=256, help="steps of the slice checked against the reference")
    p.add_argument("--check-batch", type=int, default=2, help="rows of the slice checked against the reference")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the records and environment as JSON to this file")
    p.add_argument("--profile", type=int, default=0, metavar="K",
                   help="also profile one forward + backward per shape and implementation (CUDA): print its K "
                        "costliest kernels")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available; use --device cpu")
    if args.profile and args.device != "cuda":
        p.error("--profile ranks CUDA kernels: it needs --device cuda")
    args.shapes = [s for s in (args.shapes or ("tiny" if args.device == "cpu" else ",".join(GPU_SHAPES))).split(",")]
    for s in args.shapes:
        if s not in SHAPES and not _parse_shape(s):
            p.error(f"--shapes: unknown shape {s!r}; use one of {sorted(SHAPES)} or BxDxLxN, e.g. 2x64x300x16")
    args.impls = args.impls.split(",")
    args.modes = args.modes.split(",")
    for name, given, allowed in (("--impls", args.impls, IMPLS), ("--modes", args.modes, ("fwd", "fwdbwd"))):
        if not given or any(x not in allowed for x in given):
            p.error(f"{name}: got {','.join(given)!r}; choose from {','.join(allowed)}")
    for spec in filter(None, args.ours_launch.split(",")):
        problem = _launch_problem(spec)
        if problem:
            p.error(f"--ours-launch: {spec!r}: {problem}")
        args.impls.append(f"ours[{spec}]")
    return args


def _launch_problem(spec: str) -> str | None:
    """Why ``spec`` is not a FWD/BWD pair of launch shapes (None if it is)."""
    from scan_tuning import parse_config

    from seqmamba.kernels.selective_scan import triton_bwd, triton_fwd

    fwd, slash, bwd = spec.partition("/")
    if not slash:
        return "write FWD/BWD, e.g. autoa/autoa@168 (an empty side keeps the default's choice)"
    for side, cls in ((fwd, triton_fwd.FwdConfig), (bwd, triton_bwd.BwdConfig)):
        try:
            if side:
                parse_config(cls, side)
        except (ValueError, TypeError) as e:
            return f"{side!r} is not a launch shape as scan_tuning.py names them ({e})"
    return None


def _parse_shape(s: str) -> tuple[int, int, int, int] | None:
    parts = s.split("x")
    if len(parts) != 4 or not all(x.isdigit() and int(x) > 0 for x in parts):
        return None
    return tuple(int(x) for x in parts)  # type: ignore[return-value]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    impls = []
    for name in args.impls:
        reason = unavailable_reason(name, args.device)
        if reason:
            print(f"skipping {name}: {reason}", flush=True)
        else:
            impls.append(name)
    if not impls:
        print("nothing to run: no requested implementation is available", file=sys.stderr)
        return 1
    records = []
    for s in args.shapes:
        shape = SHAPES.get(s) or _parse_shape(s)
        print(f"benchmarking (batch, D, L, N) = {shape}: {', '.join(impls)}", flush=True)
        records += bench_shape(shape, impls, args)
        if args.device == "cuda":
            torch.cuda.empty_cache()
    env = environment(args.device)
    plain, md = format_tables(records)
    for rec in records:
        if "skipped" in rec:
            print(f"skipped {rec['impl']} at {tuple(rec['shape'])}: {rec['skipped']}")
    print(f"\n{env}\n{LEGEND}\n\n{plain}\n\nmarkdown:\n\n{md}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"environment": env, "args": vars(args), "records": records}, f, indent=1)
    failed = [r for r in records if r.get("ok") is False]
    for r in failed:
        print(f"MISMATCH: {r['impl']} at {tuple(r['shape'])}: {r}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
