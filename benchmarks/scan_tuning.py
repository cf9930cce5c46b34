"""Selective-scan kernel tuning: checks and times launch variants of the Triton kernels.

Runs on a CUDA machine; mamba_ssm's CUDA kernel is timed beside them when it imports.
Prints one table: shape, variant, forward ms (and forward+backward ms), error against
the anchor (or the reference when mamba_ssm is absent). The official side-by-side
table is benchmarks/bench_scan.py; this script is for choosing launch shapes.

    python benchmarks/scan_tuning.py [--shapes 8,1536,2048,16 ...] [--backward]
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
from collections.abc import Iterator

import torch
import triton

from seqmamba.kernels import selective_scan
from seqmamba.kernels.selective_scan import triton_bwd, triton_fwd

SHAPES = ((8, 1536, 2048, 16), (8, 4096, 2048, 16), (4, 1536, 16384, 16), (1, 1536, 131072, 16))


def make_inputs(batch: int, dim: int, length: int, n_state: int, *, requires_grad: bool = False) -> dict:
    """bf16 u/delta/z/B/C, fp32 A/D/delta_bias, B and C (batch, N, L): the benchmark's inputs."""
    dev, bf = "cuda", torch.bfloat16
    x = dict(
        u=torch.randn(batch, dim, length, device=dev, dtype=bf),
        delta=(torch.randn(batch, dim, length, device=dev) * 0.5 - 1.0).to(bf),
        A=-torch.exp(torch.randn(dim, n_state, device=dev) * 0.5),
        B=torch.randn(batch, n_state, length, device=dev, dtype=bf),
        C=torch.randn(batch, n_state, length, device=dev, dtype=bf),
        D=torch.randn(dim, device=dev),
        z=torch.randn(batch, dim, length, device=dev, dtype=bf),
        delta_bias=torch.randn(dim, device=dev) * 0.1,
    )
    if requires_grad:
        for v in x.values():
            v.requires_grad_(True)
    return x


SUFFIXES = {
    "p": ("prefetch", True), "s": ("scattered_sums", True), "a": ("delta_ahead", True), "n": ("delta_ahead", False),
    "h": ("sum_groups", 2), "q": ("sum_groups", 4), "c": ("add_copies", 2), "C": ("add_copies", 4),
    "f": ("late_loads", True), "v": ("overlap", True), "w": ("first_pass", (32, 8)),
    "e": ("fma_exp_steps", 1), "E": ("fma_exp_steps", 2), "x": ("first_pass_fma_exp_steps", 1),
    "X": ("first_pass_fma_exp_steps", 2), "y": ("fma_exp_half", True),
    "j": ("seg_fma_exp_steps", 1), "J": ("seg_fma_exp_steps", 2), "k": ("seg_fma_exp_half", True),
    "g": ("time_groups", 2), "G": ("time_groups", 4), "K": ("time_groups", 8),
}


@dataclasses.dataclass(frozen=True)
class Auto:
    """The default launch shape for the inputs, with some fields changed ('auto' + letters)."""

    changes: tuple[tuple[str, object], ...] = ()


def parse_config(cls, text: str):
    """'auto' (None), 'auto' followed by letters (an Auto), or BLOCKDxCHUNKxWARPS[xSEGLEN]
    followed by letters: p turns on prefetching (each chunk's tiles loaded an iteration
    ahead), a makes each chunk's delta an iteration ahead (forward with p, and backward)
    and n next to its use, s makes the backward sum dB and dC by scattered exchanges, h / q
    add them per 2 / 4 groups of channels and c / C into 2 / 4 copies of their buffer, f
    makes the forward load delta, u and z two chunks ahead and make each chunk's delta and
    gate at the top of the iteration before, v overlaps a split L's two kernels (forward and backward),
    w runs a split forward's first pass in programs of 32 channels and 8-step chunks,
    e / E compute the decays of the last 1 / 2 steps of each chunk on the FMA pipe (x / X:
    in a split forward's first pass; y: the first half of their states only), j / J / k the same in
    a split backward's first pass (k: half the states); g / G / K run the forward in
    chunks of 2 / 4 / 8 groups of CHUNK steps over lanes (triton_fwd_groups);
    '@REGS' at the end caps the registers per thread."""
    text, _, regs = text.partition("@")
    if text == "auto" and not regs:
        return None
    shape = text.rstrip("".join(SUFFIXES))
    changes = tuple(SUFFIXES[letter] for letter in text[len(shape):])
    if regs:
        changes += (("maxnreg", int(regs)),)
    if shape == "auto":
        return Auto(changes)
    cfg = cls(*map(int, shape.split("x")))
    return dataclasses.replace(cfg, **dict(changes))


def resolve(cfg, default):
    """An Auto made concrete from ``default()``, the defaults' choice; other configs as they are."""
    return dataclasses.replace(default(), **dict(cfg.changes)) if isinstance(cfg, Auto) else cfg


@contextlib.contextmanager
def scan_launch_shapes(fwd: str | None = None, bwd: str | None = None) -> Iterator[None]:
    """The scan's forward and backward launch shapes named as --configs and --bwd-configs
    name them (``None``: the defaults' choice), for every call made inside."""
    saved = triton_fwd.fwd_config, triton_bwd.bwd_config

    def chosen(cfg, default):  # the named shape, or the default's choice (changed by an 'auto...')
        return lambda *a, **k: resolve(cfg, lambda: default(*a, **k)) if cfg is not None else default(*a, **k)

    if fwd is not None:
        triton_fwd.fwd_config = chosen(parse_config(triton_fwd.FwdConfig, fwd), saved[0])
    if bwd is not None:
        triton_bwd.bwd_config = chosen(parse_config(triton_bwd.BwdConfig, bwd), saved[1])
    try:
        yield
    finally:
        triton_fwd.fwd_config, triton_bwd.bwd_config = saved


def variant_name(kind: str, cfg) -> str:
    """'fwd auto', 'bwd auto +s', 'fwd bd16 T16 w1 S2048 pf', ... for the table."""
    if cfg is None or isinstance(cfg, Auto):
        letters = "".join(k for k, change in SUFFIXES.items() if cfg is not None and change in cfg.changes)
        regs = dict(cfg.changes).get("maxnreg") if cfg is not None else None
        return f"{kind} auto" + (f" +{letters}" if letters else "") + (f" r{regs}" if regs else "")
    name = f"{kind} bd{cfg.block_d} T{cfg.chunk} w{cfg.num_warps}"
    if cfg.seg_len is not None:
        name += f" S{cfg.seg_len}"
    if getattr(cfg, "prefetch", False):
        name += " pf"
    if getattr(cfg, "scattered_sums", False):
        name += " scattered"
    if getattr(cfg, "delta_ahead", False):
        name += " delta-ahead"
    if getattr(cfg, "late_loads", False):
        name += " late-loads"
    if getattr(cfg, "first_pass", None):
        name += " first-pass-%dx%d" % cfg.first_pass
    if getattr(cfg, "fma_exp_steps", 0) or getattr(cfg, "first_pass_fma_exp_steps", 0):
        name += f" fma-exp-{cfg.fma_exp_steps}/{cfg.first_pass_fma_exp_steps}" + ("-half" if cfg.fma_exp_half else "")
    if getattr(cfg, "time_groups", 1) > 1:
        name += f" groups{cfg.time_groups}"
    if getattr(cfg, "seg_fma_exp_steps", 0):
        name += f" seg-fma-exp-{cfg.seg_fma_exp_steps}" + ("-half" if cfg.seg_fma_exp_half else "")
    if cfg.maxnreg is not None:
        name += f" r{cfg.maxnreg}"
    return name


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


# --untimed: each variant runs a fixed number of times and nothing is timed, so that a
# profiler (ncu -k regex:_fwd_kernel) sees the same few launches of every variant.
UNTIMED_CALLS = 0


def bench(fn, *, rep_ms: int = 200) -> float:
    if UNTIMED_CALLS:
        for _ in range(UNTIMED_CALLS):
            fn()
        return float("nan")
    return triton.testing.do_bench(fn, warmup=25, rep=rep_ms, return_mode="median")


def forward_variants(x: dict, configs: list[triton_fwd.FwdConfig]) -> list[tuple[str, float, torch.Tensor]]:
    rows = []
    batch, dim, length = x["u"].shape
    block_n = triton.next_power_of_2(x["A"].shape[1])
    for spec in configs:
        cfg = resolve(spec, lambda: triton_fwd.fwd_config(batch, dim, block_n, length=length, align=1))

        def run(cfg=cfg):
            return triton_fwd.scan_fwd(
                x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True, None,
                save_every=None, config=cfg,
            )
        out, final, _ = run()
        rows.append((variant_name("fwd", spec), bench(run), out, final))
    return rows


def backward_variants(
    x: dict, configs: list[triton_bwd.BwdConfig | None], save_every: int
) -> list[tuple[str, float, float]]:
    """Times the forward that saves states every ``save_every`` steps, then the backward
    kernel alone from those states per launch shape; error of each gradient set against
    the first config's."""
    def forward():
        return triton_fwd.scan_fwd(
            x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True, None,
            save_every=save_every,
        )

    _, _, states = forward()
    rows = [(f"fwd auto, saving/{save_every}", bench(forward), 0.0)]
    dout = torch.randn_like(x["u"])
    dfinal = torch.randn(x["u"].shape[0], x["u"].shape[1], x["A"].shape[1], device=x["u"].device)
    first = None
    batch, dim, length = x["u"].shape
    block_n = triton.next_power_of_2(x["A"].shape[1])
    for spec in configs:
        cfg = resolve(spec, lambda: triton_bwd.bwd_config(batch, dim, block_n, length=length, align=save_every))

        def run(cfg=cfg):
            return triton_bwd.scan_bwd(
                x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True,
                states, save_every, dout, dfinal, config=cfg,
            )
        grads = run()
        first = first if first is not None else grads
        err = max(rel(g, f) for g, f in zip(grads, first) if g is not None)
        rows.append((variant_name("bwd", spec) + f" /{save_every}", bench(run), err))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", nargs="*", default=[",".join(map(str, s)) for s in SHAPES])
    parser.add_argument("--backward", action="store_true")
    parser.add_argument("--n-contig", action="store_true", help="also time B and C laid out N-contiguous")
    parser.add_argument("--configs", default="auto,32x8x1,16x8x1", help="auto[letters] or BLOCKDxCHUNKxWARPS[xSEGLEN][letters] (SEGLEN: steps per segment of a split L; p: prefetch, a: delta made an iteration ahead, f: delta, u, z loaded two chunks ahead, delta and gate made at the top of the iteration before, v: a split L's two passes overlapped, w: a split L's first pass 32 channels x 8 steps, e / E: the last 1 / 2 steps' decays on the FMA pipe, x / X: the same in a split L's first pass, y: half their states, g / G / K: chunks of 2 / 4 / 8 groups of CHUNK steps over lanes), each optionally @REGS (a cap on registers per thread), comma-separated")
    parser.add_argument("--bwd-configs", default="", help="backward launch shapes to time alone: auto[letters] or BLOCKDxCHUNKxWARPS[xSEGLEN][letters] (p: tiles prefetched, s: dB and dC summed by scattered exchanges instead of tl.sum's butterfly, h / q: added per 2 / 4 channel groups, c / C: into 2 / 4 buffer copies, a: delta made an iteration ahead, v: a split L's two kernels overlapped, the last segment's programs first, j / J: the last 1 / 2 steps' decays of a split L's first pass on the FMA pipe, k: half their states), each optionally @REGS")
    parser.add_argument("--save-every", default="64", help="steps between the states the forward saves for the backward "
                        "(multiples of both kernels' chunks), comma-separated: each is timed with every --bwd-configs entry")
    parser.add_argument("--untimed", type=int, default=0, metavar="CALLS",
                        help="call each variant CALLS times after its first and time nothing (for ncu)")
    args = parser.parse_args()
    global UNTIMED_CALLS
    UNTIMED_CALLS = args.untimed
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError:
        selective_scan_fn = None
    configs = [parse_config(triton_fwd.FwdConfig, c) for c in args.configs.split(",")]
    table = []

    def add(row: tuple) -> None:  # printed at once too, so a run cut off still shows its rows
        table.append(row)
        print(*row, flush=True)

    for shape in args.shapes:
        batch, dim, length, n_state = map(int, shape.split(","))
        torch.manual_seed(0)
        x = make_inputs(batch, dim, length, n_state)
        if selective_scan_fn is not None:
            def anchor():
                return selective_scan_fn(
                    x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"],
                    delta_softplus=True, return_last_state=True,
                )
            ref_out, ref_final = anchor()
            add((shape, "mamba_ssm fwd", bench(anchor), 0.0, 0.0))
        else:
            ref_out, ref_final = selective_scan(
                **x, delta_softplus=True, return_final_state=True, backend="reference"
            )
        for name, ms, out, final in forward_variants(x, configs):
            add((shape, name, ms, rel(out, ref_out), rel(final, ref_final)))
        # B and C with N contiguous (how the Mamba block's projection lays them out).
        xt = dict(x, B=x["B"].transpose(1, 2).contiguous().transpose(1, 2), C=x["C"].transpose(1, 2).contiguous().transpose(1, 2))
        for name, ms, out, final in forward_variants(xt, configs[:1]) if args.n_contig else ():
            add((shape, name + " BC n-contig", ms, rel(out, ref_out), rel(final, ref_final)))
        if args.bwd_configs:
            bwd_cfgs = [parse_config(triton_bwd.BwdConfig, c) for c in args.bwd_configs.split(",")]
            for save_every in map(int, args.save_every.split(",")):
                for name, ms, err in backward_variants(x, bwd_cfgs, save_every):
                    add((shape, name, ms, err, 0.0))
        if args.backward:
            xg = make_inputs(batch, dim, length, n_state, requires_grad=True)
            dout = torch.randn_like(xg["u"])

            def fwd_bwd_triton():
                out = selective_scan(**xg, delta_softplus=True, backend="triton")
                out.backward(dout)

            add((shape, "triton fwd+bwd", bench(fwd_bwd_triton), 0.0, 0.0))
            if selective_scan_fn is not None:
                def fwd_bwd_anchor():
                    out = selective_scan_fn(
                        xg["u"], xg["delta"], xg["A"], xg["B"], xg["C"], xg["D"], xg["z"], xg["delta_bias"],
                        delta_softplus=True,
                    )
                    out.backward(dout)

                add((shape, "mamba_ssm fwd+bwd", bench(fwd_bwd_anchor), 0.0, 0.0))
                grads = {}
                for name, fn in (("triton", fwd_bwd_triton), ("anchor", fwd_bwd_anchor)):
                    for v in xg.values():
                        v.grad = None
                    fn()
                    grads[name] = {k: v.grad.clone() for k, v in xg.items()}
                for k in xg:
                    add((shape, f"  grad {k} vs anchor", 0.0, rel(grads["triton"][k], grads["anchor"][k]), 0.0))
        del x
        torch.cuda.empty_cache()
    print(f"{'shape':<22} {'variant':<22} {'ms':>8} {'out err':>9} {'state err':>9}")
    for shape, name, ms, e1, e2 in table:
        print(f"{shape:<22} {name:<22} {ms:8.3f} {e1:9.2e} {e2:9.2e}")


if __name__ == "__main__":
    main()
