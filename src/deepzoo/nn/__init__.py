"""Reusable layers; nothing here knows about models, training or data."""

from deepzoo.nn.residual import BasicBlock

__all__ = ["BasicBlock"]
