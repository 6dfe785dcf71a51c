"""The folder layering of ARCHITECTURE.md, checked on the imports themselves: nn knows nothing of
models; models know nothing of data, metrics or train; viz nothing of train."""

import ast
from pathlib import Path

import pytest

from deepzoo.data.mnist import MEAN, STD
from deepzoo.models.classifier import CNNConfig, ResNetConfig
from deepzoo.models.linear import LinearConfig, TwoLayerConfig
from deepzoo.models.vqvae import VQVAEConfig

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "deepzoo"
FORBIDDEN = {
    "nn": ("deepzoo.models", "deepzoo.data", "deepzoo.metrics", "deepzoo.train", "deepzoo.recipes"),
    "models": ("deepzoo.data", "deepzoo.metrics", "deepzoo.train", "deepzoo.recipes"),
    "viz.py": ("deepzoo.train", "deepzoo.recipes"),
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(layer):
    files = [PACKAGE / layer] if layer.endswith(".py") else sorted((PACKAGE / layer).rglob("*.py"))
    for path in files:
        bad = {name for name in _imports(path) if name.startswith(FORBIDDEN[layer])}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_model_input_statistics_default_to_the_data_layers_mnist_statistics():
    for config in (CNNConfig(), ResNetConfig(), LinearConfig(), TwoLayerConfig()):
        assert (config.input_mean, config.input_std) == (MEAN, STD)
    assert VQVAEConfig().data_std == STD
