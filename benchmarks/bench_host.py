"""Host time per call of the kernel ops, against their GPU time: which ops a training step
waits on the host for.

For each op at the Mamba-130M training shapes (batch 8 x 2048, d_model 768, d_inner 1536,
N 16, bf16), from an idle GPU: the wall-clock time to queue ``--calls`` calls (the
Python wrapper, its checks and allocations, and the kernel launches), then the time until
they have all run. An op whose queueing takes longer than its kernels starves the GPU
when many such calls follow each other, as in a training step.

    python benchmarks/bench_host.py                    # CUDA
    python benchmarks/bench_host.py --device cpu --tiny  # the reference ops, tiny shapes (a check)
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from seqmamba.kernels import causal_conv1d, rms_norm, selective_scan

FULL = dict(batch=8, length=2048, d_model=768, d_inner=1536, d_state=16)
TINY = dict(batch=2, length=33, d_model=8, d_inner=16, d_state=4)


def cases(device: str, dtype: torch.dtype, s: dict) -> dict[str, Callable[[], object]]:
    """name -> a call of one op (forward, or forward then backward), inputs made once."""
    b, L, dm, d, n = s["batch"], s["length"], s["d_model"], s["d_inner"], s["d_state"]

    def t(*shape, grad=False, dt=dtype):
        return torch.randn(*shape, device=device, dtype=dt).requires_grad_(grad)

    u, delta, z = t(b, d, L, grad=True), t(b, d, L, grad=True), t(b, d, L, grad=True)
    A, B, C = -torch.rand(d, n, device=device), t(b, n, L, grad=True), t(b, n, L, grad=True)
    D, bias = t(d, dt=torch.float32), t(d, dt=torch.float32)
    dout = t(b, d, L)
    x, w, cb = t(b, d, L, grad=True), t(d, 4, grad=True), t(d, grad=True)
    h, res, nw = t(b, L, dm, grad=True), t(b, L, dm, dt=torch.float32), t(dm, grad=True, dt=torch.float32)

    def scan():
        return selective_scan(u, delta, A, B, C, D=D, z=z, delta_bias=bias, delta_softplus=True)

    def conv():
        return causal_conv1d(x, w, cb, activation="silu")

    def norm():
        return rms_norm(h, nw, res, residual_in_fp32=True)[0]

    def with_backward(fn: Callable[[], torch.Tensor], grad: torch.Tensor) -> Callable[[], None]:
        return lambda: fn().backward(grad)

    return {
        "selective_scan fwd": scan,
        "selective_scan fwd+bwd": with_backward(scan, dout),
        "causal_conv1d fwd": conv,
        "causal_conv1d fwd+bwd": with_backward(conv, dout),
        "rms_norm fwd": norm,
        "rms_norm fwd+bwd": with_backward(norm, t(b, L, dm)),
    }


def measure(fn: Callable[[], object], calls: int, device: str) -> tuple[float, float]:
    """(ms to queue one call, ms until one call has run), per call, from an idle device."""
    fn()  # compiles the kernels
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    begin = time.perf_counter()
    for _ in range(calls):
        fn()
    queued = time.perf_counter()
    sync()
    done = time.perf_counter()
    return 1e3 * (queued - begin) / calls, 1e3 * (done - begin) / calls


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="tiny shapes, for a check on the CPU")
    p.add_argument("--calls", type=int, default=50)
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here; use --device cpu")
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    shapes = TINY if args.tiny else FULL
    print(f"device: {args.device}; {dtype}; shapes {shapes}; {args.calls} calls each")
    print("| op | host ms per call | done ms per call | host / done |")
    print("| --- | --- | --- | --- |")
    for name, fn in cases(args.device, dtype, shapes).items():
        host, done = measure(fn, args.calls, args.device)
        print(f"| {name} | {host:.3f} | {done:.3f} | {host / done:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
