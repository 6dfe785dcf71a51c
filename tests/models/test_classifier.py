import pytest
import torch

from deepzoo.data import TensorData
from deepzoo.metrics.classification import classification_metrics
from deepzoo.models.classifier import CNN, CNNConfig, ResNet, ResNetConfig
from deepzoo.train import TrainConfig, Trainer


@pytest.mark.parametrize(
    "model",
    [CNN(CNNConfig(channels=(8, 16))), ResNet(ResNetConfig(widths=(8, 16), blocks_per_stage=1))],
)
def test_classifiers_give_logits_and_features(model):
    x = torch.rand(5, 1, 28, 28)
    assert model(x).shape == (5, 10)
    assert model.features(x).ndim == 2
    out = model.loss({"x": x, "y": torch.arange(5)})
    assert out["loss"].ndim == 0 and 0 <= out["accuracy"] <= 1


def test_loss_is_the_mean_negative_log_likelihood_of_the_labels():
    model = CNN(CNNConfig(channels=(4,))).eval()
    x, y = torch.rand(6, 1, 28, 28), torch.tensor([0, 1, 2, 3, 4, 5])
    log_probs = torch.log_softmax(model(x), dim=1)
    expected = -torch.stack([log_probs[i, y[i]] for i in range(6)]).mean()
    torch.testing.assert_close(model.loss({"x": x, "y": y})["loss"], expected)


def test_resnet_stages_halve_the_resolution():
    model = ResNet(ResNetConfig(widths=(8, 16, 32), blocks_per_stage=2))
    h = model.body(torch.rand(2, 1, 28, 28))
    assert h.shape == (2, 32, 7, 7)


@pytest.mark.parametrize(
    "model",
    [
        lambda: CNN(CNNConfig(channels=(8, 16))),
        lambda: ResNet(ResNetConfig(widths=(16, 32, 64), blocks_per_stage=1)),
    ],
    ids=["cnn", "resnet"],
)
def test_short_training_run_is_clearly_above_chance(tmp_path, mnist_test, model):
    train = TensorData(mnist_test[slice(0, 5000)])
    held_out = TensorData(mnist_test[slice(5000, 7000)])
    cfg = TrainConfig(
        steps=100,
        batch_size=64,
        lr=1e-2,
        warmup_steps=10,
        eval_every=100,
        progress=False,
        precision="fp32",
        device="cpu",
    )
    torch.manual_seed(0)
    result = Trainer(
        model(), train, cfg, tmp_path, evaluate=lambda m, s, d: classification_metrics(m, held_out)[0]
    ).fit()
    assert result.metrics["accuracy"] > 0.75  # chance is 0.10
