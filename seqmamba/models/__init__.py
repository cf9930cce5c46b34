"""The Mamba backbone (Mamba-1), with mamba_ssm's parameter names and initialisation."""
from .backbone import MambaBackbone, init_backbone_weights
from .block import Block
from .cache import InferenceCache, LayerCache, allocate_inference_cache
from .config import DT_INITS, ModelConfig
from .lm import MambaLM
from .lm_loss import LMLoss, linear_cross_entropy
from .mixer import Mamba, MixerState, causal_conv1d_silu
from .norm import RMSNorm, add_norm, make_norm
from .sampling import SamplingConfig
from .weight_decay import no_weight_decay_param_names

__all__ = [
    "DT_INITS",
    "Block",
    "InferenceCache",
    "LMLoss",
    "LayerCache",
    "Mamba",
    "MambaBackbone",
    "MambaLM",
    "MixerState",
    "ModelConfig",
    "RMSNorm",
    "SamplingConfig",
    "add_norm",
    "allocate_inference_cache",
    "causal_conv1d_silu",
    "init_backbone_weights",
    "linear_cross_entropy",
    "make_norm",
    "no_weight_decay_param_names",
]
