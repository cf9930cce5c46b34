"""Plain-PyTorch decode step: the ground truth the Triton kernel is tested against.

One step of the selective scan's recurrence for every (batch, channel d, state n):

    dt    = softplus(dt + dt_bias)                   (bias and softplus optional)
    state = exp(dt * A) * state + dt * B * x
    y     = sum_n C * state + D * x
    y     = y * silu(z)                              (when z is given)

B and C are (batch, N), or grouped (batch, G, N) where channel d reads group
d // (D / G). This is step t of ``selective_scan`` with ``initial_state`` = the state.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def expand_groups(X: torch.Tensor, dim: int) -> torch.Tensor:
    """B or C, (batch, N) or (batch, G, N), as (batch, D, N) or broadcastable (batch, 1, N)."""
    if X.dim() == 2:
        return X[:, None, :]
    return X.repeat_interleave(dim // X.shape[1], dim=1)


def selective_state_update_reference(
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
    A_is_log: bool = False,
    dt_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Advance ``state`` one step in place and return y (A_is_log: A holds log(-A);
    dt_weight (D, R): dt is the low-rank (batch, R) input, projected as dt @ dt_weight.T).

    Shapes: state (batch, D, N); x, dt, z (batch, D); A (D, N); B, C (batch, N) or
    (batch, G, N); D, dt_bias (D,). Arithmetic runs in float32 (float64 for a float64
    state); the new state is rounded to state's dtype only when stored, and y is
    computed from the unrounded state. Returns y (batch, D) in x's dtype.
    """
    acc = torch.float64 if state.dtype == torch.float64 else torch.float32
    dim = x.shape[1]
    x_f = x.to(acc)
    dt = dt.to(acc)
    if dt_weight is not None:
        dt = dt @ dt_weight.to(acc).T
    if dt_bias is not None:
        dt = dt + dt_bias.to(acc)
    if dt_softplus:
        dt = F.softplus(dt)
    A = -torch.exp(A.to(acc)) if A_is_log else A.to(acc)
    new_state = torch.exp(dt[:, :, None] * A) * state.to(acc)
    new_state = new_state + (dt * x_f)[:, :, None] * expand_groups(B, dim).to(acc)
    y = (new_state * expand_groups(C, dim).to(acc)).sum(-1)
    if D is not None:
        y = y + x_f * D.to(acc)
    if z is not None:
        y = y * F.silu(z.to(acc))
    state.copy_(new_state)
    return y.to(x.dtype)
