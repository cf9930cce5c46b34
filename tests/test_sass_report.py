"""benchmarks/sass_report.py: kernels compiled for sm_90 on a machine without a GPU, and
what the reports say about the scan's compiled loops.

The compiling tests run the tool in a subprocess: this test process interprets Triton
kernels (TRITON_INTERPRET=1, set before Triton was imported), the tool must compile them.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import triton
from bench_modules import BENCHMARKS, benchmark_module

SASS = """
        code for sm_90
                Function : _toy
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   LDG.E R2, desc[UR4][R2.64] ;
        /*0020*/                   FFMA R4, R2, R2, R4 ;
        /*0030*/                   SHFL.BFLY PT, R5, R4, 0x1, 0x1f ;
        /*0040*/                   FADD R4, R4, R5 ;
        /*0050*/              @!P0 BRA 0x20 ;
        /*0060*/                   MUFU.EX2 R6, R4 ;
        /*0070*/                   FMUL R6, R6, R6 ;
        /*0080*/               @P1 BRA 0x70 ;
        /*0090*/                   EXIT ;
        /*00a0*/                   BRA 0xa0;
"""


def test_sass_parsing_counts_opcodes_and_finds_innermost_loops():
    with benchmark_module("sass_report") as tool:
        sass = tool.Sass.parse(SASS)
        assert len(sass.instructions) == 11
        assert sass.opcodes()["BRA"] == 3 and sass.opcodes()["SHFL"] == 1
        # Two loops; the closing self-branch is none.
        assert sass.innermost_loops() == [(0x20, 0x50), (0x70, 0x80)]
        assert sass.opcodes(0x20, 0x50) == {"FFMA": 1, "SHFL": 1, "FADD": 1, "BRA": 1}


def _encoded(rows: list[tuple[str, int, int]]) -> str:
    """A toy SASS dump with encodings: (instruction, write scoreboard or 7, wait mask) per
    row, the control bits in the high word as sm_90 places them (read barrier 7: none)."""
    out = []
    for i, (text, write, wait) in enumerate(rows):
        control = 1 | write << 5 | 7 << 8 | wait << 11
        out.append(f"        /*{16 * i:04x}*/   {text} ;   /* 0x{0x1234:016x} */")
        out.append(f"                                   /* 0x{control << 41:016x} */")
    return "\n".join(out)


def test_far_waits_find_a_wait_that_also_waits_for_an_unread_global_load():
    """A load issued early (LDG, scoreboard 2) and a shared-memory load on the same
    scoreboard: the LDS's user waits for both, and is reported with the distance; on
    scoreboards of their own nothing is reported; a dump without encodings gives None."""
    def loop(ldg_scoreboard: int) -> list[tuple[str, int, int]]:
        return [
            ("LDG.E.64 R2, desc[UR4][R8.64]", ldg_scoreboard, 0),
            ("LDS R4, [R10]", 2, 0),
            ("FMUL R5, R4, R4", 7, 1 << 2),
            ("FADD R6, R2, R5", 7, 1 << ldg_scoreboard),
            ("@!P0 BRA 0x0", 7, 0),
        ]

    with benchmark_module("sass_report") as tool:
        shared = tool.Sass.parse(_encoded(loop(2)))
        assert shared.innermost_loops() == [(0x0, 0x40)]
        assert shared.far_waits(0x0, 0x40) == [(0x20, "FMUL", [2])]
        apart = tool.Sass.parse(_encoded(loop(3)))
        assert apart.far_waits(0x0, 0x40) == []
        assert tool.Sass.parse(SASS).far_waits(0x20, 0x50) is None


def test_resident_warps_follow_registers_shared_memory_and_limits():
    with benchmark_module("sass_report") as tool:
        assert tool.resident_warps(255, 1, 512) == 8  # the scan's one-warp programs at 255 registers
        assert tool.resident_warps(168, 1, 512) == 12
        assert tool.resident_warps(180, 1, 512) == 8  # 2 a scheduler: each holds a quarter of the registers
        assert tool.resident_warps(32, 4, 0) == 64  # the SM's warp limit
        assert tool.resident_warps(16, 1, 0) == 32  # one-warp programs: the program limit
        assert tool.resident_warps(32, 4, 100 * 1024) == 8  # two programs' shared memory


def _cuobjdump_available() -> bool:
    try:
        return os.path.exists(triton.knobs.nvidia.cuobjdump.path)
    except Exception:  # a Triton build without the NVIDIA tools
        return False


def _report(*args: str, **extra_env: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | extra_env
    done = subprocess.run([sys.executable, str(BENCHMARKS / "sass_report.py"), *args], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _kernel_block(report: str, name: str) -> str:
    match = re.search(rf"^{name} .*?(?=^\S|\Z)", report, flags=re.M | re.S)
    assert match is not None, report
    return match.group(0)


def _last_loop(block: str) -> dict[str, int]:
    loops = re.findall(r"^  loop \d+ .*$", block, flags=re.M)
    assert loops, block
    counts = dict(re.findall(r"([A-Z]+)=(\d+)", loops[-1]))
    counts["instrs"] = re.search(r"(\d+) instrs", loops[-1]).group(1)
    return {k: int(v) for k, v in counts.items()}


needs_tools = pytest.mark.skipif(not _cuobjdump_available(), reason="Triton's bundled cuobjdump is not installed")


def _far_wait_distances(block: str) -> list[int]:
    """The distances of the last loop's waits that also wait for an unread global load."""
    line = re.findall(r"^  loop \d+ .*$\n(?:    waits also for a global load it does not read: (.*)$)?", block, flags=re.M)
    assert line, block
    return [int(d) for d in re.findall(r"\d+", " ".join(re.findall(r"\(([\d, ]+) instrs after\)", line[-1])))]


@needs_tools
def test_forward_late_loads_keep_the_prefetch_off_the_chunks_scoreboards():
    """768 programs of 8 channels (the third benchmark shape), the forward alone: with
    each chunk's delta made at the end of the iteration before, ptxas shares the delta,
    u and z prefetches' scoreboards with the chunk's shared-memory loads, and waits in
    the chunk's middle wait for them too, 100-200 instructions after they were issued;
    with late_loads (the default there now) every load of the iteration is first waited on
    an iteration later."""
    shape = ("--shape", "4,1536,16384,16")
    early = _far_wait_distances(_kernel_block(_report("scan_fwd", *shape, "--fwd-config", "8x16x1pa"), "_fwd_kernel"))
    late = _far_wait_distances(_kernel_block(_report("scan_fwd", *shape), "_fwd_kernel"))
    assert min(early) < 300, early
    assert late and min(late) > 500, late


@needs_tools
def test_norm_kernels_compile_for_sm90():
    report = _report("rmsnorm", "--shape", "64,256")
    assert report.startswith("== rmsnorm (rows,dim = (64, 256), bf16, sm_90)")
    for name in ("_rms_norm_fwd_kernel", "_rms_norm_bwd_kernel"):
        block = _kernel_block(report, name)
        assert re.search(r"regs=\d+ stack=0 .* resident_warps/SM=\d+", block), block
        assert "LDG=" in block and "STG=" in block


@needs_tools
def test_scan_backward_sums_channels_with_fewer_shuffles(tmp_path):
    """The backward's chunk loop at the training shape's launch (8 channels x 8 steps):
    the scattered channel sums of dB and dC shuffle less than tl.sum's butterfly, and
    neither spills inside the loop. --dump writes the compiler's outputs."""
    scattered = _kernel_block(_report("scan", "--shape", "1,64,256,16", "--bwd-config", "8x8x1s",
                                      "--dump", str(tmp_path)), "_bwd_kernel")
    butterfly = _kernel_block(_report("scan", "--shape", "1,64,256,16", "--bwd-config", "8x8x1"), "_bwd_kernel")
    s, b = _last_loop(scattered), _last_loop(butterfly)
    assert s["SHFL"] < b["SHFL"] and s["instrs"] < b["instrs"], (scattered, butterfly)
    assert "STL" not in s and "LDL" not in s
    assert {p.suffix for p in tmp_path.iterdir()} == {".ttgir", ".ptx", ".sass"}



@needs_tools
def test_fma_pipe_exponentials_leave_the_multi_function_unit():
    """Decays moved to the FMA pipe (exp2_fma) come off the multi-function unit one for
    one, in the forward's passes and the backward's first pass at batch 1 (L split): the
    selection of steps and states is resolved at compile time, so nothing is computed
    twice. 'x' and 'e': the last step of each chunk, 'y': half its states; 'j', 'k': the
    same in the backward's first pass."""
    shape = ("--shape", "1,64,8192,16")

    def loops(config: str, *names: str) -> list[dict[str, int]]:
        text = _report("scan", *shape, *config.split())
        return [_last_loop(b) for b in re.findall(rf"^(?:{'|'.join(names)}) .*?(?=^\S|\Z)", text, flags=re.M | re.S)]

    plain = loops("--fwd-config auto --bwd-config auto", "_fwd_kernel", "_bwd_seg_kernel")
    moved = loops("--fwd-config autoxey --bwd-config autojk", "_fwd_kernel", "_bwd_seg_kernel")
    assert len(plain) == len(moved) == 3, (plain, moved)  # the forward's two passes, the backward's first
    for before, after in zip(plain, moved):
        assert after["MUFU"] < before["MUFU"], (before, after)
        assert after["instrs"] > before["instrs"]


@needs_tools
@pytest.mark.parametrize("op, shape, config, first, second", [
    ("scan", "1,64,2048,16", "--bwd-config", "_bwd_seg_kernel", "_bwd_kernel"),
    ("scan_fwd", "1,64,8192,16", "--fwd-config", "_fwd_kernel", "_fwd_kernel"),
], ids=("backward", "forward"))
def test_overlapped_passes_wait_for_the_first_before_folding(tmp_path, op, shape, config, first, second):
    """With a split L and the launch's overlap ('v'), the first pass lets the second start
    at once (PREEXIT), and the second waits (ACQBULK) before its fold loop reads the first
    pass's results; what it loads before the wait are inputs no kernel writes then."""
    text = _report(op, "--shape", shape, config, "autov", "--dump", str(tmp_path))
    blocks = re.findall(rf"^(?:{first}|{second}) .*?(?=^\S|\Z)", text, flags=re.M | re.S)
    (signals,) = [b for b in blocks if "LAUNCH_DEPENDENTS=True" in b]
    (waits,) = [b for b in blocks if "PDL=True" in b]
    assert signals.startswith(first) and waits.startswith(second)
    sass = {p.read_text() for p in tmp_path.glob(f"{first}_*.sass")}
    assert any("PREEXIT" in text for text in sass)
    assert "loads early inputs before its wait" in waits, waits
    wait = int(re.search(r"wait at (0x[0-9a-f]+)", waits).group(1), 16)
    fold_start = int(re.search(r"loop 0 \[(0x[0-9a-f]+)-", waits).group(1), 16)
    assert wait < fold_start


@needs_tools
@pytest.mark.parametrize("batch", [1, 20])
def test_decode_kernels_wait_for_the_previous_kernel_before_loading(batch):
    """The decode step's kernels are dependent launches on sm_90: each must wait for the
    kernel before it ahead of its first global load, at both of the input projection's
    paths (fused up to 16 rows, the conv step kernel beyond)."""
    report = _report("decode_step", "--shape", f"{batch},64,16")
    names = re.findall(r"^(_\w+)  warps=", report, flags=re.M)
    expected = {"_rms_norm_fwd_kernel", "_selective_state_update_kernel", "_decode_linear_kernel",
                "_proj_conv_kernel" if batch <= 16 else "_update_kernel"}
    assert set(names) == expected, report
    # ... but the SSM step, told that x_proj's product before it writes only dt, B and C,
    # which it loads after its wait (3 loads or more), reads the rest before (more loads);
    # so does the conv step after the input projection, fused (its windows and taps, before
    # the product's loads) or as a kernel of its own (x after its wait, the rest before).
    early = dict(re.findall(r"^(_\w+)  warps=.*\n.*\n.*\n  dependent launch: loads early inputs before its wait "
                            r"\((\d+ loads before, \d+) after\)", report, flags=re.M))
    assert set(early) == {"_selective_state_update_kernel", "_update_kernel" if batch > 16 else "_proj_conv_kernel"}, report
    assert report.count("dependent launch: waits before its first global load") == len(names) - len(early), report
    for name, counts in early.items():
        before, after = map(int, counts.split(" loads before, "))
        if name != "_proj_conv_kernel":  # whose product's loads all follow the wait
            assert before > after >= (3 if name == "_selective_state_update_kernel" else 1), report
        else:
            assert before > 0, report
    assert "signals dependants: False" not in report
    # Each reads something no kernel just before it writes (weights, states, the residual):
    # those are requested into L2 while it waits (the SSM step loads them instead).
    waiting = [line for line in report.splitlines() if "waits before its first global load" in line]
    assert waiting and not any("L2 prefetches before the wait: 0)" in line for line in waiting), report


@needs_tools
def test_a_large_ssm_step_reads_all_but_its_state_before_the_wait():
    """At batch 64 of the 130M shape the SSM step reads x, z and its parameters before the
    wait and its state (prefetched into L2 meanwhile), dt, B and C after it; with
    SEQMAMBA_LARGE_STEP_EARLY_PARAMS=0 it waits before any load."""
    def ssm_step(report: str) -> str:
        return next(line for line in _kernel_block(report, "_selective_state_update_kernel").splitlines()
                    if "dependent launch:" in line)

    off = ssm_step(_report("decode_step", "--shape", "64,768,16", SEQMAMBA_LARGE_STEP_EARLY_PARAMS="0"))
    assert "waits before its first global load" in off, off
    params = ssm_step(_report("decode_step", "--shape", "64,768,16"))
    before, after = map(int, re.search(r"\((\d+) loads before, (\d+) after\)", params).groups())
    assert before >= 3 and after >= 4, params  # after: the state, dt, B and C
    assert "L2 prefetches before the wait: 0)" not in params, params
