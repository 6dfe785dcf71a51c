"""The trainer (the one training loop), its step contract, batch sources, checkpoints, logs,
schedules and DDP glue."""

from deepzoo.train.batches import BatchSource, GeneratedBatches, ShuffledBatches
from deepzoo.train.config import OptimConfig, TrainConfig
from deepzoo.train.errors import DivergedError, NonFiniteLossError, TrainingInterrupted, TrainingStopped
from deepzoo.train.step import Optimizers
from deepzoo.train.trainer import Trainer, TrainResult

__all__ = [
    "BatchSource",
    "DivergedError",
    "GeneratedBatches",
    "NonFiniteLossError",
    "OptimConfig",
    "Optimizers",
    "ShuffledBatches",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingInterrupted",
    "TrainingStopped",
]
