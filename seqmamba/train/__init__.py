"""Generic training: one LightningModule and data module drive any registered task."""
from .callbacks import Throughput
from .checkpoint import check_resumable, load_checkpoint_config, load_checkpoint_weights
from .data import IndexPermutation, SequenceDataModule, TrainStream
from .evaluation import evaluate_model
from .module import SequenceModule
from .optim import LRSchedule, build_optimizer, build_scheduler, param_groups
from .run import TrainedModel, TrainResult, evaluate, load_trained_model, train

__all__ = [
    "IndexPermutation",
    "LRSchedule",
    "SequenceDataModule",
    "SequenceModule",
    "TrainResult",
    "TrainedModel",
    "Throughput",
    "TrainStream",
    "build_optimizer",
    "build_scheduler",
    "check_resumable",
    "evaluate",
    "evaluate_model",
    "load_trained_model",
    "load_checkpoint_config",
    "load_checkpoint_weights",
    "param_groups",
    "train",
]
