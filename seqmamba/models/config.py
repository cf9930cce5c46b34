"""``ModelConfig``: every size and initialisation choice of the Mamba backbone.

A plain dataclass, so it works both as a Python object and as an OmegaConf structured
config merged with YAML (``model:`` section). Field names follow mamba_ssm's
``MambaConfig`` and ``Mamba`` arguments, so its configs translate one to one.
"""
# No ``from __future__ import annotations`` here: OmegaConf reads these annotations at
# runtime and understands ``Optional[int]``, not the ``int | None`` spelling.
import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

DT_INITS = ("random", "constant")
"""Allowed values of ``ModelConfig.dt_init``."""


@dataclass
class ModelConfig:
    """Sizes and initialisation of a Mamba language model (Mamba-1, arXiv 2312.00752).

    Attributes:
        d_model: width of the residual stream.
        n_layer: number of Mamba blocks.
        vocab_size: number of token ids to embed; ``None`` until the task sets it
            (``Task.build_model`` calls :meth:`with_vocab_size`). The embedding and head
            are padded up to a multiple of ``pad_vocab_size_multiple``.
        d_state: SSM state size N per channel.
        d_conv: width of the causal depthwise convolution before the SSM.
        expand: inner width ``d_inner = expand * d_model``.
        dt_rank: rank of the input-dependent step size projection; ``None`` means
            mamba_ssm's "auto", ``ceil(d_model / 16)``.
        dt_min, dt_max: range the initial step sizes are drawn from (log-uniform).
        dt_init: ``"random"`` (uniform ``dt_proj.weight``) or ``"constant"``.
        dt_scale: scales the ``dt_proj.weight`` init bound ``dt_rank ** -0.5``.
        dt_init_floor: lower clamp of the initial step sizes.
        conv_bias: bias in the depthwise convolution.
        bias: biases in ``in_proj`` and ``out_proj``.
        norm_epsilon: epsilon of the normalisation layers.
        rms_norm: RMSNorm (True) or LayerNorm (False) before each mixer and at the end.
        residual_in_fp32: keep the residual stream in float32 under lower precision.
        pad_vocab_size_multiple: pad the vocabulary up to a multiple of this.
        tie_embeddings: the LM head shares the embedding matrix.
        initializer_range: standard deviation of the embedding init.
        rescale_prenorm_residual: divide ``out_proj.weight`` by ``sqrt(n_layer)`` at init.
        mixer_recompute: memory-saving mixer for training: the part after in_proj
            (one autograd Function on the Triton kernels either way) keeps only the
            in_proj output, x_proj's small output and the scan's compact chunk states
            for the backward, not the convolution output and Δ, and its backward reruns
            the convolution and dt_proj (Δ); the scan's forward is not rerun (the
            plain-PyTorch reference reruns the whole part). Same parameters and results;
            two fewer (batch, d_inner, L) tensors a layer, for a second convolution and
            dt_proj matmul.
        checkpoint_every: activation checkpointing of whole blocks, for very long
            sequences: 0 off, k > 0 checkpoints blocks 0, k, 2k, ... (1: every block),
            which then keep only their inputs and rerun their forward in the backward.
            A checkpointed block's mixer ignores ``mixer_recompute``: the block keeps
            only its input already, and the mixer's own recomputation would only add
            work to the block's rerun.
    """

    d_model: int
    n_layer: int
    vocab_size: Optional[int] = None
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: Optional[int] = None
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init: str = "random"
    dt_scale: float = 1.0
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    bias: bool = False
    norm_epsilon: float = 1e-5
    rms_norm: bool = True
    residual_in_fp32: bool = True
    pad_vocab_size_multiple: int = 8
    tie_embeddings: bool = True
    initializer_range: float = 0.02
    rescale_prenorm_residual: bool = True
    mixer_recompute: bool = False
    checkpoint_every: int = 0

    @property
    def d_inner(self) -> int:
        """Width of the mixer's inner (expanded) channels."""
        return self.expand * self.d_model

    @property
    def resolved_dt_rank(self) -> int:
        """``dt_rank``, with ``None`` resolved to ``ceil(d_model / 16)``."""
        return math.ceil(self.d_model / 16) if self.dt_rank is None else self.dt_rank

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding and the LM head: ``vocab_size`` rounded up to a
        multiple of ``pad_vocab_size_multiple`` (multiples of 8 suit tensor cores)."""
        if self.vocab_size is None:
            raise ValueError("model.vocab_size is not set; set it in the config or let the task set it")
        multiple = self.pad_vocab_size_multiple
        return -(-self.vocab_size // multiple) * multiple

    def checkpoints_layer(self, layer_idx: int) -> bool:
        """Whether block ``layer_idx`` runs under activation checkpointing."""
        return self.checkpoint_every > 0 and layer_idx % self.checkpoint_every == 0

    def with_vocab_size(self, vocab_size: int) -> "ModelConfig":
        """A copy of this config with ``vocab_size`` replaced."""
        return dataclasses.replace(self, vocab_size=vocab_size)

    def validate(self) -> None:
        """Raise ValueError naming the first field whose value cannot build a model."""
        for name in ("d_model", "n_layer", "vocab_size", "d_state", "d_conv", "expand", "pad_vocab_size_multiple"):
            _check_positive_int(name, getattr(self, name))
        if self.dt_rank is not None:
            _check_positive_int("dt_rank", self.dt_rank)
        for name in ("dt_min", "dt_max", "dt_scale", "norm_epsilon", "initializer_range"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"model.{name} must be a positive number, got {value!r}")
        if self.dt_min > self.dt_max:
            raise ValueError(f"model.dt_min ({self.dt_min}) must not exceed model.dt_max ({self.dt_max})")
        if not isinstance(self.dt_init_floor, (int, float)) or not self.dt_init_floor >= 0:
            raise ValueError(f"model.dt_init_floor must be a number >= 0, got {self.dt_init_floor!r}")
        every = self.checkpoint_every
        if not isinstance(every, int) or isinstance(every, bool) or every < 0:
            raise ValueError(
                f"model.checkpoint_every must be an integer >= 0 (0: off, k: every k-th block), "
                f"got {every!r}"
            )
        if not isinstance(self.mixer_recompute, bool):
            raise ValueError(f"model.mixer_recompute must be true or false, got {self.mixer_recompute!r}")
        if self.dt_init not in DT_INITS:
            raise ValueError(f"model.dt_init must be one of {DT_INITS}, got {self.dt_init!r}")


def _check_positive_int(name: str, value: object) -> None:
    if value is None:
        raise ValueError(f"model.{name} is not set; it must be a positive integer")
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"model.{name} must be a positive integer, got {value!r}")
