"""selective_state_update: Triton kernel against the reference (output and in-place state),
T steps against the sequential selective scan, layouts, block sizes, custom-op
registration, compilation and input errors."""
from __future__ import annotations

import itertools
import math
import re

import pytest
import torch
import torch.nn.functional as F
import triton

from seqmamba.kernels import selective_scan, selective_state_update
from seqmamba.kernels.selective_state_update import triton_kernel
from seqmamba.kernels.selective_state_update.op import selective_state_update_op
from seqmamba.kernels.selective_state_update.reference import selective_state_update_reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# The Triton interpreter truncates float32 -> bfloat16/float16 casts (compiled kernels round
# to nearest), so a stored value may sit one step of the narrow type away from the reference.
TOL = {torch.float32: 1e-5, torch.bfloat16: 2**-6, torch.float16: 2**-9}
ALL = dict(D=True, z=True, dt_bias=True, softplus=True)
OPTIONS = {
    "plain": dict(),
    "all": ALL,
    "z": dict(z=True),
    "D+bias": dict(D=True, dt_bias=True),
    "softplus+bias": dict(dt_bias=True, softplus=True),
    "all-groups4": dict(ALL, groups=4),
    "all-B-groups2-C-plain": dict(ALL, groups=2, c_groups=0),
    "all-state-in-model-dtype": dict(ALL, state_in_model_dtype=True),
}


def make_inputs(seed, *, batch=3, dim=40, n_state=16, dtype=torch.float32, D=False, z=False, dt_bias=False,
                softplus=False, groups=0, c_groups=None, state_in_model_dtype=False):
    """Random step inputs as keyword arguments of selective_state_update (groups=0: (batch, N) B/C)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, dt=dtype):
        return torch.randn(*shape, generator=gen).to(device=DEVICE, dtype=dt)

    def bc(g):
        return randn(batch, n_state) if g == 0 else randn(batch, g, n_state)

    c_groups = groups if c_groups is None else c_groups
    state_dtype = dtype if state_in_model_dtype else torch.float32
    return dict(
        state=randn(batch, dim, n_state, dt=state_dtype),
        x=randn(batch, dim),
        dt=(0.5 * randn(batch, dim, dt=torch.float32)).to(dtype) if softplus else (randn(batch, dim).abs() * 0.3),
        A=-torch.exp(randn(dim, n_state, dt=torch.float32) * 0.5),
        B=bc(groups),
        C=bc(c_groups),
        D=randn(dim, dt=torch.float32) if D else None,
        z=randn(batch, dim) if z else None,
        dt_bias=randn(dim, dt=torch.float32) * 0.5 if dt_bias else None,
        dt_softplus=softplus,
    )


def assert_close(actual, expected, dtype):
    tol = TOL[dtype]
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual.float(), expected.float(), rtol=tol, atol=tol * max(scale, 1.0))


def run_both(inputs):
    """(y, new state) from the Triton kernel and from the reference, on separate copies of the state."""
    state_k = inputs["state"].clone()
    state_r = inputs["state"].clone()
    y_k = selective_state_update(**{**inputs, "state": state_k}, backend="triton")
    y_r = selective_state_update_reference(**{**inputs, "state": state_r})
    return (y_k, state_k), (y_r, state_r)


@pytest.mark.parametrize("options", list(OPTIONS), ids=list(OPTIONS))
@pytest.mark.parametrize("n_state", [1, 16, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_kernel_matches_reference(dtype, n_state, options):
    inputs = make_inputs(1, n_state=n_state, dtype=dtype, **OPTIONS[options])
    state = inputs["state"]
    before = state.clone()
    storage = state.untyped_storage().data_ptr()
    y = selective_state_update(**inputs, backend="triton")
    assert state.untyped_storage().data_ptr() == storage and state.shape == before.shape
    y_ref = selective_state_update_reference(**{**inputs, "state": before})
    assert y.dtype == dtype and y.shape == inputs["x"].shape
    assert y.isfinite().all() and state.isfinite().all()
    assert_close(state, before, state.dtype)  # `before` now holds the reference's new state
    assert_close(y, y_ref, dtype)


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_half_precision_skip_and_bias_are_read_as_float32(backend):
    """D and dt_bias of a bfloat16 model are taken as they are (no cast kernels in the
    decode step) and give the result of their float32 copies."""
    inputs = make_inputs(12, dtype=torch.bfloat16, **ALL)
    half = dict(inputs, D=inputs["D"].to(torch.bfloat16), dt_bias=inputs["dt_bias"].to(torch.bfloat16),
                state=inputs["state"].clone())
    full = dict(inputs, D=half["D"].float(), dt_bias=half["dt_bias"].float(), state=inputs["state"].clone())
    y_half = selective_state_update(**half, backend=backend)
    y_full = selective_state_update(**full, backend=backend)
    torch.testing.assert_close(y_half, y_full, rtol=0, atol=0)
    torch.testing.assert_close(half["state"], full["state"], rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["triton", "reference"])
@pytest.mark.parametrize("log_dtype", [torch.float32, torch.bfloat16], ids=str)
def test_A_given_as_its_log(backend, log_dtype):
    """A_is_log: the op takes -exp(A_log) itself, in float32, from A_log in any dtype."""
    inputs = make_inputs(13, **ALL)
    A_log = torch.log(-inputs["A"]).to(log_dtype)
    with_log = dict(inputs, A=A_log, state=inputs["state"].clone())
    with_A = dict(inputs, A=-torch.exp(A_log.float()), state=inputs["state"].clone())
    y_log = selective_state_update(**with_log, backend=backend, A_is_log=True)
    y_A = selective_state_update(**with_A, backend=backend)
    torch.testing.assert_close(y_log, y_A, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(with_log["state"], with_A["state"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", ["triton", "reference"])
@pytest.mark.parametrize("rank", [3, 48])
def test_dt_projected_inside_the_op(backend, rank):
    """dt_weight: the op takes Mamba's low-rank dt input and projects it itself."""
    inputs = make_inputs(14, **ALL, dim=200)
    gen = torch.Generator().manual_seed(15)
    dt_low = torch.randn(inputs["x"].shape[0], 2 * rank, generator=gen).to(DEVICE)[:, :rank]  # a strided slice
    weight = (torch.randn(200, rank, generator=gen) / rank**0.5).to(DEVICE)
    fused = dict(inputs, dt=dt_low, state=inputs["state"].clone())
    plain = dict(inputs, dt=dt_low @ weight.T, state=inputs["state"].clone())
    y_fused = selective_state_update(**fused, backend=backend, dt_weight=weight)
    y_plain = selective_state_update(**plain, backend=backend)
    torch.testing.assert_close(y_fused, y_plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused["state"], plain["state"], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"dt_weight must have shape \(D, R\) = \(200, %d\)" % rank):
        selective_state_update(**fused, backend=backend, dt_weight=weight[:, :-1] if rank > 1 else weight[:-1])


def test_many_channel_blocks_with_a_partial_last_one():
    # D=200 over blocks of 64: several programs per batch row, the last one partly masked.
    (y_k, s_k), (y_r, s_r) = run_both(make_inputs(2, batch=2, dim=200, n_state=16, **ALL, groups=5))
    assert_close(s_k, s_r, torch.float32)
    assert_close(y_k, y_r, torch.float32)


def test_softplus_over_its_whole_range():
    inputs = make_inputs(3, batch=2, dim=48, n_state=4, softplus=True)
    inputs["dt"] = torch.linspace(-40.0, 40.0, 96, device=DEVICE).reshape(2, 48)
    inputs["A"] = -torch.rand(48, 4, device=DEVICE) * 0.1  # keeps exp(dt * A) away from underflow
    (y_k, s_k), (y_r, s_r) = run_both(inputs)
    assert_close(s_k, s_r, torch.float32)
    assert_close(y_k, y_r, torch.float32)


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_strided_state_inside_a_larger_cache_is_updated_in_place(backend):
    inputs = make_inputs(4, batch=2, dim=24, n_state=8, **ALL)
    cache = torch.randn(4, 30, 8, device=DEVICE)
    untouched = cache.clone()
    state = cache[1:3, 4:28]
    state.copy_(inputs["state"])
    untouched[1:3, 4:28] = inputs["state"]
    y = selective_state_update(**{**inputs, "state": state}, backend=backend)
    expected_state = inputs["state"].clone()
    y_ref = selective_state_update_reference(**{**inputs, "state": expected_state})
    assert_close(cache[1:3, 4:28], expected_state, torch.float32)
    assert_close(y, y_ref, torch.float32)
    outside = torch.ones_like(cache, dtype=torch.bool)
    outside[1:3, 4:28] = False
    assert torch.equal(cache[outside], untouched[outside])


@pytest.mark.parametrize("groups", [0, 2])
@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_steps_equal_the_sequential_scan(backend, groups):
    batch, dim, n_state, steps = 2, 12, 8, 5
    gen = torch.Generator().manual_seed(5)

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(DEVICE)

    bc_shape = (batch, n_state, steps) if groups == 0 else (batch, groups, n_state, steps)
    u, delta, z = randn(batch, dim, steps), 0.5 * randn(batch, dim, steps), randn(batch, dim, steps)
    B, C = randn(*bc_shape), randn(*bc_shape)
    A = -torch.exp(0.5 * randn(dim, n_state))
    D, bias = randn(dim), 0.5 * randn(dim)
    h0 = randn(batch, dim, n_state)
    out, final = selective_scan(u, delta, A, B, C, D=D, z=z, delta_bias=bias, delta_softplus=True,
                                initial_state=h0, return_final_state=True, backend="sequential")
    state = h0.clone()
    ys = [
        selective_state_update(state, u[..., t], delta[..., t], A, B[..., t], C[..., t], D=D, z=z[..., t],
                               dt_bias=bias, dt_softplus=True, backend=backend)
        for t in range(steps)
    ]
    assert_close(torch.stack(ys, dim=-1), out, torch.float32)
    assert_close(state, final, torch.float32)


def test_launch_config_tiles_and_warps():
    small = triton_kernel.launch_config(1, 1536, 16)  # one decode step of a 130M model
    large = triton_kernel.launch_config(64, 1536, 64)
    assert small[2] > large[2], "latency-bound small steps get more warps"
    assert large[0] * large[1] < small[0] * small[1], "large steps get more, smaller programs"
    # Large steps: programs of 8 batch rows at the 130M shape (batch 64), one at batch 1.
    assert triton_kernel.rows_per_program(64, 1536, 16) == 8 and triton_kernel.launch_config(64, 1536, 16) == (8, 16, 1)
    assert triton_kernel.rows_per_program(1, 1536, 16) == 1
    # A small step of many rows (batch 16): 4 rows x 8 channels on two warps.
    assert triton_kernel.rows_per_program(16, 1536, 16) == 4 and triton_kernel.launch_config(16, 1536, 16) == (8, 16, 2)
    for batch, dim, n_state in itertools.product((1, 3, 16, 256), (8, 40, 1536, 5120), (1, 3, 16, 64, 256, 4096)):
        block_d, block_n, warps = triton_kernel.launch_config(batch, dim, n_state)
        rows = triton_kernel.rows_per_program(batch, dim, n_state)
        assert block_n >= n_state and block_n & (block_n - 1) == 0 and block_d & (block_d - 1) == 0
        assert rows & (rows - 1) == 0 and rows <= triton.next_power_of_2(batch)
        assert block_d <= triton.next_power_of_2(dim)
        assert rows * block_d * block_n <= max(triton_kernel._TILE, block_n)
        assert warps in (1, 2, 4, 8) and (warps == 1 or rows * block_d * block_n >= 128 * warps)


@pytest.mark.parametrize("block_d, num_warps", [(1, 8), (2, 4), (64, 1), (8, 8)])
def test_any_block_shape_updates_the_state_once(block_d, num_warps):
    # Tiles far smaller than the program (elements shared by threads of several warps) too.
    inputs = make_inputs(13, batch=2, dim=24, n_state=4, **ALL)
    expected_state = inputs["state"].clone()
    y_ref = selective_state_update_reference(**{**inputs, "state": expected_state})
    args = [inputs[k] for k in ("state", "x", "dt", "A", "B", "C", "D", "z", "dt_bias", "dt_softplus")]
    y = triton_kernel.selective_state_update_triton(*args, block_d=block_d, num_warps=num_warps)
    assert_close(inputs["state"], expected_state, torch.float32)
    assert_close(y, y_ref, torch.float32)


@pytest.mark.parametrize("block_b, block_d, num_warps", [(2, 8, 1), (4, 16, 2), (8, 4, 1)])
@pytest.mark.parametrize("groups", [0, 2])
@pytest.mark.parametrize("dt_weight", [False, True])
def test_programs_of_several_batch_rows(block_b, block_d, num_warps, groups, dt_weight):
    # A batch that no row count divides (the last program's rows are partly masked), a
    # channel count no block divides, grouped and ungrouped B/C, dt given or projected.
    inputs = make_inputs(16, batch=5, dim=24, n_state=16, groups=groups, **ALL)
    if dt_weight:
        gen = torch.Generator().manual_seed(17)
        inputs["dt"] = torch.randn(5, 6, generator=gen).to(DEVICE)[:, ::2]  # strided low-rank input
        inputs["dt_weight"] = torch.randn(24, 3, generator=gen).to(DEVICE) / 3**0.5
    expected_state = inputs["state"].clone()
    y_ref = selective_state_update_reference(**{**inputs, "state": expected_state})
    args = [inputs[k] for k in ("state", "x", "dt", "A", "B", "C", "D", "z", "dt_bias", "dt_softplus")]
    y = triton_kernel.selective_state_update_triton(*args, dt_weight=inputs.get("dt_weight"), block_d=block_d,
                                                    num_warps=num_warps, block_b=block_b)
    assert_close(inputs["state"], expected_state, torch.float32)
    assert_close(y, y_ref, torch.float32)


# --- torch.library registration and compilation ----------------------------------------


def _op_args(inputs):
    return tuple(inputs[k] for k in ("state", "x", "dt", "A", "B", "C", "D", "z", "dt_bias", "dt_softplus"))


def test_custom_op_registration_passes_opcheck():
    torch.library.opcheck(selective_state_update_op, _op_args(make_inputs(6, batch=2, dim=8, n_state=4, **ALL)))
    torch.library.opcheck(selective_state_update_op, _op_args(make_inputs(7, batch=2, dim=8, n_state=4)))


def test_compiled_decode_keeps_both_in_place_updates():
    inputs = make_inputs(8, batch=2, dim=8, n_state=4, **ALL)

    def two_steps(state, x, dt, A, B, C, D, z, dt_bias):
        y1 = selective_state_update_op(state, x, dt, A, B, C, D, z, dt_bias, True)
        y2 = selective_state_update_op(state, 0.5 * x, dt, A, B, C, D, z, dt_bias, True)
        return y1 + y2

    args = _op_args(inputs)[:-1]
    state_eager = inputs["state"].clone()
    expected = two_steps(state_eager, *args[1:])
    compiled = torch.compile(two_steps, backend="aot_eager", fullgraph=True)
    state = inputs["state"].clone()
    assert_close(compiled(state, *args[1:]), expected, torch.float32)
    assert_close(state, state_eager, torch.float32)


def test_public_function_compiles():
    inputs = make_inputs(9, batch=2, dim=8, n_state=4, **ALL)
    state_eager = inputs["state"].clone()
    expected = selective_state_update(**{**inputs, "state": state_eager}, backend="triton")
    compiled = torch.compile(selective_state_update, backend="aot_eager")
    state = inputs["state"].clone()
    assert_close(compiled(**{**inputs, "state": state}, backend="triton"), expected, torch.float32)
    assert_close(state, state_eager, torch.float32)


def test_not_differentiable_and_leaves_parameters_alone():
    inputs = make_inputs(10, batch=2, dim=8, n_state=4, **ALL)
    inputs["A"].requires_grad_(True)
    y = selective_state_update(**inputs, backend="triton")
    assert not y.requires_grad and not inputs["state"].requires_grad and inputs["A"].grad is None


# --- input errors --------------------------------------------------------------------------


def _transposed_state(inputs):
    s = inputs["state"]
    return s.transpose(1, 2).contiguous().transpose(1, 2)


BAD = [
    (lambda i: dict(x=i["x"][None]), "x must have shape (batch, D)"),
    (lambda i: dict(state=i["state"][:, :5]), "state must have shape (batch, D, N)"),
    (lambda i: dict(state=i["state"].to(torch.float16)), "state has dtype torch.float16; it must be float32"),
    (lambda i: dict(state=_transposed_state(i)), "must have a contiguous last axis"),
    (lambda i: dict(state=i["state"][:1].expand(3, -1, -1)), "no overlapping elements"),
    (lambda i: dict(dt=i["dt"].to(torch.bfloat16)), "dt has dtype torch.bfloat16"),
    (lambda i: dict(A=i["A"][:, :3]), "A must have shape (D, N)"),
    (lambda i: dict(A=i["A"].to(torch.bfloat16)), "A has dtype torch.bfloat16"),
    (lambda i: dict(B=i["B"][0]), "B must be (batch, N) or (batch, G, N)"),
    (lambda i: dict(C=torch.randn(3, 3, 16, device=DEVICE)), "C has 3 groups, which must divide D=40"),
    (lambda i: dict(B=i["B"][:2]), "B must have shape (batch, N)"),
    (lambda i: dict(D=torch.randn(41, device=DEVICE)), "D must have shape (D,)"),
    (lambda i: dict(z=i["x"][:, :7]), "z must have shape (batch, D)"),
    (lambda i: dict(dt_bias=torch.arange(40, device=DEVICE, dtype=torch.int32)), "dt_bias has dtype torch.int32"),
    (lambda i: dict(state=i["state"][:0], x=i["x"][:0], dt=i["dt"][:0], B=i["B"][:0], C=i["C"][:0], z=i["z"][:0]),
     "must be at least 1"),
    (lambda i: dict(backend="cuda"), "unknown backend 'cuda'"),
]


@pytest.mark.parametrize("change, message", BAD, ids=[m for _, m in BAD])
def test_bad_inputs_raise_value_errors_naming_the_argument(change, message):
    inputs = make_inputs(11, **ALL)
    before = inputs["state"].clone()
    with pytest.raises(ValueError, match=re.escape(message)):
        selective_state_update(**{**inputs, **change(inputs)})
    assert torch.equal(inputs["state"], before)


def test_triton_rejects_float64_and_reference_takes_it():
    inputs = make_inputs(12, dtype=torch.float64, **ALL)
    inputs["state"] = inputs["state"].double()
    with pytest.raises(ValueError, match="use backend='reference' for float64"):
        selective_state_update(**inputs, backend="triton")
    expected_state = inputs["state"].clone()
    y = selective_state_update(**inputs, backend="reference")
    dt = F.softplus(inputs["dt"] + inputs["dt_bias"])
    expected_state = torch.exp(dt[..., None] * inputs["A"]) * expected_state + (dt * inputs["x"])[..., None] * inputs["B"][:, None]
    y_expected = (expected_state * inputs["C"][:, None]).sum(-1) + inputs["D"] * inputs["x"]
    y_expected = y_expected * F.silu(inputs["z"])
    torch.testing.assert_close(inputs["state"], expected_state, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y, y_expected, rtol=1e-12, atol=1e-12)
    assert math.isfinite(y.sum().item())
