"""Training multi-exit models: joint, layer-wise, distillation and cascade schemes; checkpoints.

The public surface: :class:`TrainConfig`, :func:`train_model` -> :class:`TrainResult`,
the scheme registry ``SCHEMES``, checkpoints (:func:`save_checkpoint`,
:func:`load_checkpoint`, :class:`CheckpointInfo`) and :class:`CheckpointCache`.
"""

from eebench.training.cache import DEFAULT_CACHE_ROOT, CheckpointCache, cache_key
from eebench.training.checkpoint import (
    CheckpointInfo,
    check_matches,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from eebench.training.config import TrainConfig
from eebench.training.loop import EpochRecord, Phase, exit_accuracy, run_phase
from eebench.training.losses import distillation_loss, early_exit_weights, joint_loss
from eebench.training.schemes import SCHEMES, Scheme, get_scheme
from eebench.training.trainer import TrainResult, create_seeded_model, seeded, train_model

__all__ = [
    "DEFAULT_CACHE_ROOT",
    "SCHEMES",
    "CheckpointCache",
    "CheckpointInfo",
    "EpochRecord",
    "Phase",
    "Scheme",
    "TrainConfig",
    "TrainResult",
    "cache_key",
    "check_matches",
    "create_seeded_model",
    "distillation_loss",
    "early_exit_weights",
    "exit_accuracy",
    "get_scheme",
    "joint_loss",
    "load_checkpoint",
    "read_checkpoint",
    "run_phase",
    "save_checkpoint",
    "seeded",
    "train_model",
]
