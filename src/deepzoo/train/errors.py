"""Why training stopped before its last step. Each message says what is on disk and what to do."""

from __future__ import annotations


class TrainingStopped(RuntimeError):
    """Training stopped before its last step."""


class NonFiniteLossError(TrainingStopped):
    """The loss or gradient became NaN or infinite; the last good checkpoint is kept."""


class DivergedError(TrainingStopped):
    """The loss grew far past its starting value; the last good checkpoint is kept."""


class TrainingInterrupted(TrainingStopped):
    """Ctrl-C or SIGTERM: a checkpoint of the current step was saved."""
