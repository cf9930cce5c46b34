"""The Triton selective scan against the float64 sequential reference.

Every check compares the output, the final state and every gradient (the final state's
gradient included) on fresh random inputs. On a CPU the kernels run under the Triton
interpreter (tests/kernels/conftest.py sets TRITON_INTERPRET=1), which is slow, so the
shapes are tiny there; on a GPU the same cases run at larger sizes.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from fake_check import assert_fake_matches_real

from seqmamba.kernels import selective_scan
from seqmamba.kernels.selective_scan import triton_bwd, triton_fwd

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
# Channels and batch: tiny under the interpreter, enough for several programs on a GPU.
DIM = 160 if ON_GPU else 3
BATCH = 2
# The kernels step through chunks of 4 or 8 steps and save a state every 64 steps:
# lengths straddle each of those boundaries.
LENGTHS_CPU = (1, 7, 9, 63, 65, 129)
LENGTHS_GPU = (1, 7, 9, 63, 65, 129, 1000, 4099)
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 5e-3}
GRADS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


@dataclasses.dataclass(frozen=True)
class Case:
    length: int
    n_state: int = 4
    dtype: torch.dtype = torch.float32
    bc: str = "varying"  # "varying" (batch, N, L), "grouped" (batch, 2, N, L), "invariant" (D, N), "mixed"
    with_D: bool = True
    with_z: bool = True
    with_bias: bool = True
    softplus: bool = True
    with_init: bool = True
    # "contiguous", "strided": (batch, L, D) memory viewed as (batch, D, L), or "projection":
    # (D, batch, L) memory, as a Mamba block's views of its projections are laid out.
    layout: str = "contiguous"
    dim: int = DIM
    batch: int = BATCH
    # Small dt (~0.02), so that a 64-step segment's total decay exp(A sum dt) stays well
    # above fp32 rounding and a split sequence's fold of segment states is really tested.
    small_dt: bool = False


def make_inputs(case: Case, generator: torch.Generator) -> dict[str, torch.Tensor | None]:
    """Random inputs (never zeros) in the case's dtypes and layouts."""
    b, d, length, n = case.batch, case.dim, case.length, case.n_state

    def rand(*shape: int, scale: float = 1.0, dtype: torch.dtype = case.dtype) -> torch.Tensor:
        return (torch.randn(*shape, generator=generator) * scale).to(DEVICE, dtype)

    def seq(scale: float = 1.0) -> torch.Tensor:
        if case.layout == "strided":
            return rand(b, length, d, scale=scale).transpose(1, 2)
        if case.layout == "projection":
            return rand(d, b, length, scale=scale).permute(1, 0, 2)
        return rand(b, d, length, scale=scale)

    def bc(form: str) -> torch.Tensor:
        if form == "invariant":
            return rand(d, n, dtype=torch.float32)
        if form == "grouped":
            return rand(b, 2, n, length)
        if case.layout == "strided":
            return rand(b, length, n).transpose(1, 2)
        return rand(b, n, length)

    b_form, c_form = ("invariant", "varying") if case.bc == "mixed" else (case.bc, case.bc)
    if case.softplus:
        delta = seq(0.5) - (4.0 if case.small_dt else 0.0)  # softplus(-4) = 0.018
    else:
        delta = rand(b, d, length, dtype=torch.float32).abs().mul(0.02 if case.small_dt else 0.3).to(case.dtype)
    return dict(
        u=seq(),
        delta=delta,
        A=-torch.exp(torch.randn(d, n, generator=generator) * 0.5).to(DEVICE),
        B=bc(b_form),
        C=bc(c_form),
        D=rand(d, dtype=torch.float32) if case.with_D else None,
        z=seq() if case.with_z else None,
        delta_bias=rand(d, scale=0.3, dtype=torch.float32) if case.with_bias else None,
        initial_state=rand(b, d, n, dtype=torch.float32) if case.with_init else None,
    )


def run(inputs: dict, case: Case, backend: str, dout: torch.Tensor | None,
        dfinal: torch.Tensor | None) -> dict[str, torch.Tensor | None]:
    """Output, final state and every gradient of <out, dout> + <final, dfinal> (a None
    gradient: that output unused)."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items() if v is not None}
    if backend == "sequential":  # the reference runs in float64
        leaves = {k: v.detach().double().requires_grad_(True) for k, v in leaves.items()}
    out, final = selective_scan(
        **leaves, delta_softplus=case.softplus, return_final_state=True, backend=backend
    )
    used = [(x, g.to(x.dtype)) for x, g in ((out, dout), (final, dfinal)) if g is not None]
    torch.autograd.backward(*map(list, zip(*used)))
    result = {"out": out.detach(), "final_state": final.detach()}
    result.update({f"d{k}": v.grad for k, v in leaves.items()})
    return result


def check(case: Case, seed: int = 0, used: tuple[str, ...] = ("out", "final_state")) -> None:
    gen = torch.Generator().manual_seed(seed)
    inputs = make_inputs(case, gen)
    dout = torch.randn(case.batch, case.dim, case.length, generator=gen).to(DEVICE)
    dfinal = torch.randn(case.batch, case.dim, case.n_state, generator=gen).to(DEVICE)
    dout = dout if "out" in used else None
    dfinal = dfinal if "final_state" in used else None
    got = run(inputs, case, "triton", dout, dfinal)
    want = run(inputs, case, "sequential", dout, dfinal)
    assert got.keys() == want.keys()
    assert got["out"].dtype == inputs["u"].dtype and got["final_state"].dtype == torch.float32
    for name, ref in want.items():
        val = got[name]
        if ref is None:  # an input only the unused output depends on (z, D): no gradient, or zeros
            assert val is None or not val.any(), name
            continue
        assert val.shape == ref.shape, name
        if name[1:] in inputs:
            assert val.dtype == inputs[name[1:]].dtype, name
        assert torch.isfinite(val).all(), name
        err = ((val.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()
        assert err < TOL[case.dtype], f"{name}: relative error {err:.2e} for {case}"


@pytest.mark.parametrize("used", [("out",), ("final_state",)])
def test_one_output_used(used, monkeypatch):
    """The gradient of the unused output reaches the op as None, not zeros (the backward
    then reads no final-state gradient, or makes a zero dout itself)."""
    dfinals = []
    scan_bwd = triton_bwd.scan_bwd

    def spy(*args, **kwargs):
        dfinals.append(args[12])
        return scan_bwd(*args, **kwargs)

    monkeypatch.setattr(triton_bwd, "scan_bwd", spy)
    check(Case(length=65), used=used)
    assert len(dfinals) == 1 and (dfinals[0] is None) == ("final_state" not in used)


LENGTHS = LENGTHS_GPU if ON_GPU else LENGTHS_CPU


@pytest.mark.parametrize("length", LENGTHS)
def test_all_options_fp32(length):
    check(Case(length=length))


@pytest.mark.parametrize("length", (7, 129) if not ON_GPU else LENGTHS)
def test_all_options_bf16(length):
    check(Case(length=length, dtype=torch.bfloat16), seed=1)


def test_long_sequence():
    """Many saved intervals: 1000 steps under the interpreter, 2^15 on a GPU."""
    if ON_GPU:
        check(Case(length=32768, dim=64, n_state=16), seed=2)
    else:
        check(Case(length=1000, dim=1, n_state=2, batch=1), seed=2)


@pytest.mark.parametrize("bc", ("grouped", "invariant", "mixed"))
def test_bc_forms(bc):
    check(Case(length=65, bc=bc, dim=4 if not ON_GPU else DIM), seed=3)


@pytest.mark.parametrize(
    "options",
    (
        dict(with_D=False, with_z=False, with_bias=False, softplus=False, with_init=False),
        dict(with_z=False, with_init=False),
        dict(with_D=False, with_bias=False),
    ),
)
def test_optional_terms(options):
    check(Case(length=37, **options), seed=4)


@pytest.mark.parametrize("n_state", (1, 16) + ((64, 256) if ON_GPU else ()))
def test_state_sizes(n_state):
    check(Case(length=23, n_state=n_state, dim=DIM if ON_GPU else 2), seed=5)


def test_strided_inputs():
    """(batch, L, D) memory viewed as (batch, D, L), as a Mamba block produces it."""
    check(Case(length=41, layout="strided"), seed=6)


def test_outputs_and_gradients_are_laid_out_like_their_inputs():
    """u, delta, z laid out (D, batch, L) as a Mamba block's projections give them: out, du,
    ddelta and dz come out in that layout (the reshapes to the next projection stay views)."""
    case = Case(length=41, layout="projection")
    check(case, seed=17)
    gen = torch.Generator().manual_seed(18)
    inputs = make_inputs(case, gen)
    dout = torch.randn(case.batch, case.dim, case.length, generator=gen).to(DEVICE)
    dfinal = torch.randn(case.batch, case.dim, case.n_state, generator=gen).to(DEVICE)
    got = run(inputs, case, "triton", dout, dfinal)
    for name in ("out", "du", "ddelta", "dz"):
        assert got[name].stride() == inputs["u"].stride() == (case.length, case.batch * case.length, 1), name


def test_half_precision():
    check(Case(length=33, dtype=torch.float16), seed=7)


@pytest.fixture
def deterministic():
    """torch.use_deterministic_algorithms(True) for one test: the backward then sums dB and
    dC over channel blocks in a fixed order instead of with atomics."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


@pytest.mark.parametrize("bc", ("varying", "grouped", "mixed"))
def test_deterministic_backward(deterministic, bc):
    """The fixed-order sums give the same gradients as the reference, and the same bits twice."""
    case = Case(length=129, bc=bc, dim=4 if not ON_GPU else DIM)
    check(case, seed=15)
    gen = torch.Generator().manual_seed(16)
    inputs = make_inputs(case, gen)
    dout = torch.randn(case.batch, case.dim, case.length, generator=gen).to(DEVICE)
    dfinal = torch.randn(case.batch, case.dim, case.n_state, generator=gen).to(DEVICE)
    first, second = (run(inputs, case, "triton", dout, dfinal) for _ in range(2))
    for name in ("dB", "dC"):
        assert torch.equal(first[name], second[name]), name


@pytest.fixture
def scattered_sums(monkeypatch):
    """The backward sums dB and dC over its channels by scattered exchanges."""
    from seqmamba.kernels.selective_scan import triton_bwd

    monkeypatch.setattr(triton_bwd, "SCATTERED_SUMS", True)


@pytest.mark.parametrize("n_state", (2, 4, 16))
@pytest.mark.parametrize("fixed_order", (False, True))
def test_scattered_channel_sums(scattered_sums, n_state, fixed_order):
    """Exchanges that halve the steps, then (few states make programs of 32 channels, more
    than a chunk has steps) a butterfly whose duplicates must be written once. 40
    channels: a full program and one with 8 channels (N = 16: programs of 8)."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(fixed_order)
    try:
        check(Case(length=19, n_state=n_state, dim=40, batch=1, with_init=False), seed=17)
        check(Case(length=129, dtype=torch.bfloat16, bc="grouped", dim=4), seed=18)
    finally:
        torch.use_deterministic_algorithms(before)


def check_no_grad(case: Case, seed: int) -> None:
    """Output and final state with autograd off (no states saved) against the reference."""
    inputs = make_inputs(case, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        out, final = selective_scan(**inputs, delta_softplus=True, return_final_state=True, backend="triton")
        ref_out, ref_final = selective_scan(
            **{k: v.double() if v is not None else None for k, v in inputs.items()},
            delta_softplus=True, return_final_state=True, backend="sequential",
        )
    assert ((out.double() - ref_out).norm() / ref_out.norm()).item() < 1e-5
    assert ((final.double() - ref_final).norm() / ref_final.norm()).item() < 1e-5


def test_no_grad_forward_matches():
    """Without autograd no states are saved; the forward is the same."""
    check_no_grad(Case(length=50), seed=8)


def test_float64_is_refused_with_a_clear_error():
    case = Case(length=5)
    inputs = make_inputs(case, torch.Generator().manual_seed(9))
    inputs["z"] = inputs["z"].double()
    with pytest.raises(ValueError, match=r"backend 'triton' takes z in float16, bfloat16 or float32.*float64"):
        selective_scan(**inputs, backend="triton")



# Splitting L across programs: a first pass runs every segment but the last from a zero
# state, then each segment's program folds the earlier segments' end states into its start
# state. The fixture forces 64-step segments (the shortest the saved states allow) at any
# launch size, so tiny lengths give several segments and a partial last one.


@pytest.fixture
def split_l(monkeypatch):
    from seqmamba.kernels.selective_scan import triton_bwd, triton_fwd

    for module in (triton_fwd, triton_bwd):
        monkeypatch.setattr(module, "SPLIT_L", True)
        monkeypatch.setattr(module, "MIN_SEG_LEN", 64)
        monkeypatch.setattr(module, "SPLIT_PROGRAMS", 1 << 30)
    monkeypatch.setattr(triton_fwd, "SPLIT_BELOW", 1 << 30)
    return triton_fwd


@pytest.fixture
def split_backward_only(monkeypatch):
    """The backward split into 64-step segments, the forward not split."""
    from seqmamba.kernels.selective_scan import triton_bwd, triton_fwd

    monkeypatch.setattr(triton_fwd, "SPLIT_L", False)
    monkeypatch.setattr(triton_fwd, "PREFETCH", False)
    monkeypatch.setattr(triton_bwd, "SPLIT_L", True)
    monkeypatch.setattr(triton_bwd, "MIN_SEG_LEN", 64)
    monkeypatch.setattr(triton_bwd, "SPLIT_PROGRAMS", 1 << 30)
    monkeypatch.setattr(triton_bwd, "TARGET_PROGRAMS", 1 << 30)


def test_split_config_picks_segments(split_l):
    """Segments only where programs are few, aligned to the saved-state interval, never one."""
    cfg = split_l.fwd_config(BATCH, DIM, 4, length=200, align=64)
    assert cfg.seg_len == 64
    assert split_l.fwd_config(BATCH, DIM, 4, length=64, align=64).seg_len is None  # one segment
    split_l.SPLIT_BELOW, split_l.SPLIT_PROGRAMS, split_l.MIN_SEG_LEN = 128, 6144, 2048
    assert split_l.fwd_config(4, 1536, 16, length=16384, align=64).seg_len is None  # 192 programs: enough
    # (1, 1536, 131072, 16): 48 programs of 32 channels -> 64 segments of 2048 steps.
    assert split_l.fwd_config(1, 1536, 16, length=131072, align=64).seg_len == 2048
    assert split_l.fwd_config(1, 1536, 16, length=131072, align=64).first_pass == (32, 8)  # one channel a lane
    split_l.SPLIT_L = False
    assert split_l.fwd_config(1, 1536, 16, length=131072, align=64).seg_len is None


def test_split_backward_config_picks_segments(split_l):
    from seqmamba.kernels.selective_scan import triton_bwd

    assert triton_bwd.bwd_config(BATCH, DIM, 4, length=200, align=64).seg_len == 64
    assert triton_bwd.bwd_config(BATCH, DIM, 4, length=64, align=64).seg_len is None
    triton_bwd.SPLIT_PROGRAMS, triton_bwd.TARGET_PROGRAMS, triton_bwd.MIN_SEG_LEN = 8192, 2048, 1024
    assert triton_bwd.bwd_config(8, 4096, 16, length=2048, align=64).seg_len is None  # 4096 programs: enough
    # (1, 1536, 131072, 16): 192 programs of 8 channels -> 43 segments of 3072 steps.
    assert triton_bwd.bwd_config(1, 1536, 16, length=131072, align=64).seg_len == 3072


@pytest.mark.parametrize("split", (False, True))
@pytest.mark.parametrize("length", (7, 129) if not ON_GPU else (7, 129, 4099))
def test_forward_without_prefetch(split_l, monkeypatch, split, length):
    """Tiles loaded as each chunk starts (the default loads one chunk ahead): sequences
    with no full chunk, one segment or several."""
    monkeypatch.setattr(split_l, "PREFETCH", False)
    monkeypatch.setattr(split_l, "SPLIT_L", split)
    check(Case(length=length, small_dt=True, bc="mixed" if split else "varying"), seed=14)


@pytest.mark.parametrize("length", (200,) if not ON_GPU else (200, 4099))
def test_split_backward_only(split_backward_only, length):
    """Backward segments starting from the forward's saved states (the forward in one piece)."""
    check(Case(length=length, small_dt=True, bc="mixed"), seed=13)


@pytest.mark.parametrize("length", (129, 200) if not ON_GPU else (129, 200, 4099))
def test_split_all_options(split_l, length):
    check(Case(length=length, small_dt=True), seed=10)


@pytest.mark.parametrize(
    "options",
    (
        dict(bc="grouped", dim=4 if not ON_GPU else DIM),
        dict(bc="mixed", with_init=False),
        dict(with_D=False, with_z=False, with_bias=False, softplus=False, with_init=False),
        dict(dtype=torch.bfloat16, layout="strided"),
    ),
)
def test_split_options(split_l, options):
    check(Case(length=150, small_dt=True, **options), seed=11)


def test_split_no_grad_short_segments(split_l, monkeypatch):
    """Without a backward the segments need only be whole chunks: 8 steps, partial last one."""
    monkeypatch.setattr(split_l, "MIN_SEG_LEN", 8)
    check_no_grad(Case(length=50, small_dt=True), seed=12)


@pytest.fixture(params=(True, False), ids=("ahead", "at-use"))
def delta_ahead(request, monkeypatch):
    """Each chunk's delta (and the split backward's dy) made an iteration ahead, or next to
    its use, in both kernels whatever the launch's size (the defaults choose by it)."""
    from seqmamba.kernels.selective_scan import triton_bwd, triton_fwd

    for module in (triton_fwd, triton_bwd):
        monkeypatch.setattr(module, "DELTA_AHEAD", request.param)


# Cases for values carried from one chunk's iteration into the next: one chunk or
# several, a partial last chunk, every B/C form, without bias, softplus, D, z.
CARRIED_CASES = (
    dict(length=1),
    dict(length=7),
    dict(length=129, bc="grouped", dim=4),
    dict(length=200, bc="mixed", dtype=torch.bfloat16, layout="strided"),
    dict(length=150, with_D=False, with_z=False, with_bias=False, softplus=False, with_init=False),
    dict(length=67, n_state=16, bc="invariant"),
)


@pytest.mark.parametrize("options", CARRIED_CASES)
def test_delta_ahead(delta_ahead, options):
    """The delta carried into each chunk from the iteration before: one chunk or several,
    a partial last chunk, every B/C form, without bias, softplus, D, z."""
    check(Case(**options), seed=19)


@pytest.mark.parametrize("length", (129, 200) if not ON_GPU else (129, 4099))
def test_delta_ahead_split(delta_ahead, split_l, length):
    """... with L split: the forward's first pass and the backward's segment pass carry it too."""
    check(Case(length=length, small_dt=True, bc="mixed"), seed=20)


def _and_not_default(default):
    """Both settings of a boolean on the GPU; on the CPU (the interpreter is slow) only the
    one every other test does not already run."""
    return (True, False) if ON_GPU else (not default,)


@pytest.fixture(params=_and_not_default(triton_bwd.PREFETCH), ids=lambda on: "prefetch" if on else "in-place")
def bwd_prefetch(request, monkeypatch):
    """The backward loads each chunk's tiles (and each interval's saved state) an
    iteration ahead, or in place."""
    monkeypatch.setattr(triton_bwd, "PREFETCH", request.param)


@pytest.mark.parametrize("options", CARRIED_CASES)
def test_bwd_prefetch(bwd_prefetch, options):
    """Tiles carried from the iteration before: the first chunk of each saved interval
    loaded before its loop, the clamped reload at the interval's first chunk, a partial
    last chunk, every B/C form, without z (dout carried alone)."""
    check(Case(**options), seed=21)


@pytest.mark.parametrize("groups", (1, 2, 4) if ON_GPU else (1, 4))  # the small tests' default is 2
def test_channel_sums_in_groups(groups, monkeypatch):
    """dB and dC added into memory per group of channels (each group's sums atomically), or
    as one sum over the program's channels:
    programs of 8 channels (N = 16) and of 32 (N = 2), a partial channel block, grouped
    and mixed B/C."""
    monkeypatch.setattr(triton_bwd, "SUM_GROUPS", groups)
    check(Case(length=19, n_state=2, dim=40, batch=1, with_init=False), seed=23)
    check(Case(length=129, dtype=torch.bfloat16, bc="grouped", dim=12), seed=24)
    check(Case(length=70, bc="mixed"), seed=25)


@pytest.mark.parametrize("copies", (2, 4))
def test_channel_sums_in_copies(copies, monkeypatch):
    """dB and dC added into several copies of their buffer (neighbouring channel blocks into
    different ones), which the caller adds up: more channel blocks than copies, fewer (one
    block of 8 channels), two groups of channels, grouped and mixed B/C."""
    with_default_launch_changed(monkeypatch, triton_bwd, add_copies=copies)
    check(Case(length=19, n_state=2, dim=40, batch=1, with_init=False), seed=26)
    check(Case(length=129, dtype=torch.bfloat16, bc="grouped", dim=40), seed=27)
    check(Case(length=70, bc="mixed", dim=8), seed=28)


def with_default_launch_changed(monkeypatch, module, **changes) -> None:
    """The module's default launch (fwd_config or bwd_config) with some fields changed."""
    name = "fwd_config" if module is triton_fwd else "bwd_config"
    default = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: dataclasses.replace(default(*a, **k), **changes))


@pytest.fixture
def late_loads(monkeypatch):
    """The forward loads delta, u and z two chunks ahead and makes each chunk's delta and
    gate at the top of the iteration before (FwdConfig.late_loads)."""
    with_default_launch_changed(monkeypatch, triton_fwd, prefetch=True, late_loads=True)


@pytest.mark.parametrize("options", CARRIED_CASES if ON_GPU else CARRIED_CASES[1:4])
def test_forward_late_loads(late_loads, options):
    """Tiles carried two chunks: one chunk or several (the reloads clamped to the last), a
    partial last chunk, every B/C form, without bias, softplus, D, z."""
    check(Case(**options), seed=29)


def test_forward_late_loads_split(late_loads, split_l):
    """... with L split: the first pass (no outputs) and the segments' own chunk ranges."""
    check(Case(length=200 if not ON_GPU else 4099, small_dt=True, bc="mixed"), seed=30)


@pytest.mark.parametrize("first_pass", ((32, 8), (2, 16)), ids=("wider", "narrower"))
def test_forward_first_pass_of_its_own_shape(monkeypatch, split_l, first_pass):
    """A split forward's first pass in programs of other widths and chunk lengths than the
    second pass's (FwdConfig.first_pass), with channels left over in the last program."""
    with_default_launch_changed(monkeypatch, triton_fwd, first_pass=first_pass)
    check(Case(length=200 if not ON_GPU else 4099, small_dt=True, bc="mixed", dim=40), seed=32)


@pytest.fixture(params=((1, False), (2, True)), ids=("one-step", "two-steps-half"))
def fma_exps(request, monkeypatch):
    """Decays of each chunk's last steps (all states, or the first half) computed on the
    FMA pipe (exp2_fma) in every pass: the forward, a split forward's first pass and a
    split backward's first pass."""
    steps, half = request.param
    with_default_launch_changed(monkeypatch, triton_fwd, fma_exp_steps=steps, first_pass_fma_exp_steps=steps,
                                fma_exp_half=half)
    with_default_launch_changed(monkeypatch, triton_bwd, seg_fma_exp_steps=steps, seg_fma_exp_half=half)


@pytest.mark.parametrize("case", [
    Case(length=200 if not ON_GPU else 4099, small_dt=True, bc="mixed", n_state=16),
    Case(length=129, dtype=torch.bfloat16, bc="grouped", dim=8),
], ids=("mixed-16-states", "grouped-bf16"))
@pytest.mark.parametrize("split", (False, True))
def test_fma_pipe_exponentials(request, fma_exps, case, split):
    """Output, final state and every gradient with part of the decays on the FMA pipe,
    L in one piece and split (both kernels' first passes)."""
    if split:
        request.getfixturevalue("split_l")
    check(case, seed=33)


@pytest.mark.parametrize("shape", ((2, 4, 4), (1, 8, 8)), ids=("2ch-4groups-of-4", "1ch-8groups-of-8"))
@pytest.mark.parametrize("case", [
    Case(length=200 if not ON_GPU else 4099, small_dt=True, bc="mixed"),
    Case(length=7, n_state=3, dim=5, bc="invariant", with_init=False),
    Case(length=129, dtype=torch.bfloat16, bc="grouped", dim=4, layout="strided"),
    Case(length=150, with_D=False, with_z=False, with_bias=False, softplus=False, with_init=False),
], ids=("mixed", "short-invariant-3-states", "grouped-bf16-strided", "bare"))
def test_forward_in_time_groups(monkeypatch, shape, case):
    """The forward with each chunk's steps in groups over lanes (FwdConfig.time_groups,
    triton_fwd_groups): channels left over in the last program, a sequence shorter than
    one chunk, N not a power of two, every B/C form and option; the backward then runs
    from the states it saved."""
    block_d, groups, steps = shape
    with_default_launch_changed(monkeypatch, triton_fwd, block_d=block_d, time_groups=groups, chunk=steps,
                                seg_len=None, first_pass=None)
    check(case, seed=34)


@pytest.fixture
def fwd_overlap(monkeypatch):
    """A split forward's two passes overlapped (FwdConfig.overlap): the second pass's grid
    ordered first segment first (and, on Hopper, launched as a dependent launch of the
    first pass, its later segments waiting for it before they fold)."""
    with_default_launch_changed(monkeypatch, triton_fwd, overlap=True)


@pytest.mark.parametrize("case", [
    Case(length=200 if not ON_GPU else 4099, small_dt=True, bc="mixed", batch=4),
    Case(length=129, dtype=torch.bfloat16, bc="grouped", with_init=False, dim=8),
    Case(length=4099 if ON_GPU else 65, small_dt=True, layout="projection"),
], ids=("mixed", "grouped-bf16", "projection"))
@pytest.mark.parametrize("overlapped", ("none", "backward", "both"))
def test_overlapped_split(request, monkeypatch, split_l, case, overlapped):
    """Several segments and batch rows (4 with 4 segments: a mapping of the grid that mixes
    them up covers some pair twice) in the reordered grids, and in the plain ones: output,
    final state and every gradient. 'none' and 'backward': the forward not split."""
    with_default_launch_changed(monkeypatch, triton_bwd, overlap=overlapped != "none")
    if overlapped == "both":
        request.getfixturevalue("fwd_overlap")
    else:
        request.getfixturevalue("split_backward_only")
    check(case, seed=31)


def test_bwd_prefetch_split(bwd_prefetch, split_l):
    """... with L split: each segment's first interval loads its saved state before the
    loop, and its last interval's reload is clamped to the segment."""
    check(Case(length=200 if not ON_GPU else 4099, small_dt=True, bc="mixed"), seed=22)


def test_delta_ahead_where_states_share_lanes():
    """The forward makes delta ahead where a channel's states lie on several lanes (the
    benchmark shapes as timed) and keeps 8-channel programs at 168 registers where they
    are too many to be resident uncapped; the backward makes it ahead everywhere."""
    from seqmamba.kernels.selective_scan import triton_bwd, triton_fwd

    narrow = triton_fwd.fwd_config(8, 1536, 16, length=2048)  # 1536 programs of 8 channels
    assert narrow.block_d == 8 and narrow.delta_ahead and narrow.maxnreg == 168
    wide = triton_fwd.fwd_config(8, 4096, 16, length=2048)  # 1024 programs, a channel a lane
    assert wide.block_d == 32 and not wide.delta_ahead and wide.maxnreg is None
    few = triton_fwd.fwd_config(4, 1536, 16, length=16384)  # 768 programs of 8: all resident uncapped
    assert few.block_d == 8 and few.delta_ahead and few.maxnreg is None
    split = triton_fwd.fwd_config(1, 1536, 16, length=131072)
    assert split.delta_ahead and (split.seg_len is not None or not triton_fwd.SPLIT_L)
    assert triton_bwd.bwd_config(8, 1536, 16, length=2048).delta_ahead


def test_late_loads_only_in_an_unsplit_forward_saving_nothing():
    """Late loads (FwdConfig.late_loads) where they were faster: the forward that saves no
    states (align 1) and does not split L; not when it saves states for a backward, nor
    in either pass of a split."""
    from seqmamba.kernels.selective_scan import triton_fwd

    for rows, dim, length in ((8, 1536, 2048), (8, 4096, 2048), (4, 1536, 16384)):
        assert triton_fwd.fwd_config(rows, dim, 16, length=length, align=1).late_loads
        assert not triton_fwd.fwd_config(rows, dim, 16, length=length, align=64).late_loads
    split = triton_fwd.fwd_config(1, 1536, 16, length=131072, align=1)
    assert split.seg_len is not None and not split.late_loads


def test_bwd_defaults_by_launch():
    """The backward prefetches everywhere and adds dB and dC per two groups of channels
    where each address then takes at most MAX_ADDS additions (192 blocks of 8 channels: 384),
    into two copies of their buffer where that brings it there, else in one group; a split
    L's two kernels overlap."""
    from seqmamba.kernels.selective_scan import triton_bwd

    few = triton_bwd.bwd_config(8, 1536, 16, length=2048)
    assert few.prefetch and few.block_d == 8 and (few.sum_groups, few.add_copies) == (2, 1)
    assert few.seg_len == 1024 and few.overlap
    many = triton_bwd.bwd_config(8, 4096, 16, length=2048)  # 512 blocks: 1024 additions an address
    assert many.prefetch and (many.sum_groups, many.add_copies) == (2, 2)
    most = triton_bwd.bwd_config(8, 8192, 16, length=2048)  # 1024 blocks: 1024 a copy even with two
    assert (most.sum_groups, most.add_copies) == (1, 1)


@pytest.mark.parametrize("layout", ("strided", "projection"))
def test_fake_implementations_give_the_kernels_shapes_strides_and_dtypes(layout):
    case = Case(length=9, layout=layout, dtype=torch.bfloat16)
    inputs = make_inputs(case, torch.Generator().manual_seed(19))
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")
    fwd_args = [inputs[k] for k in names] + [True, True]  # delta_softplus, save_states
    out, final, states = torch.ops.seqmamba.selective_scan_fwd.default(*fwd_args)
    bwd_args = [inputs[k] for k in names[:-1]] + [states, torch.randn_like(out), torch.randn_like(final), True, None]
    assert_fake_matches_real(torch.ops.seqmamba.selective_scan_fwd.default, fwd_args)
    assert_fake_matches_real(torch.ops.seqmamba.selective_scan_bwd.default, bwd_args)
    # dz into a given buffer (a view of a larger one): its slot in the outputs is empty.
    batch, dim, length = out.shape
    bwd_args[-1] = torch.empty((batch, 2 * dim, length), dtype=inputs["z"].dtype, device=out.device)[:, dim:]
    assert_fake_matches_real(torch.ops.seqmamba.selective_scan_bwd.default, bwd_args)


def test_backward_writes_dz_into_a_given_buffer():
    # The Mamba block's backward hands in the z half of the in_proj output's gradient.
    case = Case(length=9, layout="projection", dtype=torch.float32)
    inputs = make_inputs(case, torch.Generator().manual_seed(23))
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")
    out, final, states = torch.ops.seqmamba.selective_scan_fwd.default(*[inputs[k] for k in names], True, True)
    gen = torch.Generator().manual_seed(24)
    dout, dfinal = (torch.randn(t.shape, generator=gen).to(t.device) for t in (out, final))
    args = [inputs[k].detach() for k in names[:-1]] + [states, dout, dfinal, True]
    want = torch.ops.seqmamba.selective_scan_bwd.default(*args, None)
    batch, dim, length = out.shape
    buffer = torch.full((batch, 2 * dim, length), float("nan"), device=out.device)
    got = torch.ops.seqmamba.selective_scan_bwd.default(*args, buffer[:, dim:])
    assert got[6].numel() == 0  # dz went into the buffer
    torch.testing.assert_close(buffer[:, dim:], want[6])
    for i, (g, w) in enumerate(zip(got, want)):
        if i != 6:
            torch.testing.assert_close(g, w, msg=str(i))
    assert buffer[:, :dim].isnan().all()  # the other half untouched


@pytest.mark.parametrize("save_every", (8, 16))
@pytest.mark.parametrize("split", (False, True))
def test_states_saved_more_often(split_l, monkeypatch, save_every, split):
    """States saved every 8 steps (one per backward chunk: the backward recomputes no chunk
    start states) or 16; the forward's 16-step chunks shrink to fit the interval."""
    from seqmamba.kernels.selective_scan import custom_op

    monkeypatch.setattr(custom_op, "SAVE_EVERY", save_every)
    monkeypatch.setattr(split_l, "SPLIT_L", split)
    assert split_l.fwd_config(1, 64, 16, align=save_every).chunk <= save_every
    check(Case(length=129 if not ON_GPU else 4099, small_dt=True, bc="mixed" if split else "varying"), seed=15)
