"""``selective_state_update``: one recurrent (decode) step of the selective scan, in place.

The Triton path is the ``torch.library`` custom op ``seqmamba::selective_state_update``,
declared as mutating ``state``, so a compiled decode loop (torch.compile, CUDA graphs)
keeps the in-place update in its graph instead of reordering or dropping it. The kernel
module is imported on first use: Triton decides at import time whether it interprets
kernels (``TRITON_INTERPRET=1``).
"""
from __future__ import annotations

import torch

from ..backend import resolve_backend
from ..checks import check_tensor, elements_overlap
from .reference import selective_state_update_reference

OP = "selective_state_update"
BACKENDS = ("triton", "reference")
MODEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
REAL = (torch.float32, torch.float64)


def selective_state_update(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    backend: str | None = None,
    *,
    A_is_log: bool = False,
    dt_weight: torch.Tensor | None = None,
    early_loads: bool = False,
) -> torch.Tensor:
    """Advance the SSM state one step in place and return the step's output.

    Per batch b, channel d, state n (optional terms in brackets)::

        dt    = [softplus](dt + [dt_bias])
        state = exp(dt * A) * state + dt * B * x
        y     = (sum_n C * state + [D * x]) * [silu(z)]

    Equal to one step of ``selective_scan(..., initial_state=state,
    return_final_state=True)``: T calls reproduce a T-step scan's outputs and final state.

    Args:
        state: (batch, D, N) float32 or x's dtype; overwritten with the new state. Its
            last axis must be contiguous and its elements must not overlap (a slice of
            a larger cache such as ``cache[:batch]`` is fine).
        x: (batch, D) input (float16, bfloat16, float32; float64 on the reference).
        dt: (batch, D) step sizes before bias and softplus, x's dtype.
        A: (D, N) float32/float64, usually ``-exp(A_log)``; or, with ``A_is_log``, the
            parameter ``A_log`` itself in any float dtype (the op takes ``-exp`` of it in
            float32, which saves a decode step the kernels that would compute A).
        B: (batch, N), or (batch, G, N) grouped (G divides D; channel d reads group
            d // (D / G)); x's dtype.
        C: same forms as B (its grouping may differ from B's).
        D: (D,) skip connection, any float dtype (read as float32; a bfloat16 model's
            parameter needs no cast).
        z: (batch, D) gate, x's dtype.
        dt_bias: (D,) any float dtype, added to dt (in float32) before the softplus.
        dt_softplus: apply softplus to dt.
        backend: None (Triton on CUDA, the reference elsewhere), "triton" or "reference".
        A_is_log: A holds ``A_log`` (the op uses ``A = -exp(A_log)``).
        dt_weight: (D, R) any float dtype; dt is then the low-rank (batch, R) input of
            Mamba's step-size projection and the op computes ``dt @ dt_weight.T`` itself
            (in float32), which saves the decode step one matrix-product kernel.
        early_loads: a promise that the kernel launched just before this call writes no
            input but dt, B and C (as x_proj's product does in a decode step). The
            Triton kernel, a dependent launch on Hopper GPUs, then reads the state, x, z
            and the parameters before it waits for that kernel to finish, so that those
            reads overlap its run (on steps small enough for that to pay; see
            ``early_loads_pay`` in triton_kernel.py). Leave it False when any other input
            was just written (say x by a conv step): the kernel could read it before it
            is written.

    Returns:
        y (batch, D) in x's dtype, computed in float32 from the unrounded new state.
        Not differentiable: this is the decoding step (runs under ``torch.no_grad``).

    Raises:
        ValueError: naming the argument whose shape, dtype, device or layout is wrong,
            or for a backend that cannot run here.
    """
    _check_inputs(state, x, dt, A, B, C, D, z, dt_bias, A_is_log=bool(A_is_log), dt_weight=dt_weight)
    name = resolve_backend(OP, backend, x.device, BACKENDS)
    with torch.no_grad():
        if name == "triton":
            if x.dtype == torch.float64 or state.dtype == torch.float64:
                raise ValueError(
                    f"{OP}: backend 'triton' computes in float32 and takes float16/bfloat16/float32 inputs; "
                    "use backend='reference' for float64"
                )
            return selective_state_update_op(
                state, x, dt, A, B, C, D, z, dt_bias, bool(dt_softplus), bool(A_is_log), dt_weight, bool(early_loads)
            )
        return selective_state_update_reference(
            state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=bool(dt_softplus), A_is_log=bool(A_is_log),
            dt_weight=dt_weight,
        )


@torch.library.custom_op("seqmamba::selective_state_update", mutates_args=("state",))
def selective_state_update_op(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    dt_softplus: bool,
    A_is_log: bool = False,
    dt_weight: torch.Tensor | None = None,
    early_loads: bool = False,
) -> torch.Tensor:
    """The Triton step as one op: updates ``state`` in place, returns y (batch, D)."""
    from .triton_kernel import selective_state_update_triton

    return selective_state_update_triton(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, A_is_log, dt_weight,
                                         early_loads=early_loads)


@selective_state_update_op.register_fake
def _(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, A_is_log=False, dt_weight=None, early_loads=False):
    return x.new_empty(x.shape[0], x.shape[1])


def _check_inputs(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    *,
    A_is_log: bool,
    dt_weight: torch.Tensor | None,
) -> None:
    check_tensor(OP, "x", x, (None, None), dims="(batch, D)", dtypes=MODEL_DTYPES)
    batch, dim = x.shape
    device, dtype = x.device, x.dtype
    check_tensor(OP, "state", state, (batch, dim, None), dims="(batch, D, N)", dtypes=MODEL_DTYPES, device=device)
    n_state = state.shape[2]
    if min(batch, dim, n_state) < 1:
        raise ValueError(f"{OP}: batch, D and N must be at least 1, got state of shape {tuple(state.shape)}")
    if state.dtype not in (torch.float32, dtype):
        raise ValueError(f"{OP}: state has dtype {state.dtype}; it must be float32 or x's dtype ({dtype})")
    if (n_state > 1 and state.stride(2) != 1) or elements_overlap(state):
        raise ValueError(
            f"{OP}: state (shape {tuple(state.shape)}, strides {state.stride()}) must have a contiguous last "
            "axis (N) and no overlapping elements, because it is updated in place; allocate the cache as "
            "torch.empty(batch, D, N) (or keep a .contiguous() copy) and pass that same tensor every step"
        )
    if dt_weight is None:
        check_tensor(OP, "dt", dt, (batch, dim), dims="(batch, D)", dtypes=(dtype,), device=device)
    else:
        check_tensor(OP, "dt", dt, (batch, None), dims="(batch, R) with dt_weight", dtypes=(dtype,), device=device)
        check_tensor(OP, "dt_weight", dt_weight, (dim, dt.shape[1]), dims="(D, R)", dtypes=MODEL_DTYPES, device=device)
    check_tensor(OP, "A", A, (dim, n_state), dims="(D, N)", dtypes=MODEL_DTYPES if A_is_log else REAL, device=device)
    for name, X in (("B", B), ("C", C)):
        if not isinstance(X, torch.Tensor) or X.dim() not in (2, 3):
            got = tuple(X.shape) if isinstance(X, torch.Tensor) else type(X).__name__
            raise ValueError(f"{OP}: {name} must be (batch, N) or (batch, G, N) with batch={batch}, N={n_state}; got {got}")
        if X.dim() == 2:
            check_tensor(OP, name, X, (batch, n_state), dims="(batch, N)", dtypes=(dtype,), device=device)
        else:
            check_tensor(OP, name, X, (batch, None, n_state), dims="(batch, G, N)", dtypes=(dtype,), device=device)
            groups = X.shape[1]
            if groups < 1 or dim % groups:
                raise ValueError(f"{OP}: {name} has {groups} groups, which must divide D={dim}")
    if D is not None:
        check_tensor(OP, "D", D, (dim,), dims="(D,)", dtypes=MODEL_DTYPES, device=device)
    if z is not None:
        check_tensor(OP, "z", z, (batch, dim), dims="(batch, D)", dtypes=(dtype,), device=device)
    if dt_bias is not None:
        check_tensor(OP, "dt_bias", dt_bias, (dim,), dims="(D,)", dtypes=MODEL_DTYPES, device=device)

