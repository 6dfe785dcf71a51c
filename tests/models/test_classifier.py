from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from deepzoo.data import TensorData
from deepzoo.metrics.classification import classification_metrics
from deepzoo.models.classifier import CNN, CNNConfig, Regularization, ResNet, ResNetConfig
from deepzoo.nn.augment import cutout, mixup, random_affine, random_translate
from deepzoo.nn.residual import BasicBlock
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


ALL = Regularization(
    rotate=10.0, scale=0.1, shear=15.0, stretch=0.2, translate=2, cutout=6, mixup=0.4, label_smoothing=0.1
)


@pytest.mark.parametrize(
    "build",
    [
        lambda reg: CNN(CNNConfig(channels=(4, 8), regularize=reg)),
        lambda reg: ResNet(ResNetConfig(widths=(4, 8), blocks_per_stage=1, regularize=reg)),
    ],
    ids=["cnn", "resnet"],
)
def test_regularized_loss_is_the_plain_loss_of_the_augmented_batch_in_training_only(build):
    torch.manual_seed(0)
    model, plain = build(ALL), build(Regularization())
    plain.load_state_dict(model.state_dict())
    x, y = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
    model.eval(), plain.eval()
    torch.testing.assert_close(model.loss({"x": x, "y": y}), plain.loss({"x": x, "y": y}))  # eval: none
    model.train(), plain.train()
    torch.manual_seed(1)
    out = model.loss({"x": x, "y": y})
    torch.manual_seed(1)  # the same draws, in the documented order: affine, translate, cutout, mixup
    mixed, y_a, y_b, lam = mixup(
        cutout(random_translate(random_affine(x, 10.0, 0.1, shear=15.0, stretch=0.2), 2), 6), y, 0.4
    )
    expected = lam * F.cross_entropy(plain(mixed), y_a, label_smoothing=0.1) + (1 - lam) * F.cross_entropy(
        plain(mixed), y_b, label_smoothing=0.1
    )
    torch.testing.assert_close(out["loss"], expected)


def test_resnet_stochastic_depth_follows_the_linear_rule_and_leaves_eval_alone():
    torch.manual_seed(0)
    config = ResNetConfig(widths=(4, 8), blocks_per_stage=2)
    deep = ResNet(replace(config, stochastic_depth=0.5))
    assert [b.drop_prob for b in deep.modules() if isinstance(b, BasicBlock)] == [0.125, 0.25, 0.375, 0.5]
    for block in deep.modules():  # as if trained: a new block's branch is zero (bn2 starts at 0)
        if isinstance(block, BasicBlock):
            torch.nn.init.ones_(block.bn2.weight)
    plain = ResNet(config)
    plain.load_state_dict(deep.state_dict())  # no new parameters or buffers
    x = torch.rand(8, 1, 28, 28)
    torch.testing.assert_close(deep.eval()(x), plain.eval()(x))
    block = BasicBlock(3, 3, drop_prob=0.5).eval()
    torch.nn.init.ones_(block.bn2.weight)
    x = torch.randn(64, 3, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(block(x), torch.relu(block.residual(x) + x), rtol=0, atol=0)


def test_a_block_under_stochastic_depth_keeps_or_drops_its_branch_per_example():
    torch.manual_seed(0)
    block = BasicBlock(3, 3, drop_prob=0.25)
    torch.nn.init.ones_(block.bn2.weight)
    block.train()
    for bn in (block.bn1, block.bn2):
        bn.eval()  # running statistics: the branch of an example does not depend on the others
    x = torch.randn(2000, 3, 4, 4)
    with torch.no_grad():
        y, branch, skip = block(x), block.residual(x), block.skip(x)
    kept = torch.relu(branch / 0.75 + skip)  # inverted scaling: E[y's pre-activation] = F(x) + x
    dropped = torch.relu(skip)
    is_kept = torch.isclose(y, kept, atol=1e-6).flatten(1).all(1)
    is_dropped = torch.isclose(y, dropped, atol=1e-6).flatten(1).all(1)
    assert (is_kept ^ is_dropped).all()  # every example is exactly one of the two
    assert is_dropped.float().mean().item() == pytest.approx(0.25, abs=0.05)  # sd 0.0097


def test_translation_augmentation_makes_a_cnn_robust_to_shifted_digits(tmp_path, mnist_test):
    """Trained 100 steps on 5,000 digits, tested on 2,000 others moved 2 pixels diagonally: seeds
    0-4 measured 0.55-0.61 without augmentation, 0.89-0.92 with translations of up to 2 pixels
    (both 0.95-0.98 on the unmoved digits)."""
    train = TensorData(mnist_test[slice(0, 5000)])
    held_out = mnist_test[slice(5000, 7000)]
    moved = [
        TensorData({"x": torch.roll(held_out["x"], shift, (2, 3)), "y": held_out["y"]})
        for shift in ((2, 2), (-2, -2), (2, -2), (-2, 2))
    ]
    cfg = TrainConfig(
        steps=100, batch_size=64, lr=1e-2, warmup_steps=10, eval_every=100, progress=False,
        precision="fp32", device="cpu",
    )  # fmt: skip
    accuracy = {}
    for shift in (0, 2):
        torch.manual_seed(0)
        model = CNN(CNNConfig(channels=(8, 16), regularize=Regularization(translate=shift)))
        Trainer(model, train, cfg, tmp_path / str(shift), evaluate=lambda m, s, d: {}).fit()
        model.eval()
        assert classification_metrics(model, TensorData(held_out))[0]["accuracy"] > 0.9
        accuracy[shift] = sum(classification_metrics(model, view)[0]["accuracy"] for view in moved) / 4
    assert accuracy[2] > 0.8 and accuracy[2] - accuracy[0] > 0.2, accuracy


def test_regularized_training_runs_under_bf16_autocast_as_the_trainer_forces_it():
    """The augmentations run inside the trainer's autocast (bf16 on AMX CPUs and GPUs): the same
    draws give the fp32 loss to bf16's precision (8 bits: a relative 2^-8 per rounding; 5% allows
    the few dozen roundings of this small net) and gradients that are finite."""
    torch.manual_seed(0)
    model = ResNet(ResNetConfig(widths=(4, 8), blocks_per_stage=1, stochastic_depth=0.3, regularize=ALL))
    x, y = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
    torch.manual_seed(1)
    full = model.loss({"x": x, "y": y})["loss"]
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = model.loss({"x": x, "y": y})["loss"]
    assert half.dtype == torch.float32 and half.item() == pytest.approx(full.item(), rel=0.05)
    half.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize(
    "build",
    [
        lambda **stats: CNN(CNNConfig(channels=(4, 8), **stats)),
        lambda **stats: ResNet(ResNetConfig(widths=(4, 8), blocks_per_stage=1, **stats)),
    ],
    ids=["cnn", "resnet"],
)
def test_the_input_is_standardized_with_the_configured_statistics(build):
    """A net with statistics (m, s) on x is the same net with (0, 1) on (x - m) / s."""
    torch.manual_seed(0)
    model, raw = build(input_mean=0.25, input_std=0.5).eval(), build(input_mean=0.0, input_std=1.0).eval()
    raw.load_state_dict(model.state_dict())
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(model(x), raw((x - 0.25) / 0.5))


@pytest.mark.parametrize("batchnorm", [True, False])
def test_a_cnn_stage_is_conv_bn_relu_then_a_max_pool(batchnorm):
    """conv3x3 (no bias before a BatchNorm, which would cancel it), BatchNorm, ReLU per conv."""
    model = CNN(CNNConfig(channels=(4, 8), convs_per_stage=2, batchnorm=batchnorm))
    norm = torch.nn.BatchNorm2d if batchnorm else torch.nn.Identity
    stage = [torch.nn.Conv2d, norm, torch.nn.ReLU] * 2 + [torch.nn.MaxPool2d]
    assert [type(m) for m in model.body] == stage * 2
    convs = [m for m in model.body if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 4 and [c.out_channels for c in convs] == [4, 4, 8, 8]
    assert all((c.bias is None) == batchnorm for c in convs)


def test_the_cnns_dropout_acts_on_the_features_before_the_last_layer_in_training_only():
    torch.manual_seed(0)
    model = CNN(CNNConfig(channels=(4, 8), dropout=0.5))
    x = torch.rand(6, 1, 28, 28)
    linear = model.head[-1]
    model.eval()
    torch.testing.assert_close(model(x), linear(model.features(x)))
    model.train()
    torch.manual_seed(1)
    logits = model(x)
    torch.manual_seed(1)  # the features draw nothing: the dropout mask is replayed
    expected = linear(F.dropout(model.features(x), 0.5, training=True))
    torch.testing.assert_close(logits, expected)
    assert not torch.allclose(logits, linear(model.features(x)))


def test_a_new_resnet_is_its_skip_paths_with_kaiming_fan_out_convolutions():
    """Every block starts as its skip path (the last BN's scale at zero, Goyal et al.) and each
    convolution is N(0, 2 / fan_out), fan_out = C_out k^2 (He et al.'s backward-pass variant),
    checked to 5% on the 64 -> 128 convolutions (73,728 weights: a standard error of 0.3%)."""
    torch.manual_seed(0)
    model = ResNet(ResNetConfig(widths=(64, 128), blocks_per_stage=1))
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    for block in blocks:
        x = torch.randn(2, block.conv1.in_channels, 8, 8)
        assert block.residual(x).abs().max() == 0
        torch.testing.assert_close(block(x), torch.relu(block.skip(x)))
    wide = blocks[1].conv1.weight  # 64 -> 128, 3x3: fan_out 1152, fan_in 576
    assert wide.std().item() == pytest.approx((2 / (128 * 9)) ** 0.5, rel=0.05)


def test_resnet_features_are_the_global_average_of_the_last_stage():
    torch.manual_seed(0)
    model = ResNet(ResNetConfig(widths=(4, 8), blocks_per_stage=1)).eval()
    x = torch.rand(3, 1, 28, 28)
    last = model.body((x - model.config.input_mean) / model.config.input_std)  # (B, 8, 14, 14)
    torch.testing.assert_close(model.features(x), last.mean((2, 3)))
    torch.testing.assert_close(model(x), model.head(last.mean((2, 3))))
