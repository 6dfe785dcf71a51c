"""MNIST scenes: deterministic per seed, boxes that enclose exactly each digit's ink, maps that
agree with the digits."""

import pytest
import torch

from deepzoo.data.mnist import read_mnist
from deepzoo.data.scenes import SceneConfig, make_scenes, render_scene, targets_of
from deepzoo.ops.boxes import box_iou


@pytest.fixture(scope="module")
def digits():
    images, labels = read_mnist("test")
    return images[:500], labels[:500]


def test_scenes_are_deterministic_per_seed(digits):
    a, b, c = (make_scenes(*digits, 20, seed=s) for s in (3, 3, 4))
    for key in a.tensors:
        assert torch.equal(a.tensors[key], b.tensors[key]), key
    assert not torch.equal(a.tensors["x"], c.tensors["x"])


@pytest.mark.parametrize("seed", range(3))
def test_boxes_enclose_exactly_the_ink_and_the_maps_agree_with_the_digits(digits, seed):
    config = SceneConfig()
    generator = torch.Generator().manual_seed(seed)
    counts = []
    for _ in range(40):
        scene = render_scene(*digits, config, generator)
        n = len(scene.labels)
        counts.append(n)
        assert 1 <= n <= config.max_digits and scene.masks.shape == (n, 64, 64)
        for mask, box in zip(scene.masks, scene.boxes):
            x1, y1, x2, y2 = (int(v) for v in box)
            assert mask[y1:y2, x1:x2].sum() == mask.sum()  # every ink pixel inside the box
            inside = mask[y1:y2, x1:x2]
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            side = max(x2 - x1, y2 - y1)
            assert side <= config.max_scale
        ink = scene.masks.any(0)
        assert torch.equal(scene.x[0] > 0, ink) and scene.x.max() <= 1
        assert torch.equal(scene.semantic > 0, ink) and torch.equal(scene.instances > 0, ink)
        for i in range(n):  # the instance map names a digit that has ink there, and its class
            where = scene.instances == i + 1
            assert scene.masks[i][where].all()
            assert (scene.semantic[where] == scene.labels[i] + 1).all()
        if n > 1:
            iou = box_iou(scene.boxes, scene.boxes).fill_diagonal_(0)
            assert iou.max() <= config.max_iou
    assert max(counts) >= 4 and min(counts) == 1


def test_padded_rows_give_back_the_targets(digits):
    data = make_scenes(*digits, 16, seed=0)
    targets = targets_of(data[slice(0, 16)])
    assert [len(t["labels"]) for t in targets] == (data.tensors["labels"] >= 0).sum(1).tolist()
    for t, boxes in zip(targets, data.tensors["boxes"]):
        assert (t["labels"] >= 0).all() and torch.equal(t["boxes"], boxes[: len(t["labels"])])
    assert data.tensors["semantic"].max() <= 10 and data.tensors["semantic"].dtype == torch.uint8


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="min_digits"):
        SceneConfig(min_digits=0)
    with pytest.raises(ValueError, match="max_scale"):
        SceneConfig(max_scale=80)


def test_reading_order_lists_the_digits_left_to_right_then_none():
    from deepzoo.data.scenes import reading_order_labels

    batch = {
        "labels": torch.tensor([[7, 3, -1], [1, 2, 5]]),
        "boxes": torch.tensor(
            [[[30, 0, 40, 9], [2, 5, 12, 20], [0, 0, 0, 0]], [[5, 9, 9, 9], [5, 1, 9, 9], [1, 1, 2, 2]]]
        ).float(),
    }
    assert reading_order_labels(batch).tolist() == [[3, 7, 10], [5, 2, 1]]


def test_every_count_of_digits_in_the_range_occurs(digits):
    """1..3 digits all occur (the scales and positions: see the next test, where the one scale is
    the canvas's side and leaves the one position (0, 0))."""
    generator = torch.Generator().manual_seed(0)
    config = SceneConfig(min_digits=1, max_digits=3, max_iou=1.0)
    counts = {len(render_scene(*digits, config, generator).labels) for _ in range(60)}
    assert counts == {1, 2, 3}


def test_a_digit_is_its_antialiased_bilinear_resize_with_the_ink_below_the_threshold_dropped(digits):
    """One digit at scale 14 on a 14-pixel canvas: x = resize(image / 255) where it exceeds `ink`,
    0 elsewhere; its intensities are kept (not made binary)."""
    import torch.nn.functional as F

    images, labels = digits
    config = SceneConfig(size=14, min_scale=14, max_scale=14, min_digits=1, max_digits=1, ink=0.3)
    scene = render_scene(images[:1], labels[:1], config, torch.Generator().manual_seed(0))
    resized = F.interpolate(images[:1, None].float() / 255, size=(14, 14), mode="bilinear", antialias=True)
    resized = resized[0].clamp(0, 1)
    torch.testing.assert_close(scene.x, torch.where(resized > 0.3, resized, 0.0))
    inked = scene.x[scene.x > 0]
    assert inked.min() > 0.3 and (inked < 0.9).any()


@pytest.mark.parametrize("ink", [0.0, 1.0])
def test_an_ink_threshold_outside_0_1_is_refused(ink):
    with pytest.raises(ValueError, match="ink must be in"):
        SceneConfig(ink=ink)


def test_a_rejected_placement_is_redrawn_rather_than_dropped(digits):
    """Five digits of 16-32 pixels with no overlap allowed on 64 x 64: with 20 tries per digit
    seeds 0-5 place 4.89-4.97 on average, with one try 2.92-3.13."""
    generator = torch.Generator().manual_seed(0)
    config = SceneConfig(min_digits=5, max_digits=5, max_iou=0.0)
    placed = [len(render_scene(*digits, config, generator).labels) for _ in range(100)]
    assert sum(placed) / 100 > 4.5


def test_rows_are_padded_with_label_minus_one_and_empty_boxes(digits):
    data = make_scenes(*digits, 12, seed=0, config=SceneConfig(min_digits=1, max_digits=4))
    labels, boxes = data.tensors["labels"], data.tensors["boxes"]
    counts = (labels >= 0).sum(1)
    assert counts.min() < 4  # some rows are padded
    for row, n in enumerate(counts.tolist()):
        assert (labels[row, :n] >= 0).all() and (labels[row, n:] == -1).all()
        assert (boxes[row, n:] == 0).all() and (boxes[row, :n, 2:] > boxes[row, :n, :2]).all()


def test_mnist_scenes_draw_on_the_digits_of_their_split():
    from deepzoo.data.scenes import mnist_scenes

    ours = mnist_scenes("test", n=3, seed=1)
    expected = make_scenes(*read_mnist("test"), 3, seed=1)
    for key in expected.tensors:
        assert torch.equal(ours.tensors[key], expected.tensors[key]), key
