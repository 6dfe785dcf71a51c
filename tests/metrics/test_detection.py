"""COCO-style AP against pycocotools' COCOeval, on random and crafted cases."""

import contextlib
import io

import numpy as np
import pytest
import torch

from deepzoo.metrics.detection import average_precision

pytest.importorskip("pycocotools")


def _coco(detections, targets, num_classes, area="all"):
    """COCOeval's AP, AP50, AP75 (and AR@100) for the same inputs: boxes as xywh, areas = w h."""

    def xywh(b):
        return [b[0], b[1], b[2] - b[0], b[3] - b[1]]

    images = [{"id": i + 1} for i in range(len(targets))]
    annotations, results = [], []
    for i, (det, tgt) in enumerate(zip(detections, targets)):
        for box, label in zip(tgt["boxes"].tolist(), tgt["labels"].tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": label + 1,
                                "bbox": xywh(box), "area": w * h, "iscrowd": 0})  # fmt: skip
        for box, score, label in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
            results.append({"image_id": i + 1, "category_id": label + 1, "bbox": xywh(box), "score": score})
    return _cocoeval(images, annotations, results, num_classes, "bbox", area)


def _cocoeval(images, annotations, results, num_classes, iou_type, area):
    """COCOeval's AP, AP50, AP75 and AR@100 (area "all"), else the AP and AR of a COCO area range,
    or of (min, max) put in the "small" slot; None without results."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": k + 1} for k in range(num_classes)]}  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if not results:
            return None
        ev = COCOeval(gt, gt.loadRes(results), iou_type)
        if not isinstance(area, str):
            ev.params.areaRng[1], area = list(area), "small"
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    index = {"all": (0, 1, 2, 8), "small": (3, None, None, 9), "medium": (4, None, None, 10),
             "large": (5, None, None, 11)}[area]  # fmt: skip
    return [ev.stats[i] if i is not None else None for i in index]


def _random_case(seed, images=12, classes=4):
    g = torch.Generator().manual_seed(seed)
    detections, targets = [], []
    for _ in range(images):
        n = int(torch.randint(0, 6, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 150
        wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 100 + 2
        boxes = torch.cat([xy, xy + wh], 1)
        labels = torch.randint(0, classes, (n,), generator=g)
        targets.append({"boxes": boxes, "labels": labels})
        # detections: jittered copies of the truth (some), duplicates, and random false positives
        m = int(torch.randint(0, 12, (1,), generator=g))
        pick = torch.randint(0, max(n, 1), (m,), generator=g)
        jitter = torch.randn(m, 4, generator=g, dtype=torch.float64) * 8
        base = boxes[pick] if n else torch.rand(m, 4, generator=g, dtype=torch.float64) * 100
        d_boxes = base + jitter
        d_boxes[:, 2:] = torch.maximum(d_boxes[:, 2:], d_boxes[:, :2] + 1)
        d_labels = labels[pick] if n else torch.randint(0, classes, (m,), generator=g)
        flip = torch.rand(m, generator=g) < 0.2
        d_labels = torch.where(flip, torch.randint(0, classes, (m,), generator=g), d_labels)
        scores = torch.rand(m, generator=g, dtype=torch.float64)
        detections.append({"boxes": d_boxes, "scores": scores, "labels": d_labels})
    return detections, targets


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("area", ["all", "medium"])
def test_ap_equals_cocoeval_on_random_detections(seed, area):
    detections, targets = _random_case(seed)
    ours = average_precision(detections, targets, num_classes=4, area=area)
    want = _coco(detections, targets, 4, area)
    assert ours.map == pytest.approx(want[0], abs=1e-6)
    if area == "all":
        assert ours.map_50 == pytest.approx(want[1], abs=1e-6)
        assert ours.map_75 == pytest.approx(want[2], abs=1e-6)
    assert ours.recall == pytest.approx(want[3], abs=1e-6)


def _box(*xyxy):
    return torch.tensor([xyxy], dtype=torch.float64)


def _dets(boxes, scores, labels=None):
    return {
        "boxes": torch.cat([_box(*b) for b in boxes]),
        "scores": torch.tensor(scores, dtype=torch.float64),
        "labels": torch.zeros(len(boxes), dtype=torch.long) if labels is None else torch.tensor(labels),
    }


def test_crafted_cases_match_cocoeval():
    t = {"boxes": torch.cat([_box(0, 0, 10, 10), _box(20, 20, 40, 40)]), "labels": torch.tensor([0, 1])}
    none = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
    # no detections at all: AP 0 for both classes (COCOeval has no results to load: we state it)
    empty = average_precision([none], [t], num_classes=2)
    assert empty.map == 0 and empty.map_50 == 0 and empty.recall == 0
    # a perfect detection and a duplicate of it scored lower: the duplicate is a false positive
    # after full recall, so AP is still 1
    perfect = {
        "boxes": torch.cat([_box(0, 0, 10, 10), _box(20, 20, 40, 40), _box(0, 0, 10, 10)]),
        "scores": torch.tensor([0.9, 0.8, 0.1], dtype=torch.float64),
        "labels": torch.tensor([0, 1, 0]),
    }
    assert average_precision([perfect], [t], 2).map == pytest.approx(1.0)
    # a poor box (IoU 0.4) scored above the good one: precision 1/2 at full recall of class 0
    poor_first = dict(perfect, boxes=torch.cat([perfect["boxes"][:2], _box(0, 0, 10, 4)]),
                      scores=torch.tensor([0.5, 0.8, 0.9], dtype=torch.float64))  # fmt: skip
    # class 2 has no ground truth: its detection counts nowhere (not a zero AP averaged in)
    stray = {
        "boxes": torch.cat([perfect["boxes"], _box(50, 50, 60, 60)]),
        "scores": torch.tensor([0.9, 0.8, 0.1, 0.99], dtype=torch.float64),
        "labels": torch.tensor([0, 1, 0, 2]),
    }
    for det in (perfect, poor_first, stray):
        ours, want = average_precision([det], [t], num_classes=3), _coco([det], [t], 3)
        assert (ours.map, ours.map_50, ours.map_75) == pytest.approx(want[:3], abs=1e-6)
    assert average_precision([poor_first], [t], 3).map_50 == pytest.approx(0.75, abs=1e-6)
    assert np.isnan(average_precision([stray], [t], 3).ap_per_class[2])


def test_iou_exactly_at_the_threshold_matches_and_ignored_boxes_come_last():
    gt = {"boxes": _box(0, 0, 10, 10), "labels": torch.tensor([0])}
    half = {
        "boxes": _box(0, 0, 10, 5),
        "scores": torch.ones(1, dtype=torch.float64),
        "labels": torch.tensor([0]),
    }
    ours, want = average_precision([half], [gt], 1), _coco([half], [gt], 1)
    assert ours.map_50 == pytest.approx(1.0) and (ours.map, ours.map_50) == pytest.approx(want[:2], abs=1e-6)
    # "medium" ignores the 30 x 30 box (area < 32^2); the detection overlaps it more (IoU 0.94)
    # than the 40 x 40 one (0.60) but is matched to the one that counts, as COCOeval does
    two = {"boxes": torch.cat([_box(0, 0, 30, 30), _box(0, 0, 40, 40)]), "labels": torch.tensor([0, 0])}
    det = {
        "boxes": _box(0, 0, 31, 31),
        "scores": torch.ones(1, dtype=torch.float64),
        "labels": torch.tensor([0]),
    }
    ours, want = average_precision([det], [two], 1, area="medium"), _coco([det], [two], 1, "medium")
    assert ours.map_50 == pytest.approx(1.0) and ours.map == pytest.approx(want[0], abs=1e-6)
    # the range's bounds are inside it: a 32 x 32 box (area 32^2 exactly) counts as "medium"
    edge = {"boxes": _box(0, 0, 32, 32), "labels": torch.tensor([0])}
    found = _dets([(0, 0, 32, 32)], [1.0])
    ours, want = average_precision([found], [edge], 1, area="medium"), _coco([found], [edge], 1, "medium")
    assert ours.map == pytest.approx(1.0) and ours.map == pytest.approx(want[0], abs=1e-6)


def test_equal_ious_take_the_later_box_the_cap_keeps_the_best_and_iou_one_matches():
    """COCOeval's edges: (1) a detection with IoU 1/3 to two ground truths takes the later
    one, leaving the first for the next detection (2 TP, AP 1; taking the first gives a FP);
    (2) `max_detections` keeps each image's best per class (a cap of 1 keeps only the FP);
    (3) a threshold of 1 is applied as 1 - 1e-10, so IoU 1 - 1e-12 still matches; (4) below."""
    adjacent = {"boxes": torch.cat([_box(0, 0, 10, 10), _box(10, 0, 20, 10)]), "labels": torch.tensor([0, 0])}
    straddling = _dets([(5, 0, 15, 10), (0, 0, 10, 10)], [0.9, 0.8])
    ours = average_precision([straddling], [adjacent], 1, iou_thresholds=(0.3,))
    want = _coco([straddling], [adjacent], 1)
    assert ours.map == pytest.approx(1.0) and ours.recall == pytest.approx(1.0)
    coco_30 = average_precision([straddling], [adjacent], 1)  # the COCO thresholds: no IoU 1/3 there
    assert (coco_30.map, coco_30.map_50) == pytest.approx(want[:2], abs=1e-6)
    one = {"boxes": _box(0, 0, 10, 10), "labels": torch.tensor([0])}
    false_first = _dets([(50, 50, 60, 60), (0, 0, 10, 10)], [0.9, 0.8])
    assert average_precision([false_first], [one], 1).map_50 == pytest.approx(0.5, abs=1e-6)
    capped = average_precision([false_first], [one], 1, max_detections=1)
    assert capped.map_50 == 0 and capped.recall == 0
    assert (capped.map, capped.map_50) == pytest.approx(_coco_max1([false_first], [one]), abs=1e-6)
    # (4) equal scores across images rank in image order (COCOeval's stable sort): the false
    # positive of image 1 before the true positive of image 2, so precision is 1/2 at recall 1
    tied = [_dets([(50, 50, 60, 60)], [0.5]), _dets([(0, 0, 10, 10)], [0.5])]
    targets = [
        {"boxes": torch.zeros(0, 4, dtype=torch.float64), "labels": torch.zeros(0, dtype=torch.long)},
        one,
    ]
    ours = average_precision(tied, targets, 1)
    assert ours.map_50 == pytest.approx(0.5, abs=1e-6)
    assert (ours.map, ours.map_50) == pytest.approx(_coco(tied, targets, 1)[:2], abs=1e-6)
    near = _dets([(0, 0, 10, 10 + 1e-11)], [0.9])
    far = _dets([(0, 0, 10, 10 + 1e-6)], [0.9])
    assert average_precision([near], [one], 1, iou_thresholds=(1.0,)).map == pytest.approx(1.0)
    assert average_precision([far], [one], 1, iou_thresholds=(1.0,)).map == 0


def _coco_max1(detections, targets):
    """COCOeval's AP and AP50 with maxDets [1] (one detection per image and class)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b):
        return [b[0], b[1], b[2] - b[0], b[3] - b[1]]

    gt = COCO()
    gt.dataset = {
        "images": [{"id": i + 1} for i in range(len(targets))],
        "categories": [{"id": 1}],
        "annotations": [
            {"image_id": i + 1, "category_id": 1, "bbox": xywh(b), "area": (b[2] - b[0]) * (b[3] - b[1]),
             "iscrowd": 0}
            for i, t in enumerate(targets) for b in t["boxes"].tolist()
        ],
    }  # fmt: skip
    for n, annotation in enumerate(gt.dataset["annotations"]):
        annotation["id"] = n + 1
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes([
            {"image_id": i + 1, "category_id": 1, "bbox": xywh(b), "score": s}
            for i, d in enumerate(detections) for b, s in zip(d["boxes"].tolist(), d["scores"].tolist())
        ])  # fmt: skip
        ev = COCOeval(gt, dt, "bbox")
        ev.params.maxDets = [1]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][:, :, 0, 0, 0]  # (T, 101) of the one class, area "all"
    return precision.mean(), precision[0].mean()


def test_bad_input_is_refused():
    t = {"boxes": _box(0, 0, 1, 1), "labels": torch.tensor([5])}
    d = {"boxes": _box(0, 0, 1, 1), "scores": torch.ones(1), "labels": torch.tensor([0])}
    with pytest.raises(ValueError, match="labels"):
        average_precision([d], [t], num_classes=3)
    with pytest.raises(ValueError, match="images"):
        average_precision([d, d], [t], num_classes=6)
    negative = dict(d, labels=torch.tensor([-1]))
    with pytest.raises(ValueError, match=r"detection labels must be in \[0, 6\)"):
        average_precision([negative], [t], num_classes=6)


def _coco_segm(detections, targets, num_classes, area="all"):
    """COCOeval's segm AP, AP50, AP75, AR@100: masks as RLE, areas = pixel counts."""
    from pycocotools import mask as mask_utils

    def rle(mask):
        return mask_utils.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))

    height, width = targets[0]["masks"].shape[1:]
    images = [{"id": i + 1, "height": height, "width": width} for i in range(len(targets))]
    annotations, results = [], []
    for i, (det, tgt) in enumerate(zip(detections, targets)):
        for mask, label in zip(tgt["masks"], tgt["labels"].tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": label + 1,
                                "segmentation": rle(mask), "area": float(mask.sum()),
                                "iscrowd": 0})  # fmt: skip
        for mask, score, label in zip(det["masks"], det["scores"].tolist(), det["labels"].tolist()):
            results.append(
                {"image_id": i + 1, "category_id": label + 1, "segmentation": rle(mask), "score": score}
            )
    return _cocoeval(images, annotations, results, num_classes, "segm", area)


def _random_mask_case(seed, images=10, classes=3, size=48):
    """Blob masks (a random rectangle with random pixels knocked out) and detections that are
    shifted, eroded or relabelled copies of them, duplicates and random blobs."""
    g = torch.Generator().manual_seed(seed)

    def blob():
        x0, y0 = torch.randint(0, size - 8, (2,), generator=g).tolist()
        w, h = torch.randint(4, 30, (2,), generator=g).tolist()
        mask = torch.zeros(size, size, dtype=torch.bool)
        mask[y0 : y0 + h, x0 : x0 + w] = True
        return mask & (torch.rand(size, size, generator=g) > 0.05)

    detections, targets = [], []
    for _ in range(images):
        n = int(torch.randint(1, 5, (1,), generator=g))
        masks = torch.stack([blob() for _ in range(n)])
        labels = torch.randint(0, classes, (n,), generator=g)
        targets.append({"masks": masks, "labels": labels})
        m = int(torch.randint(1, 9, (1,), generator=g))
        pick = torch.randint(0, n, (m,), generator=g)
        shifts = torch.randint(-2, 3, (m, 2), generator=g).tolist()
        d_masks = torch.stack([
            masks[p].roll(tuple(shift), dims=(0, 1)) & (torch.rand(size, size, generator=g) > 0.05)
            if torch.rand(1, generator=g) < 0.8 else blob()
            for p, shift in zip(pick.tolist(), shifts)
        ])  # fmt: skip
        d_labels = torch.where(
            torch.rand(m, generator=g) < 0.2, torch.randint(0, classes, (m,), generator=g), labels[pick]
        )
        detections.append(
            {"masks": d_masks, "scores": torch.rand(m, generator=g, dtype=torch.float64), "labels": d_labels}
        )
    return detections, targets


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("area", ["all", (0.0, 150.0)])
def test_mask_ap_equals_cocoeval_segm_on_random_masks(seed, area):
    detections, targets = _random_mask_case(seed)
    ours = average_precision(detections, targets, num_classes=3, area=area, iou_type="segm")
    want = _coco_segm(detections, targets, 3, area)
    assert ours.map == pytest.approx(want[0], abs=1e-6)
    if area == "all":
        assert ours.map_50 == pytest.approx(want[1], abs=1e-6)
        assert ours.map_75 == pytest.approx(want[2], abs=1e-6)
    assert ours.recall == pytest.approx(want[3], abs=1e-6)
    assert 0 < ours.map < 1  # neither trivial: the cases exercise matching (0.01-0.4 for seeds 0-15)


def test_mask_iou_against_pixel_counts():
    from deepzoo.metrics.detection import mask_iou

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 9, 7, generator=g) > 0.5, torch.rand(4, 9, 7, generator=g) > 0.6
    b[3] = False
    got = mask_iou(a, b)
    for i in range(3):
        for j in range(4):
            inter, union = (a[i] & b[j]).sum().item(), (a[i] | b[j]).sum().item()
            assert got[i, j].item() == pytest.approx(inter / union)
    assert (
        mask_iou(torch.zeros(1, 2, 2, dtype=torch.bool), torch.zeros(1, 2, 2, dtype=torch.bool)).item() == 0
    )
    with pytest.raises(ValueError, match="segm needs"):
        detection = {"masks": a, "scores": torch.ones(3), "labels": torch.zeros(3, dtype=torch.long)}
        target = {"masks": b[:, :5], "labels": torch.zeros(4, dtype=torch.long)}
        average_precision([detection], [target], 1, iou_type="segm")
