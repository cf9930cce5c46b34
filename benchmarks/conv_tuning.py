"""Launch shapes of the causal_conv1d backward kernel, timed on the GPU.

Each variant ``BLOCK_DxCHUNKxROWSxWARPS`` (channels a program, positions a step,
positions a program, warps) replaces the kernel module's GPU_BWD_LAUNCH entry for one
memory layout; the backward (kernel and the weight/bias sum) then runs on the Mamba-130M
training shape, bf16 x and d out laid out like x, fp32 parameters, width 4, SiLU. Times
are the device's kernel time per call (torch.profiler over 20 calls), so the host's
launch cost does not hide them. The first variant of each list is the default's.
With ``--as-in-the-block`` the backward runs as the Mamba block's fused backward calls
it: d out in two parts (the scan's and x_proj's) and d x written into the x half of an
in_proj-output-shaped gradient buffer.

    python benchmarks/conv_tuning.py
    python benchmarks/conv_tuning.py --contiguous 128x8x256x4,64x8x256x2 --channel-last 256x4x256x4
    python benchmarks/conv_tuning.py --as-in-the-block --channel-last ""
"""
from __future__ import annotations

import argparse
import math
import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from kernel_profile import kernel_ms_per_call  # noqa: E402

CONTIGUOUS = "128x16x512x4,128x16x256x4,64x16x512x2,128x8x512x4,256x16x512x8,128x16x1024x4,64x16x256x2"
CHANNEL_LAST = "512x4x256x4,256x4x256x4,256x4x128x4,512x4x512x4,128x4x128x2"


def parse_variant(text: str) -> tuple[int, int, int, int]:
    """'128x8x256x4' -> (128, 8, 256, 4); a clear error for anything else."""
    parts = text.split("x")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        raise SystemExit(f"conv_tuning: variant {text!r} is not BLOCK_DxCHUNKxROWSxWARPS, e.g. 128x8x256x4")
    block_d, chunk, rows, warps = (int(p) for p in parts)
    for name, value in (("BLOCK_D", block_d), ("CHUNK", chunk), ("WARPS", warps)):
        if value & (value - 1) or value == 0:
            raise SystemExit(f"conv_tuning: {name} of {text!r} must be a power of two, got {value}")
    if rows % chunk:
        raise SystemExit(f"conv_tuning: ROWS of {text!r} must be a multiple of CHUNK ({chunk})")
    return block_d, chunk, rows, warps


def inputs(batch: int, dim: int, length: int, width: int, channel_last: bool) -> tuple[torch.Tensor, ...]:
    """(x, dout, dout2, dx_buffer, weight, bias) as the Mamba block hands them to the
    conv's backward; dx_buffer is the x half of an in_proj-output-shaped gradient."""
    g = torch.Generator().manual_seed(0)

    def like_x() -> torch.Tensor:
        if channel_last:
            return torch.randn(batch, length, 2 * dim, generator=g)[..., :dim].transpose(1, 2)
        return torch.randn(2 * dim, batch, length, generator=g)[:dim].permute(1, 0, 2)  # (D, batch, L) in memory

    x, dout, dout2, dx_buffer = (like_x().cuda().bfloat16() for _ in range(4))
    weight = torch.randn(dim, width, generator=g) / math.sqrt(width)
    bias = torch.randn(dim, generator=g)
    return (x, dout, dout2, dx_buffer, weight.cuda(), bias.cuda())


def time_variant(kernel_module, channel_last: bool, variant: tuple[int, int, int, int],
                 tensors: tuple[torch.Tensor, ...], as_in_the_block: bool) -> float:
    x, dout, dout2, dx_buffer, weight, bias = tensors
    extra = (dout2, dx_buffer) if as_in_the_block else (None, None)
    saved = dict(kernel_module.GPU_BWD_LAUNCH)
    kernel_module.GPU_BWD_LAUNCH[not channel_last] = variant
    try:
        return kernel_ms_per_call(
            lambda: kernel_module.causal_conv1d_backward(dout, x, weight, bias, None, True, *extra), 20
        )
    finally:
        kernel_module.GPU_BWD_LAUNCH.clear()
        kernel_module.GPU_BWD_LAUNCH.update(saved)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contiguous", default=CONTIGUOUS, help="variants for x with L contiguous (the Mamba block's)")
    p.add_argument("--channel-last", default=CHANNEL_LAST, help="variants for channel-last x")
    p.add_argument("--shape", default="8,1536,2048,4", help="batch,D,L,width")
    p.add_argument("--as-in-the-block", action="store_true",
                   help="d out in two parts, d x into a slice of a larger buffer (the fused block's backward)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        p.error("needs a CUDA device: the interpreter's timings say nothing about the kernel")
    batch, dim, length, width = (int(v) for v in args.shape.split(","))
    from seqmamba.kernels.causal_conv1d import kernel as kernel_module

    how = "d out in two parts, d x into a buffer slice" if args.as_in_the_block else "one d out"
    print(f"device: {torch.cuda.get_device_name()}; causal_conv1d backward, ({batch}, {dim}, {length}), "
          f"width {width}, bf16, SiLU, {how}; kernel ms per call")
    print("| layout | BLOCK_D x CHUNK x ROWS x WARPS | ms | GB/s (x, d out, dx once) |")
    print("| --- | --- | --- | --- |")
    moved = (4 if args.as_in_the_block else 3) * batch * dim * length * 2
    for channel_last, variants in ((False, args.contiguous), (True, args.channel_last)):
        tensors = inputs(batch, dim, length, width, channel_last)
        for text in filter(None, variants.split(",")):
            ms = time_variant(kernel_module, channel_last, parse_variant(text), tensors, args.as_in_the_block)
            layout = "channel-last" if channel_last else "L contiguous"
            print(f"| {layout} | {text} | {ms:.4f} | {moved / ms / 1e6:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
