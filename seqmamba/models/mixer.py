"""The Mamba mixer (Mamba-1, arXiv 2312.00752, Algorithm 2 and Figure 3).

Per layer: project the input up to two branches x and z; run x through a short causal
depthwise convolution and SiLU; make the SSM's step size Δ, B and C functions of x (the
"selection" mechanism); run the selective scan, gated by SiLU(z); project back down.

Parameter names and shapes are mamba_ssm's, so its checkpoints load unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from seqmamba.kernels import causal_conv1d, selective_scan

from .config import DT_INITS, ModelConfig
from .recompute import mixer_region
from .region import RegionWeights, scan_inputs
from .split import split_channels


@dataclass
class MixerState:
    """What a mixer carries from one chunk of a sequence to the next.

    conv: (batch, d_inner, d_conv - 1) the last inputs of the convolution.
    ssm: (batch, d_inner, d_state) the SSM state h after the last step, float32.
    """

    conv: torch.Tensor
    ssm: torch.Tensor


def causal_conv1d_silu(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, initial_state: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """SiLU of a causal depthwise convolution: step t sees inputs t - W + 1 .. t only.

    x: (batch, D, L); weight: (D, 1, W) (an ``nn.Conv1d(D, D, W, groups=D)`` weight);
    bias: (D,) or None; initial_state: (batch, D, W - 1), the inputs just before x
    (zeros, i.e. the start of a sequence, if None).
    Returns ``(y, final_state)``: y (batch, D, L), final_state (batch, D, W - 1) the
    last W - 1 inputs, to continue with the next chunk. Runs as the fused
    ``causal_conv1d`` op (convolution, bias and SiLU in one pass).
    """
    return causal_conv1d(
        x,
        weight[:, 0, :],  # (D, W), a view of the Conv1d weight
        bias,
        activation="silu",
        initial_state=None if initial_state is None else initial_state.to(x.dtype),
        return_final_state=True,
    )


def init_dt_proj(
    dt_proj: nn.Linear, *, dt_min: float, dt_max: float, dt_init: str, dt_scale: float, dt_init_floor: float
) -> None:
    """Initialise the step-size projection Δ = softplus(dt_proj(x) + bias).

    Δ sets how long each channel remembers: a small Δ keeps the state and ignores the
    current input, a large one resets the state to it (paper, Section 3.5.2). The bias
    is drawn so that, at init, the channels span timescales log-uniformly between dt_min
    and dt_max (memories of roughly 1/dt_max to 1/dt_min steps), as in S4/S4D. The
    weight bound dt_rank^-0.5 is a fan-in scaling: it keeps the input-dependent part
    of Δ at the scale of its input, so Δ starts near those timescales.
    """
    d_inner, dt_rank = dt_proj.weight.shape
    bound = dt_rank**-0.5 * dt_scale
    with torch.no_grad():
        if dt_init == "constant":
            dt_proj.weight.fill_(bound)
        elif dt_init == "random":
            dt_proj.weight.uniform_(-bound, bound)
        else:
            raise ValueError(f"dt_init must be one of {DT_INITS}, got {dt_init!r}")
        log_dt = torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        dt = torch.exp(log_dt).clamp(min=dt_init_floor)
        # Inverse softplus, written to stay accurate for small dt: softplus(bias) == dt.
        dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))


def s4d_real_A_log(d_inner: int, d_state: int) -> torch.Tensor:
    """log of -A for the S4D-real init: A = -(1, 2, ..., N) in every channel.

    (d_inner, d_state) float32. The model keeps log(-A) as the parameter so that
    A = -exp(A_log) stays negative (a decaying, stable state) whatever training does.
    """
    return torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1)


class Mamba(nn.Module):
    """The selective SSM mixer: (batch, L, d_model) -> (batch, L, d_model).

    Parameters (mamba_ssm names): in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj.
    A_log and D stay float32 at construction (as mamba_ssm's do); the scan reads them in
    float32 whatever the module's dtype.

    The part after in_proj runs through :func:`~seqmamba.models.recompute.mixer_region`:
    on the Triton kernels one autograd Function whose backward is chained by hand, the
    design of mamba_ssm's ``mamba_inner_fn``. It stores the in_proj output xz (batch,
    2 * d_inner, L), the convolution output and Δ (each (batch, d_inner, L)), x_proj's
    output (batch * L, dt_rank + 2 * d_state) and the scan's chunk states (about
    d_state / 16 bytes per channel and step); its backward reads B and C from the
    stored x_proj output, runs the scan's backward from the chunk states without
    rerunning the scan's forward, and writes xz's gradient in one buffer. With
    ``recompute=True`` (``checkpoint_lvl=1`` there) it stores neither the convolution
    output nor Δ but reruns the convolution and dt_proj. On the plain-PyTorch reference the region runs op
    by op under autograd, or, recomputing, stores xz alone and reruns the whole region in
    the backward. out_proj keeps its input, the scan output (batch, d_inner, L), either
    way. Same parameters, same results.
    """

    def __init__(
        self,
        d_model: int,
        *,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | None = None,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        recompute: bool = False,
        layer_idx: int | None = None,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank is None else dt_rank
        self.recompute = recompute
        self.layer_idx = layer_idx
        d_inner = self.d_inner

        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=bias)
        # Holds the convolution's parameters; forward applies them with causal_conv1d_silu.
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, bias=conv_bias)
        # One projection gives the input-dependent (selective) Δ (low rank), B and C.
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner, bias=True)
        init_dt_proj(
            self.dt_proj, dt_min=dt_min, dt_max=dt_max, dt_init=dt_init, dt_scale=dt_scale, dt_init_floor=dt_init_floor
        )
        self.A_log = nn.Parameter(s4d_real_A_log(d_inner, d_state))
        # D is a skip connection around the SSM (y += D * x), starting as the identity.
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)

    @classmethod
    def from_config(cls, config: ModelConfig, *, layer_idx: int | None, recompute: bool = False) -> Mamba:
        """A mixer with the sizes and initialisation options of ``config``."""
        return cls(
            config.d_model,
            d_state=config.d_state,
            d_conv=config.d_conv,
            expand=config.expand,
            dt_rank=config.dt_rank,
            dt_min=config.dt_min,
            dt_max=config.dt_max,
            dt_init=config.dt_init,
            dt_scale=config.dt_scale,
            dt_init_floor=config.dt_init_floor,
            conv_bias=config.conv_bias,
            bias=config.bias,
            recompute=recompute,
            layer_idx=layer_idx,
        )

    def forward(
        self, hidden_states: torch.Tensor, *, state: MixerState | None = None, return_state: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, MixerState]:
        """hidden_states: (batch, L, d_model) -> (batch, L, d_model).

        ``state`` continues a sequence from an earlier chunk (its start if None); with
        ``return_state`` also returns the :class:`MixerState` after the last step.
        """
        self._check_inputs(hidden_states, state)
        length = hidden_states.shape[1]
        # W @ h^T gives (2 * d_inner, batch * L): L is then the fastest axis of x, z and
        # Δ, the (batch, D, L) layout the scan reads without a copy.
        xz = rearrange(self.in_proj.weight @ rearrange(hidden_states, "b l d -> d (b l)"), "d (b l) -> b d l", l=length)
        if self.in_proj.bias is not None:
            xz = xz + self.in_proj.bias.to(xz.dtype)[:, None]
        conv_state = None if state is None else state.conv
        ssm_state = None if state is None else state.ssm
        weights = RegionWeights(
            self.conv1d.weight, self.conv1d.bias, self.x_proj.weight, self.dt_proj.weight, self.dt_proj.bias,
            self.A_log, self.D,
        )
        y, conv_state, ssm_state = mixer_region(
            self._after_in_proj, xz, conv_state, ssm_state, weights, recompute=self.recompute
        )
        out = self.out_proj(rearrange(y, "b d l -> b l d"))
        return (out, MixerState(conv=conv_state, ssm=ssm_state)) if return_state else out

    def _after_in_proj(
        self, xz: torch.Tensor, conv_state: torch.Tensor | None, ssm_state: torch.Tensor | None, w: RegionWeights
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Convolution, selection, scan and gate of the in_proj output.

        xz: (batch, 2 * d_inner, L); conv_state (batch, d_inner, d_conv - 1) and
        ssm_state (batch, d_inner, d_state), or None at the start of a sequence; w: this
        module's conv1d, x_proj, dt_proj, A_log and D parameters.
        Returns (y (batch, d_inner, L), final conv state, final ssm state).
        """
        length = xz.shape[-1]
        x, z = split_channels(xz, self.d_inner)

        x, conv_state = causal_conv1d_silu(x, w.conv_weight, w.conv_bias, initial_state=conv_state)

        # x_proj gives the selective (input-dependent) Δ's low-rank input, B and C.
        x_dbl = F.linear(rearrange(x, "b d l -> (b l) d"), w.x_proj_weight)
        s = scan_inputs(x_dbl, w, length)

        y, ssm_state = selective_scan(
            x,
            s.delta,
            s.A,
            s.B,
            s.C,
            D=s.D,
            z=z,
            delta_bias=s.delta_bias,
            delta_softplus=True,
            initial_state=ssm_state,
            return_final_state=True,
        )
        return y, conv_state, ssm_state

    def _check_inputs(self, hidden_states: torch.Tensor, state: MixerState | None) -> None:
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(
                f"Mamba: hidden_states must have shape (batch, L, d_model={self.d_model}), "
                f"got {tuple(hidden_states.shape)}"
            )
        if state is None:
            return
        batch = hidden_states.shape[0]
        expected = {"conv": (batch, self.d_inner, self.d_conv - 1), "ssm": (batch, self.d_inner, self.d_state)}
        for name, shape in expected.items():
            got = tuple(getattr(state, name).shape)
            if got != shape:
                raise ValueError(f"Mamba: state.{name} must have shape {shape}, got {got}")

