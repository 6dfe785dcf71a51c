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
