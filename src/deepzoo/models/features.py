"""The MNIST feature network behind classifier-FID (and usable as a perceptual-loss network by
any model): a fixed CNN whose weights ship in the package.

It is trained by the `mnist-features` recipe (fixed seed 1234) and copied here, so every deepzoo
evaluation measures samples with the same features. Its features are the 128-wide ReLU layer
before the classifier.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from deepzoo.models.classifier import CNN, CNNConfig

FEATURE_CONFIG = CNNConfig(channels=(32, 64, 128), convs_per_stage=2, feature_dim=128)
WEIGHTS = Path(__file__).with_name("weights") / "mnist_features.safetensors"


@lru_cache(maxsize=1)
def mnist_feature_net() -> CNN:
    """The shipped feature classifier, in eval mode on the CPU, its parameters frozen."""
    from safetensors.torch import load_file

    if not WEIGHTS.exists():
        raise FileNotFoundError(f"the feature classifier's weights are missing: {WEIGHTS}")
    net = CNN(FEATURE_CONFIG)
    net.load_state_dict(load_file(WEIGHTS))
    return net.eval().requires_grad_(False)
