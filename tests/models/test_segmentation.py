"""Segmentation networks: shapes, the pooling switches of the unpooling decoder, the loss, and
short training runs on small MNIST scenes; the recipes end to end."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from deepzoo.data.mnist import read_mnist
from deepzoo.data.scenes import SceneConfig, make_scenes
from deepzoo.models.segmentation import SegmentationConfig, SegmentationNet

SMALL = SceneConfig(size=32, max_digits=2, min_scale=14, max_scale=22)


@pytest.fixture(scope="module")
def scenes():
    images, labels = read_mnist("test")
    return make_scenes(images[:2000], labels[:2000], 400, seed=0, config=SMALL)


@pytest.mark.parametrize("arch", ["unet", "unpool"])
def test_logits_keep_the_image_size_and_odd_sizes_are_refused(arch):
    net = SegmentationNet(SegmentationConfig(arch=arch, widths=(8, 8, 8, 8)))
    assert net(torch.rand(2, 1, 64, 48)).shape == (2, 11, 64, 48)
    with pytest.raises(ValueError, match="divisible by 8"):
        net(torch.rand(1, 1, 60, 64))


@pytest.mark.parametrize("arch, convs", [("unet", 4 * 3 + 2), ("unpool", 5 * 3 + 2)])
def test_every_level_is_two_conv_bn_relu_and_the_unpooling_decoder_adds_one(arch, convs):
    """Depth D = 3: encoder levels and the bottom are two 3x3 conv-BN-ReLU each (2 D + 2), the
    U-Net's decoder levels two more (2 D), the unpooling decoder's three (3 D: one to the level's
    width before unpooling, two after)."""
    net = SegmentationNet(SegmentationConfig(arch=arch, widths=(4, 8, 8, 8)))
    layers = list(net.modules())
    threes = [i for i, m in enumerate(layers) if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(threes) == convs
    for i in threes:  # each 3x3 conv is followed by its BatchNorm and ReLU
        assert isinstance(layers[i + 1], torch.nn.BatchNorm2d) and isinstance(layers[i + 2], torch.nn.ReLU)


@pytest.mark.parametrize("arch", ["unet", "unpool"])
def test_the_channels_last_network_computes_what_the_contiguous_one_does(arch):
    """The net keeps NHWC weights for speed; the pooling switches and the logits must not change."""
    torch.manual_seed(0)
    net = SegmentationNet(SegmentationConfig(arch=arch, widths=(4, 8, 8))).double().eval()
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    assert net.head.weight.is_contiguous(memory_format=torch.channels_last)
    nhwc = net(x)
    net.to(memory_format=torch.contiguous_format)  # the same layers in NCHW, by hand (forward goes NHWC)
    h, skips, switches = x, [], []
    for block in net.down:
        h = block(h)
        skips.append(h)
        h, where = F.max_pool2d(h, 2, return_indices=True)
        switches.append(where)
    h = net.bottom(h)
    for level in reversed(range(net.depth)):
        if arch == "unet":
            h = net.up[level](torch.cat([net.upsample[level](h), skips[level]], 1))
        else:
            h = net.up[level](F.max_unpool2d(net.upsample[level](h), switches[level], 2))
    torch.testing.assert_close(nhwc, net.head(h), rtol=1e-12, atol=1e-12)


def test_the_unpooling_decoder_puts_values_back_where_the_encoder_maxima_were():
    """In the unpool arch, what enters a decoder level is zero except where the encoder's 2x2
    max-pool of that level found its maxima (the pooling switches)."""
    torch.manual_seed(0)
    net = SegmentationNet(SegmentationConfig(arch="unpool", widths=(4, 8, 8))).eval()
    seen = {}
    net.down[0].register_forward_hook(lambda module, args, out: seen.__setitem__("encoder", out))
    net.up[0].register_forward_hook(lambda module, args, out: seen.__setitem__("decoder_in", args[0]))
    net(torch.rand(2, 1, 16, 16))
    encoder, decoder_in = seen["encoder"], seen["decoder_in"]
    _, where = F.max_pool2d(encoder, 2, return_indices=True)
    switches = torch.zeros_like(encoder).flatten(2).scatter_(2, where.flatten(2), 1.0).view_as(encoder).bool()
    assert (decoder_in[~switches] == 0).all()
    assert (decoder_in[switches] != 0).float().mean() > 0.3  # (ReLU zeros some of the placed values)


def test_the_loss_is_the_mean_cross_entropy_over_pixels_not_ignored():
    torch.manual_seed(0)
    net = SegmentationNet(SegmentationConfig(widths=(4, 4))).eval()
    x = torch.rand(2, 1, 8, 8)
    y = torch.randint(0, 11, (2, 8, 8))
    y[0, :2] = 255
    logits = net(x)
    keep = y != 255
    expected = -logits.log_softmax(1).permute(0, 2, 3, 1)[keep].gather(1, y[keep][:, None]).mean()
    terms = net.loss({"x": x, "semantic": y.to(torch.uint8)})
    torch.testing.assert_close(terms["loss"], expected)
    right = logits.argmax(1) == y
    assert terms["pixel_accuracy"].item() == pytest.approx(right[keep].float().mean().item())


@pytest.mark.parametrize("arch", ["unet", "unpool"])
def test_a_short_run_learns_the_pixels(scenes, arch):
    """150 AdamW steps on 400 32 x 32 scenes take the cross-entropy from about ln 11 = 2.4 to
    below 0.35, under the 0.43 nats of the pixel classes' marginal (the background right; the digit
    classes come later, see the benchmark). Seeds 0-15: 0.18-0.26 for both; at 100 steps some
    seeds were still on the plateau near the marginal (0.48)."""
    torch.manual_seed(0)
    net = SegmentationNet(SegmentationConfig(arch=arch, widths=(8, 16, 32)))
    opt = torch.optim.AdamW(net.parameters(), lr=5e-3)
    losses = []
    for _ in range(150):
        loss = net.loss(scenes[torch.randint(0, len(scenes), (16,))])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 2.0 and sum(losses[-10:]) / 10 < 0.35, (losses[0], losses[-10:])


@pytest.mark.parametrize("name", ["unet-scenes", "fcn-scenes"])
def test_the_recipes_train_evaluate_and_draw(tmp_path, tiny_recipe_run, name):
    from deepzoo.cli import main
    from deepzoo.recipes import get_recipe
    from deepzoo.recipes.detection import ScenesData

    model = replace(get_recipe(name).default.model, widths=(4, 4, 4))
    run_dir, record = tiny_recipe_run(name, model=model, data=ScenesData(train=40, test=24, scene=SMALL))
    assert 0 <= record["miou"] <= 1 and 0 <= record["pixel_accuracy"] <= 1
    assert (run_dir / "samples" / "segmentation.png").stat().st_size > 0
    from PIL import Image

    sizes = {}
    for n in (2, 3):  # a grid about sqrt(n) examples wide: n = 2 in one row, n = 3 in two
        main(["sample", str(run_dir), "--n", str(n), "--out", str(tmp_path / f"drawn-{n}.png")])
        sizes[n] = Image.open(tmp_path / f"drawn-{n}.png").size
    assert sizes[3][0] == sizes[2][0] and sizes[3][1] > 1.8 * sizes[2][1]


def test_the_evaluation_counts_every_scene_leaves_ignored_pixels_out_and_names_the_worst_digit(
    scenes, tmp_path
):
    """A stand-in network that labels every inked pixel 3 and every other background: the recipe's
    scores are those of one confusion matrix over all the test scenes, the ignored pixels left
    out; the background's IoU is class 0's and the worst digit's the least of classes 1-10."""
    from deepzoo.metrics.segmentation import confusion_matrix, segmentation_scores
    from deepzoo.recipes.detection import SegmentationRun, _evaluate_segmentation, draw_segmentation

    data = {k: v.clone() for k, v in scenes[slice(0, 300)].items()}
    data["semantic"][:, :4] = 255  # the top rows ignored
    net = SegmentationNet(SegmentationConfig(widths=(4, 4)))
    net.predict = lambda x: torch.where(x[:, 0] > 0.3, 3, 0)
    record = _evaluate_segmentation(net, type(scenes)(data), tmp_path, SegmentationRun())
    want = segmentation_scores(confusion_matrix(net.predict(data["x"]), data["semantic"], 11, 255))
    assert record["miou"] == pytest.approx(want["miou"])
    assert record["pixel_accuracy"] == pytest.approx(want["pixel_accuracy"])
    assert record["background_iou"] == pytest.approx(want["iou"][0]) and want["iou"][0] > 0.9
    digits = [iou for iou in want["iou"][1:] if iou == iou]
    assert record["worst_digit_iou"] == pytest.approx(min(digits)) and min(digits) < max(digits)
    drawn = draw_segmentation(net, {k: v[:2] for k, v in data.items()})  # (2, 3 panels, 3, H, W)
    assert (drawn[:, 1, :, :4] == 1).all()  # ignored pixels in white
    # the background is not a digit: a scene of digit 0 (class 1) but for 4 background pixels, all
    # read as class 1, has background IoU 0 and worst digit IoU 60 / 64
    semantic = torch.ones(1, 8, 8, dtype=torch.uint8)
    semantic[0, 0, :4] = 0
    net.predict = lambda x: torch.ones(len(x), 8, 8, dtype=torch.long)
    plain = type(scenes)({"x": torch.rand(1, 1, 8, 8), "semantic": semantic})
    record = _evaluate_segmentation(net, plain, tmp_path, SegmentationRun())
    assert record["background_iou"] == 0 and record["worst_digit_iou"] == pytest.approx(60 / 64)
