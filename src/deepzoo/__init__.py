"""deepzoo: classic deep-learning models, implemented from their math and verified by tests."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    import torch


def load(run_dir: str | Path) -> torch.nn.Module:
    """The trained model of a run directory in eval mode: its best evaluation's weights when the
    run kept them, else its EMA weights, else its last ones."""
    from deepzoo.recipes import load_run

    return load_run(run_dir).model


__all__ = ["load", "__version__"]
