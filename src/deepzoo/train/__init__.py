"""The trainer (the one training loop), checkpoints, logs, schedules and DDP glue."""

from deepzoo.train.trainer import NonFiniteLossError, TrainConfig, Trainer, TrainResult

__all__ = ["NonFiniteLossError", "TrainConfig", "TrainResult", "Trainer"]
