"""What the GPU compiler made of a kernel op, on a machine without a GPU.

Runs an op (forward and backward) on CPU tensors with Triton pointed at a stand-in
driver for a chosen NVIDIA architecture (sm_90 by default): every kernel the op would
launch is compiled for that GPU instead (Triton's bundled ptxas), and nothing runs, so
the outputs are garbage and only their shapes matter. For each compiled kernel it
prints the registers, spilled bytes, shared memory and the SASS opcode mix of the
whole kernel and of its innermost loops (the step loops, where the time goes), and in
each loop the waits that also wait for a global load they do not read (a scoreboard
ptxas shares between a far and a near load: `Sass.far_waits`).

This is how layout conversions, shuffles and spills were found and removed in the scan
kernels without GPU time (benchmarks/notes_scan.md); instruction counts do not time a
kernel, so changes still need a GPU run (bench_scan.py, scan_tuning.py) to be judged.

    python benchmarks/sass_report.py scan --shape 8,1536,2048,16
    python benchmarks/sass_report.py scan_fwd --fwd-config autoa  # the forward alone, no saved states
    python benchmarks/sass_report.py scan --shape 1,1536,131072,16 --dump /tmp/scan  # .ttgir/.ptx/.sass
    python benchmarks/sass_report.py conv conv_channel_last conv_in_block rmsnorm state_update
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.backends.driver import DriverBase
from triton.runtime.jit import JITFunction


class _CompileOnlyDriver(DriverBase):
    """Enough of a CUDA driver for Triton to compile for ``target``; it cannot launch."""

    def __init__(self, target: GPUTarget) -> None:
        self.target = target

    @classmethod
    def is_active(cls) -> bool:
        return False

    def map_python_to_cpp_type(self, ty: str) -> str:
        raise NotImplementedError

    def get_current_target(self) -> GPUTarget:
        return self.target

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cpu")

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_benchmarker(self):  # pragma: no cover - never timed
        raise NotImplementedError("sass_report: nothing runs on the stand-in driver")


@dataclass
class CompiledKernel:
    """One compiled specialization: its name, constants and compiler outputs."""

    name: str
    constants: dict[str, object]
    asm: dict[str, object]
    shared_bytes: int
    num_warps: int


@dataclass
class Collected:
    kernels: list[CompiledKernel] = field(default_factory=list)


@contextlib.contextmanager
def compile_only(arch: int = 90) -> Iterator[Collected]:
    """Inside the block, a Triton kernel launch compiles for ``sm_<arch>`` and returns
    without running; every compiled kernel is appended to the yielded ``Collected``.
    Ops must be called with ``backend="triton"`` on CPU tensors (allowed inside)."""
    from seqmamba.kernels import backend as backend_module
    from seqmamba.kernels import dependent_launch

    if backend_module.triton_interpreter_enabled():
        raise RuntimeError("sass_report: unset TRITON_INTERPRET; this tool compiles the kernels instead of "
                           "interpreting them (the variable must be unset before Triton is imported)")

    collected = Collected()
    driver = _CompileOnlyDriver(GPUTarget("cuda", arch, 32))
    original_run = JITFunction.run
    original_check = backend_module._check_triton
    original_dependent = dependent_launch.enabled_for
    seen: set[int] = set()
    # Restored as it was: on a machine without a GPU there is no default driver to reset to.
    previous_driver = triton.runtime.driver._active

    def run(self: JITFunction, *args, grid, warmup, **kwargs):
        kernel = original_run(self, *args, grid=grid, warmup=True, **kwargs)
        if kernel is not None and id(kernel) not in seen:
            seen.add(id(kernel))
            constants = {self.arg_names[path[0]]: value for path, value in kernel.src.constants.items()
                         if len(path) == 1}
            collected.kernels.append(CompiledKernel(
                name=self.fn.__name__, constants=constants, asm=dict(kernel.asm),
                shared_bytes=kernel.metadata.shared, num_warps=kernel.metadata.num_warps,
            ))
        return kernel

    triton.runtime.driver.set_active(driver)
    JITFunction.run = run
    backend_module._check_triton = lambda op, device: None
    # As on a GPU of that architecture (the CPU tensors would turn it off).
    dependent_launch.enabled_for = lambda device: arch >= 90 and dependent_launch.ENABLED
    try:
        yield collected
    finally:
        JITFunction.run = original_run
        backend_module._check_triton = original_check
        dependent_launch.enabled_for = original_dependent
        triton.runtime.driver._active = previous_driver


# ----------------------------------------------------------------------------- SASS


_INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
_BRANCH_TARGET = re.compile(r"^\s*(0x[0-9a-f]+)\s*$")
_ENCODING = re.compile(r"/\* (0x[0-9a-f]{16}) \*/\s*$")
_REGISTER = re.compile(r"\bR(\d+)\b")


@dataclass
class Sass:
    """A kernel's SASS (``cuobjdump -sass``) as (address, opcode, operands) triples, and
    each instruction's control bits where the dump has the encodings (sm_90: the high 64
    bits of the instruction word, on the line after it)."""

    instructions: list[tuple[int, str, str]]
    controls: list[int | None] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Sass:
        instructions, controls = [], []
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if (m := _INSTRUCTION.search(line)) is None:
                continue
            instructions.append((int(m.group(1), 16), m.group(2), m.group(3)))
            high = _ENCODING.search(lines[i + 1]) if i + 1 < len(lines) else None
            low = _ENCODING.search(line)
            controls.append(int(high.group(1), 16) >> 41 if high and low and not _INSTRUCTION.search(lines[i + 1])
                            else None)
        return cls(instructions, controls)

    def far_waits(self, start: int, end: int) -> list[tuple[int, str, list[int]]] | None:
        """Waits in the loop [start, end] that also wait for a global load they do not read.

        Each variable-latency instruction counts on one of six scoreboards (its control
        bits: write barrier bits 5-7, read barrier 8-10, wait mask 11-16 of the control
        word); an instruction that waits on a scoreboard waits for everything counted on
        it. When ptxas puts a load issued early (a prefetch) on the scoreboard of a nearer
        shared-memory load or MUFU result, the wait for those also waits for memory.
        Returns (address, opcode, [how many instructions earlier each such load was
        issued, around the loop]) per wait, or None without control bits.
        """
        body = [(i, ins) for i, ins in enumerate(self.instructions) if start <= ins[0] <= end]
        if not self.controls or not body or any(self.controls[i] is None for i, _ in body):
            return None
        pending: dict[int, list[tuple[int, set[int]]]] = {sb: [] for sb in range(6)}  # (position, registers)
        found = []
        for lap in range(2):  # the first lap leaves what the loop's end carries into its start
            for position, (i, (address, opcode, operands)) in enumerate(body):
                control = self.controls[i]
                read = set(map(int, _REGISTER.findall(operands if opcode.startswith(("ST", "RED", "ATOM"))
                                                      else operands.partition(",")[2])))
                for sb in range(6):
                    if control >> (11 + sb) & 1:
                        unread = [p for p, regs in pending[sb] if regs and not regs & read]
                        if unread and lap == 1:
                            found.append((address, opcode, [(position - p) % len(body) for p in unread]))
                        pending[sb] = []
                write, read_barrier = control >> 5 & 7, control >> 8 & 7
                if write != 7:
                    # Global loads carry their destination registers; other producers none.
                    regs: set[int] = set()
                    if opcode.startswith("LDG") and (m := _REGISTER.search(operands.partition(",")[0])):
                        width = 4 if ".128" in opcode else 2 if ".64" in opcode else 1
                        regs = set(range(int(m.group(1)), int(m.group(1)) + width))
                    pending[write].append((position, regs))
                if read_barrier != 7:
                    pending[read_barrier].append((position, set()))
        return found

    def opcodes(self, start: int = 0, end: int | None = None) -> collections.Counter[str]:
        """Opcode counts (without modifiers) of the instructions at addresses in [start, end]."""
        return collections.Counter(op.split(".")[0] for a, op, _ in self.instructions
                                   if a >= start and (end is None or a <= end))

    def innermost_loops(self) -> list[tuple[int, int]]:
        """(first, last) addresses of each loop (a branch back to an earlier address)
        that contains no other loop, in address order."""
        loops = set()
        for address, op, operands in self.instructions:
            if op.split(".")[0] == "BRA" and (m := _BRANCH_TARGET.match(operands)) is not None:
                target = int(m.group(1), 16)
                if target < address:  # the kernel's closing self-branch is no loop
                    loops.add((target, address))
        return sorted(loop for loop in loops
                      if not any(o != loop and loop[0] <= o[0] and o[1] <= loop[1] for o in loops))

    def first(self, opcode: str) -> int | None:
        """Address of the first instruction with ``opcode`` (modifiers ignored), or None."""
        return next((a for a, op, _ in self.instructions if op.split(".")[0] == opcode), None)


def _cuobjdump(cubin: bytes, option: str) -> str:
    """The output of the cuobjdump bundled with Triton, with ``option``, on a cubin."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([triton.knobs.nvidia.cuobjdump.path, option, f.name], check=True,
                              capture_output=True, text=True).stdout


def disassemble(cubin: bytes) -> str:
    """``cuobjdump -sass`` of a cubin."""
    return _cuobjdump(cubin, "-sass")


def resource_usage(cubin: bytes) -> dict[str, int]:
    """REG, STACK, SHARED, LOCAL ... from ``cuobjdump -res-usage``."""
    return {key: int(value) for key, value in re.findall(r"\b([A-Z]+):(\d+)", _cuobjdump(cubin, "-res-usage"))}


# The opcodes worth watching: shuffles and shared-memory traffic (layout conversions and
# cross-lane sums), barriers, local memory (spills), the special-function unit, selects.
WATCHED = ("SHFL", "STS", "LDS", "LDSM", "BAR", "STL", "LDL", "MUFU", "FSEL", "LDG", "STG")


def describe(kernel: CompiledKernel, dump: Path | None = None) -> str:
    """A few lines on one compiled kernel; with ``dump``, writes its TTGIR, PTX and SASS there."""
    cubin = kernel.asm["cubin"]
    sass_text = disassemble(cubin)
    sass = Sass.parse(sass_text)
    usage = resource_usage(cubin)
    shown = {k: v for k, v in kernel.constants.items() if isinstance(v, (int, bool)) and not isinstance(v, type)}
    regs = usage.get("REG")
    resident = resident_warps(regs, kernel.num_warps, kernel.shared_bytes) if regs else "?"
    lines = [
        f"{kernel.name}  warps={kernel.num_warps} regs={regs or '?'} stack={usage.get('STACK', '?')} "
        f"local={usage.get('LOCAL', '?')} shared={kernel.shared_bytes} resident_warps/SM={resident}",
        f"  constants: {' '.join(f'{k}={v}' for k, v in shown.items())}",
        f"  whole kernel: {_mix(sass.opcodes(), len(sass.instructions))}",
    ]
    if shown.get("PDL"):
        # A dependent launch must wait (ACQBULK) before it reads anything an earlier
        # kernel may still be writing (kernels/dependent_launch.py).
        wait, load = sass.first("ACQBULK"), sass.first("LDG")
        if shown.get("EARLY") or shown.get("LAST_SEGMENT_FIRST") or shown.get("SEGMENT_SLOWEST"):
            # Told that the kernel before writes only some inputs, it loads the others first
            # (a split scan's second pass: all but the first pass's results).
            early_loads = sum(1 for address, opcode, _ in sass.instructions
                              if opcode.startswith("LDG") and wait is not None and address < wait)
            later_loads = sum(1 for address, opcode, _ in sass.instructions
                              if opcode.startswith("LDG") and wait is not None and address > wait)
            order = f"loads early inputs before its wait ({early_loads} loads before, {later_loads} after)"
        else:
            order = "waits before its first global load" if wait is not None and (load is None or wait < load) \
                else "DOES NOT WAIT before its first global load"
        # Prefetches into L2 (CCTL.*PF2) may come before the wait: they load no registers.
        early = sum(1 for address, opcode, _ in sass.instructions
                    if opcode.startswith("CCTL") and "PF2" in opcode and (wait is None or address < wait))
        lines.append(f"  dependent launch: {order} (wait at {wait if wait is None else hex(wait)}, "
                     f"first load at {load if load is None else hex(load)}, "
                     f"signals dependants: {sass.first('PREEXIT') is not None}, "
                     f"L2 prefetches before the wait: {early})")
    for i, (start, end) in enumerate(sass.innermost_loops()):
        counts = sass.opcodes(start, end)
        lines.append(f"  loop {i} [{start:#x}-{end:#x}]: {_mix(counts, sum(counts.values()))}")
        waits = sass.far_waits(start, end)
        if waits:
            shown_waits = "; ".join(f"{address:#x} {opcode} ({', '.join(map(str, sorted(distances)))} instrs after)"
                                    for address, opcode, distances in waits)
            lines.append(f"    waits also for a global load it does not read: {shown_waits}")
    if dump is not None:
        dump.mkdir(parents=True, exist_ok=True)
        stem = dump / f"{kernel.name}_{abs(hash(tuple(sorted(map(str, shown.items()))))) % 10**6}"
        Path(f"{stem}.ttgir").write_text(str(kernel.asm["ttgir"]))
        Path(f"{stem}.ptx").write_text(str(kernel.asm["ptx"]))
        Path(f"{stem}.sass").write_text(sass_text)
        lines.append(f"  written: {stem}.{{ttgir,ptx,sass}}")
    return "\n".join(lines)


# An sm_90 SM: 64K 32-bit registers, allocated per warp in units of 256; at most 64
# resident warps and 32 resident programs; 228 KiB of shared memory, 1 KiB of it
# reserved per program.
SM90_REGISTERS, SM90_REG_UNIT, SM90_MAX_WARPS, SM90_MAX_PROGRAMS = 65536, 256, 64, 32
SM90_SHARED, SM90_SHARED_RESERVED = 228 * 1024, 1024
SM90_SCHEDULERS = 4


def resident_warps(regs_per_thread: int, warps_per_program: int, shared_bytes: int) -> int:
    """How many warps of a kernel an sm_90 SM holds at once (its occupancy), from its
    registers per thread, warps per program and shared memory per program."""
    per_warp = -(-regs_per_thread * 32 // SM90_REG_UNIT) * SM90_REG_UNIT
    # The register file is split between the SM's four schedulers, and a warp's registers
    # come from its scheduler's quarter: 180 registers a thread leave 2 warps a scheduler
    # (8 an SM, as ncu reports), not 65536 // 5888 = 11.
    warps_by_registers = SM90_SCHEDULERS * (SM90_REGISTERS // SM90_SCHEDULERS // per_warp)
    programs = min(SM90_MAX_PROGRAMS, warps_by_registers // warps_per_program,
                   SM90_MAX_WARPS // warps_per_program, SM90_SHARED // (shared_bytes + SM90_SHARED_RESERVED))
    return programs * warps_per_program


def _mix(counts: collections.Counter[str], total: int) -> str:
    return f"{total} instrs; " + " ".join(f"{op}={counts[op]}" for op in WATCHED if counts[op])


# ----------------------------------------------------------------------------- ops


_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _scan(shape: tuple[int, ...], dtype: torch.dtype, *, backward: bool = True) -> None:
    """The scan as training runs it (the forward saving states, then the backward), or
    the forward alone (``backward=False``: no states saved, as in inference and in
    bench_scan's forward column; its registers can differ)."""
    from seqmamba.kernels import selective_scan

    batch, dim, length, n = shape
    u, delta, z = (torch.empty(batch, dim, length, dtype=dtype, requires_grad=backward) for _ in range(3))
    B, C = (torch.empty(batch, n, length, dtype=dtype, requires_grad=backward) for _ in range(2))
    A = torch.full((dim, n), -1.0, requires_grad=backward)
    D, bias = (torch.zeros(dim, requires_grad=backward) for _ in range(2))
    out = selective_scan(u, delta, A, B, C, D=D, z=z, delta_bias=bias, delta_softplus=True, backend="triton")
    if backward:
        out.backward(torch.empty_like(out))


def _conv(shape: tuple[int, ...], dtype: torch.dtype, *, channel_last: bool = False) -> None:
    from seqmamba.kernels import causal_conv1d

    batch, dim, length, width = shape
    if channel_last:  # as a Mamba block's x: a (batch, D, L) view with stride 1 over D
        x = torch.empty(batch, length, dim, dtype=dtype).transpose(1, 2).requires_grad_()
    else:
        x = torch.empty(batch, dim, length, dtype=dtype, requires_grad=True)
    weight = torch.zeros(dim, width, requires_grad=True)
    bias = torch.zeros(dim, requires_grad=True)
    out = causal_conv1d(x, weight, bias, activation="silu", backend="triton")
    out.backward(torch.empty_like(out))


def _conv_in_block(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    """The conv backward as the Mamba block's fused backward calls it: x a slice of the
    in_proj output ((2D, batch, L) in memory), d out in two parts, d x into the x half
    of the in_proj output's gradient."""
    from seqmamba.kernels.causal_conv1d.autograd import causal_conv1d_bwd

    batch, dim, length, width = shape
    x, dx_buffer = (torch.empty(2 * dim, batch, length, dtype=dtype)[:dim].permute(1, 0, 2) for _ in range(2))
    dout, dout2 = (torch.empty(batch, dim, length, dtype=dtype) for _ in range(2))
    weight, bias = torch.zeros(dim, width), torch.zeros(dim)
    causal_conv1d_bwd(dout, x, weight, bias, None, True, dout2, dx_buffer)


def _rmsnorm(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    from seqmamba.kernels import rms_norm

    rows, dim = shape
    x, residual = (torch.empty(rows, dim, dtype=dtype, requires_grad=True) for _ in range(2))
    weight = torch.ones(dim, requires_grad=True)
    normed, new_residual = rms_norm(x, weight, residual=residual, residual_in_fp32=False, backend="triton")
    torch.autograd.backward((normed, new_residual), (torch.empty_like(normed), torch.empty_like(new_residual)))


def _state_update(shape: tuple[int, ...], dtype: torch.dtype, early_loads: bool = False) -> None:
    from seqmamba.kernels import selective_state_update

    batch, dim, n = shape
    state = torch.zeros(batch, dim, n)
    x, dt, z = (torch.empty(batch, dim, dtype=dtype) for _ in range(3))
    B, C = (torch.empty(batch, n, dtype=dtype) for _ in range(2))
    A = torch.full((dim, n), -1.0)
    D, bias = torch.zeros(dim), torch.zeros(dim)
    selective_state_update(state, x, dt, A, B, C, D=D, z=z, dt_bias=bias, dt_softplus=True, backend="triton",
                           early_loads=early_loads)


def _decode_step(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    """The decode step's own kernels at one batch size: add + RMSNorm (the first layer's),
    the input projection with the conv step (fused up to 16 rows, the conv step kernel
    beyond) taking a deferred norm's rows, x_proj's product, the SSM step, out_proj with
    the residual add and the next deferred norm as its epilogue."""
    from seqmamba.kernels import decode_linear, decode_linear_add_norm, proj_conv_update, rms_norm

    batch, d_model, n = shape
    d_inner, width = 2 * d_model, 4
    hidden = torch.empty(batch, d_model, dtype=dtype)
    rms_norm(hidden, torch.ones(d_model), hidden, residual_in_fp32=True, backend="triton")
    residual = torch.empty(batch, d_model)
    normed, _ = decode_linear_add_norm(torch.empty(batch, d_inner, dtype=dtype), torch.empty(d_model, d_inner, dtype=dtype),
                                       None, residual, torch.ones(d_model), residual_in_fp32=True, backend="triton")
    proj_conv_update(normed.rows, torch.empty(2 * d_inner, d_model, dtype=dtype),
                     torch.empty(batch, d_inner, width, dtype=dtype), torch.empty(d_inner, width, dtype=dtype),
                     torch.empty(d_inner, dtype=dtype), activation="silu", backend="triton",
                     early_loads=True,  # as the model calls it, after out_proj
                     row_sumsq=normed.row_sumsq if normed.row_sumsq is not None else torch.ones(batch, 1))
    dt_rank = -(-d_model // 16)
    decode_linear(torch.empty(batch, d_inner, dtype=dtype), torch.empty(dt_rank + 2 * n, d_inner, dtype=dtype),
                  backend="triton")
    # As the model calls it after x_proj's Triton product: the state, x and z read early.
    _state_update((batch, d_inner, n), dtype, early_loads=True)


@dataclass(frozen=True)
class Op:
    run: Callable[[tuple[int, ...], torch.dtype], None]
    default_shape: tuple[int, ...]
    shape_names: str


OPS = {
    "scan": Op(_scan, (8, 1536, 2048, 16), "batch,D,L,N"),
    "scan_fwd": Op(functools.partial(_scan, backward=False), (8, 1536, 2048, 16), "batch,D,L,N"),
    "conv": Op(_conv, (8, 1536, 2048, 4), "batch,D,L,width"),
    "conv_channel_last": Op(functools.partial(_conv, channel_last=True), (8, 1536, 2048, 4), "batch,D,L,width"),
    "conv_in_block": Op(_conv_in_block, (8, 1536, 2048, 4), "batch,D,L,width"),
    "rmsnorm": Op(_rmsnorm, (16384, 768), "rows,dim"),
    "state_update": Op(_state_update, (64, 1536, 16), "batch,D,N"),
    "decode_step": Op(_decode_step, (1, 768, 16), "batch,d_model,N"),
}


def report(op: str, shape: tuple[int, ...] | None = None, dtype: str = "bf16", arch: int = 90,
           dump: Path | None = None, fwd_config: str | None = None, bwd_config: str | None = None) -> list[str]:
    """Compiles every kernel ``op`` launches at ``shape`` (its training shape by default)
    for ``sm_<arch>`` and returns one description per kernel. ``fwd_config`` and
    ``bwd_config`` choose the scan's launch shapes (see :func:`scan_launch_shapes`)."""
    spec = OPS[op]
    shape = spec.default_shape if shape is None else shape
    if len(shape) != len(spec.default_shape):
        raise ValueError(f"sass_report: {op} takes a shape {spec.shape_names}, got {shape}")
    from scan_tuning import scan_launch_shapes

    with compile_only(arch) as collected, scan_launch_shapes(fwd_config, bwd_config):
        spec.run(shape, _DTYPES[dtype])
    return [describe(kernel, dump) for kernel in collected.kernels]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ops", nargs="+", choices=sorted(OPS))
    parser.add_argument("--shape", help="comma-separated; each op's own order (see the ops' defaults)")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default="bf16")
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (default 90: H100/H200)")
    parser.add_argument("--dump", type=Path, help="write each kernel's .ttgir, .ptx and .sass to this folder")
    parser.add_argument("--fwd-config", help="scan forward launch shape, as scan_tuning.py's --configs names it")
    parser.add_argument("--bwd-config", help="scan backward launch shape, as scan_tuning.py's --bwd-configs names it")
    args = parser.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(",")) if args.shape else None
    for op in args.ops:
        print(f"== {op} ({OPS[op].shape_names} = {shape or OPS[op].default_shape}, {args.dtype}, sm_{args.arch})")
        for text in report(op, shape, args.dtype, args.arch, args.dump, args.fwd_config, args.bwd_config):
            print(text)


if __name__ == "__main__":
    main()
