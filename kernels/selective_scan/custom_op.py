"""The Triton selective scan as torch.library custom ops, with autograd.

``seqmamba::selective_scan_fwd`` and ``seqmamba::selective_scan_bwd`` wrap the kernels
so that torch.compile sees two opaque ops with known output shapes (register_fake)
instead of tracing into Triton launches; ``register_autograd`` ties the backward op to
the forward one. The kernel modules are imported inside the op bodies: Triton reads
``TRITON_INTERPRET`` when a kernel module is imported, and importing seqmamba must not
fix that choice.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..kernel_op import kernel_op
from ..layout import empty_like_layout


OP = "selective_scan"

# Steps between the states the forward saves for the backward: a multiple of both
# kernels' chunk sizes. 64 costs 4 * N / 64 bytes (1 byte at N = 16) per (batch, channel, step).
SAVE_EVERY = 64

_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@kernel_op("seqmamba::selective_scan_fwd")
def selective_scan_fwd(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    initial_state: Tensor | None,
    delta_softplus: bool,
    save_states: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns (out (batch, D, L), final_state (batch, D, N) fp32, saved states fp32)."""
    from .triton_fwd import scan_fwd

    return scan_fwd(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
        save_every=SAVE_EVERY if save_states else None,
    )


@selective_scan_fwd.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, save_states):
    batch, dim, length = u.shape
    n_state = A.shape[1]
    n_saved = -(-length // SAVE_EVERY)
    out = empty_like_layout(u)
    final = u.new_empty((batch, dim, n_state), dtype=torch.float32)
    states = u.new_empty((batch, dim, n_saved, n_state) if save_states else (0,), dtype=torch.float32)
    return out, final, states


@kernel_op("seqmamba::selective_scan_bwd", mutates_args=("dz_out",))
def selective_scan_bwd(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    states: Tensor,
    dout: Tensor,
    dfinal: Tensor | None,
    delta_softplus: bool,
    dz_out: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Returns (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state).

    An absent optional input gets an empty (0,) tensor in its slot: custom ops return
    tensors only. With ``dz_out`` (a (batch, D, L) view of a larger gradient buffer, so
    that no copy joins dz to it afterwards) dz is written there and its slot is empty
    too: an op's outputs must not alias its inputs.
    """
    from .triton_bwd import scan_bwd

    grads = scan_bwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, states, SAVE_EVERY, dout, dfinal,
                     dz_out=dz_out)
    return tuple(g if g is not None and g is not dz_out else u.new_empty((0,)) for g in grads)


@selective_scan_bwd.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, states, dout, dfinal, delta_softplus, dz_out):
    batch, dim, _ = u.shape

    def like(x: Tensor | None) -> Tensor:  # dA, dB, dC, dD, ddelta_bias: contiguous sums, as the kernel's
        return x.new_empty(x.shape) if x is not None else u.new_empty((0,))

    def laid_out_like(x: Tensor | None) -> Tensor:  # du, ddelta, dz: as the kernel allocates them
        return empty_like_layout(x) if x is not None else u.new_empty((0,))

    dinit = u.new_empty((batch, dim, A.shape[1]), dtype=torch.float32)
    return (
        laid_out_like(u), laid_out_like(delta), like(A), like(B), like(C), like(D),
        laid_out_like(z if dz_out is None else None), like(delta_bias),
        dinit,
    )


def _setup_context(ctx, inputs, output) -> None:
    u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, _ = inputs
    ctx.delta_softplus = delta_softplus
    ctx.present = [x is not None for x in (D, z, delta_bias, initial_state)]
    ctx.init_dtype = initial_state.dtype if initial_state is not None else None
    saved = [u, delta, A, B, C, output[2]] + [x for x in (D, z, delta_bias) if x is not None]
    ctx.save_for_backward(*saved)
    ctx.mark_non_differentiable(output[2])
    # Gradients of unused outputs arrive as None, not as zeros: autograd would otherwise
    # fill a (batch, D, L / 64, N) fp32 tensor for the saved states (200 MB at batch 1,
    # L = 2^17) and one for the final state on every backward, for the kernel to read zeros.
    ctx.set_materialize_grads(False)


def _backward(ctx, dout: Tensor, dfinal: Tensor | None, _dstates: Tensor | None):
    u, delta, A, B, C, states, *optional = ctx.saved_tensors
    has_D, has_z, has_bias, has_init = ctx.present
    it = iter(optional)
    D = next(it) if has_D else None
    z = next(it) if has_z else None
    delta_bias = next(it) if has_bias else None
    if states.numel() == 0 and u.shape[-1] > 0:
        raise RuntimeError(
            f"{OP}: the forward ran without saving states for the backward (no input required "
            "grad when it ran); run it with grad enabled"
        )
    if dout is None:  # only the final state was used
        dout = torch.zeros_like(u)
    du, ddelta, dA, dB, dC, dD, dz, dbias, dinit = selective_scan_bwd(
        u, delta, A, B, C, D, z, delta_bias, states, dout, dfinal, ctx.delta_softplus, None
    )  # every argument passed: the dispatcher finds the mutable one by its position
    return (
        du, ddelta, dA, dB, dC,
        dD if has_D else None,
        dz if has_z else None,
        dbias if has_bias else None,
        dinit.to(ctx.init_dtype) if has_init else None,
        None, None,
    )


selective_scan_fwd.register_autograd(_backward, setup_context=_setup_context)


def selective_scan_triton(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The "triton" backend of ``selective_scan``: (out, final_state fp32).

    Shapes as in ``selective_scan`` (already checked there). Saves chunk states for the
    backward only when autograd will need them.

    Raises:
        ValueError: for float64 inputs (the kernels compute in fp32; use the reference).
    """
    check_kernel_dtypes(u, delta, A, B, C, D, z, delta_bias, initial_state)
    inputs = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    save = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in inputs)
    out, final, _ = selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, save)
    return out, final


def check_kernel_dtypes(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    initial_state: Tensor | None,
) -> None:
    """Raises ValueError, naming the argument, for a dtype the kernels do not take: the
    (batch, D, L)-sized inputs in fp16, bf16 or fp32, A, D and delta_bias in fp32.
    For callers of the ops above, which do not check their inputs."""
    named = dict(u=u, delta=delta, B=B, C=C, z=z, initial_state=initial_state)
    for name, x in named.items():
        if x is not None and x.dtype not in _KERNEL_DTYPES:
            raise ValueError(
                f"{OP}: backend 'triton' takes {name} in float16, bfloat16 or float32, got {x.dtype} "
                f"(shape {tuple(x.shape)}); use backend='reference' for float64"
            )
    for name, x in dict(A=A, D=D, delta_bias=delta_bias).items():
        if x is not None and x.dtype != torch.float32:
            raise ValueError(
                f"{OP}: backend 'triton' takes {name} in float32, got {x.dtype} (shape {tuple(x.shape)})"
            )
