"""Causal pooling between the levels of the multi-scale network, whole or step by step.

``DownPool`` folds each ``p`` consecutive positions into one coarse position (the
vectors side by side, one Linear to the coarse width). ``UpPool`` unfolds a coarse
position back into ``p`` fine ones, shifted by one coarse step: fine position t reads
the coarse position ``t // p - 1``, which pooled positions up to ``t - t % p - 1 < t``,
so no fine position sees its own or a later input through the coarse path. The first
``p`` fine positions read zeros.

In step mode a :class:`PoolState` per level buffers the fine inputs of the coarse
position being filled and the ``p`` fine outputs of the last finished one, released
one per step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class PoolState:
    """The pooling buffers of one level, for step mode.

    inputs: (batch, p, d) fine vectors of the coarse position being filled (the first
        ``steps % p`` rows are set).
    outputs: (batch, p, d) the fine outputs the up-pool releases next, one per step.
    steps: fine positions this level has taken so far (equal for every row).
    """

    inputs: torch.Tensor
    outputs: torch.Tensor
    steps: int = 0

    @property
    def phase(self) -> int:
        """The next fine position's place within its coarse position, 0 .. p - 1."""
        return self.steps % self.inputs.shape[1]


class DownPool(nn.Module):
    """(batch, L, d) -> (batch, L // p, d_out). The last ``L % p`` positions belong to a
    coarse position not yet complete: they are left out (step mode buffers them)."""

    def __init__(self, d: int, d_out: int, *, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.linear = nn.Linear(d * factor, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, d = x.shape
        coarse = length // self.factor
        return self.linear(x[:, : coarse * self.factor].reshape(batch, coarse, self.factor * d))

    def step(self, x: torch.Tensor, state: PoolState) -> torch.Tensor | None:
        """Buffer x (batch, d) at the state's phase; the coarse vector (batch, d_out)
        once the ``p``-th input of a coarse position arrives, else None. Does not
        advance ``state.steps`` (the level does, after its up path)."""
        phase = state.phase
        state.inputs[:, phase] = x
        if phase < self.factor - 1:
            return None
        return self.linear(state.inputs.flatten(1))

    def load_(self, x: torch.Tensor, state: PoolState) -> None:
        """After a whole-sequence pass over x (batch, L, d): buffer the ``L % p``
        trailing positions and set ``state.steps = L``."""
        length = x.shape[1]
        rest = length % self.factor
        state.inputs.zero_()
        if rest:
            state.inputs[:, :rest] = x[:, length - rest:]
        state.steps = length


class UpPool(nn.Module):
    """(batch, Lc, d) coarse -> (batch, length, d_out) fine, ``length <= (Lc + 1) * p``:
    fine position t holds part ``t % p`` of coarse position ``t // p - 1`` (zeros for
    t < p)."""

    def __init__(self, d: int, d_out: int, *, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.d_out = d_out
        self.linear = nn.Linear(d, d_out * factor)

    def expand(self, y: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., p, d_out): the fine outputs of coarse vectors."""
        return self.linear(y).unflatten(-1, (self.factor, self.d_out))

    def forward(self, y: torch.Tensor, *, length: int) -> torch.Tensor:
        batch, coarse, _ = y.shape
        assert coarse * self.factor <= length <= (coarse + 1) * self.factor
        fine = self.expand(y).reshape(batch, coarse * self.factor, self.d_out)
        shifted = torch.cat([fine.new_zeros(batch, self.factor, self.d_out), fine], dim=1)
        return shifted[:, :length]

    def step(self, y: torch.Tensor | None, state: PoolState) -> torch.Tensor:
        """The fine output (batch, d_out) at the state's phase; then, if the coarse
        level produced y (batch, d) at this step, its parts become the next outputs."""
        out = state.outputs[:, state.phase]
        if y is not None:
            # A new tensor, not an in-place write: ``out`` is a view of the old one.
            state.outputs = self.expand(y)
        return out

    def load_(self, y: torch.Tensor, state: PoolState) -> None:
        """After a whole-sequence pass that gave coarse y (batch, Lc, d): the parts of
        its last position are released next (zeros if Lc == 0)."""
        state.outputs = self.expand(y[:, -1]) if y.shape[1] else torch.zeros_like(state.outputs)
