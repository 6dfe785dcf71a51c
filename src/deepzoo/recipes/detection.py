"""Recipes of the detection and segmentation family on MNIST scenes (data/scenes.py): a two-stage
detector (`faster-rcnn-scenes`), instance segmentation (`mask-rcnn-scenes`), and semantic
segmentation with a U-Net (`unet-scenes`) and an FCN with max-unpooling (`fcn-scenes`). Each
evaluation writes pictures of 8 test scenes to run_dir/samples; `deepzoo sample RUN --n N` draws N
random test scenes the same way."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from deepzoo.config import Count, Seed
from deepzoo.data.scenes import NUM_CLASSES, SceneConfig, mnist_scenes, targets_of
from deepzoo.data.tensors import TensorData
from deepzoo.models.detection import DetectorConfig, FasterRCNN
from deepzoo.models.segmentation import SegmentationConfig, SegmentationNet
from deepzoo.recipes.common import adamw_linear, write_predictions
from deepzoo.recipes.registry import Recipe, register
from deepzoo.train.config import TrainConfig


@dataclass(frozen=True)
class ScenesData:
    train: Count = 10_000
    """Training scenes (of MNIST train digits)."""
    test: Count = 2_000
    """Evaluation scenes (of MNIST test digits)."""
    seed: Seed = 0
    """Scene seed of the training set; the test set uses seed + 1."""
    scene: SceneConfig = SceneConfig()


@dataclass(frozen=True)
class SegmentationRun:
    model: SegmentationConfig = SegmentationConfig()
    data: ScenesData = ScenesData()
    train: TrainConfig = TrainConfig()


@dataclass(frozen=True)
class DetectionRun:
    model: DetectorConfig = DetectorConfig()
    data: ScenesData = ScenesData()
    train: TrainConfig = TrainConfig()


def scenes_splits(
    config: SegmentationRun | DetectionRun, device: torch.device
) -> tuple[TensorData, TensorData]:
    d = config.data
    return (
        mnist_scenes("train", d.train, d.seed, d.scene, device),
        mnist_scenes("test", d.test, d.seed + 1, d.scene, device),
    )


def palette(num_classes: int = NUM_CLASSES + 1) -> torch.Tensor:
    """(K, 3) colours in [0, 1]: black background, matplotlib's tab10 for the digits 0-9."""
    from deepzoo.viz import class_colours

    return class_colours(num_classes)


def colour_maps(maps: torch.Tensor) -> torch.Tensor:
    """(N, H, W) class maps -> (N, 3, H, W) RGB images; a value past the palette (the loss's
    ignore_index, 255) is white."""
    colours = torch.cat([palette(), torch.ones(1, 3)])
    return colours[maps.long().cpu().clamp(max=len(colours) - 1)].permute(0, 3, 1, 2)


def draw_segmentation(model: SegmentationNet, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(N, 3, 3, H, W): each scene, its true class map, the predicted one (colours: `palette`)."""
    return torch.stack(
        [
            batch["x"].cpu().expand(-1, 3, -1, -1),
            colour_maps(batch["semantic"]),
            colour_maps(model.predict(batch["x"])),
        ],
        1,
    )


def _evaluate_segmentation(
    model: SegmentationNet, data: TensorData, run_dir: Path, config: SegmentationRun
) -> dict[str, float]:
    """mIoU (11 classes, background included), pixel and mean class accuracy over the test
    scenes; run_dir/samples/segmentation.png shows 8 scenes: image, truth, prediction."""
    from deepzoo.metrics.segmentation import confusion_matrix, segmentation_scores

    K = model.config.num_classes
    confusion = torch.zeros(K, K, dtype=torch.int64)
    for batch in data.batches(256):
        pred = model.predict(batch["x"])
        confusion += confusion_matrix(pred.cpu(), batch["semantic"].cpu(), K, model.config.ignore_index)
    scores = segmentation_scores(confusion)
    write_predictions(draw_segmentation(model, data[slice(0, 8)]), run_dir / "samples" / "segmentation.png")
    digits = [iou for iou in scores["iou"][1:] if iou == iou]
    return {
        "miou": scores["miou"],
        "pixel_accuracy": scores["pixel_accuracy"],
        "mean_accuracy": scores["mean_accuracy"],
        "background_iou": scores["iou"][0],
        "worst_digit_iou": min(digits) if digits else float("nan"),
    }


def _segmentation(name: str, summary: str, default: SegmentationRun, reference: str) -> Recipe:
    return register(
        Recipe(
            name=name,
            summary=summary,
            default=default,
            build=lambda c: SegmentationNet(c.model),
            data=scenes_splits,
            evaluate=_evaluate_segmentation,
            metric="miou",
            reference=reference,
            samples="predictions",
            draw=draw_segmentation,
        )
    )


SEGMENTATION_TRAIN = adamw_linear(8000, 32, 3e-3, 50, 1000, max_seconds=600.0)
"""AdamW, lr 3e-3 decayed linearly to 0 over 8,000 steps of 32 scenes (about 10 minutes on a
2-core Xeon with AMX in bf16), stopped at 10 minutes if slower (an fp32 CPU without AMX: about
2,500 steps in that time, with the rate not yet decayed; give it --train.steps 2500)."""

_segmentation(
    "unet-scenes",
    "U-Net (transposed-convolution upsampling, skip concatenation): semantic segmentation of MNIST scenes",
    SegmentationRun(SegmentationConfig(arch="unet"), train=SEGMENTATION_TRAIN),
    "goal: mIoU >= 0.85 (11 classes) in 10 CPU minutes",
)
_segmentation(
    "fcn-scenes",
    "FCN with max-unpooling (SegNet-style pooling switches): semantic segmentation of MNIST scenes",
    SegmentationRun(SegmentationConfig(arch="unpool"), train=SEGMENTATION_TRAIN),
    "goal: mIoU >= 0.85 for the better of FCN / U-Net in 10 CPU minutes",
)


def draw_detections(
    model: FasterRCNN, batch: dict[str, torch.Tensor], min_score: float = 0.5
) -> torch.Tensor:
    """(N, 2, 3, 3H, 3W): each scene with its true boxes, and with the detections scoring at least
    `min_score`, each box in its class's colour (`palette`: digit d in tab10's colour d)."""
    from deepzoo.viz import draw_boxes

    images = batch["x"].cpu().expand(-1, 3, -1, -1)
    colours = palette()[1:]
    truth = targets_of({k: batch[k].cpu() for k in ("boxes", "labels")})
    found = [{k: v[d["scores"] >= min_score].cpu() for k, v in d.items()} for d in model.predict(batch["x"])]
    panels = [
        draw_boxes(images, [t["boxes"] for t in truth], [colours[t["labels"]] for t in truth]),
        draw_boxes(images, [d["boxes"] for d in found], [colours[d["labels"]] for d in found]),
    ]
    if model.config.masks:  # a third panel: the detected masks in their classes' colours
        painted = torch.zeros(len(found), *images.shape[-2:], dtype=torch.long)
        for i, d in enumerate(found):
            for mask, label in zip(d["masks"].flip(0), d["labels"].flip(0)):  # the best on top
                painted[i][mask] = label + 1
        panels.append(colour_maps(painted).repeat_interleave(3, -1).repeat_interleave(3, -2))
    return torch.stack(panels, 1)


def instance_masks(batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Each scene's visible digit masks, in its boxes' order: (G, H, W) bool (instances == g + 1)."""
    present = (batch["labels"] >= 0).sum(1).tolist()
    return [
        instances[None] == torch.arange(1, g + 1, device=instances.device)[:, None, None]
        for instances, g in zip(batch["instances"].long(), present)
    ]


def _evaluate_detection(
    model: FasterRCNN, data: TensorData, run_dir: Path, config: DetectionRun
) -> dict[str, float]:
    """COCO-style AP over the test scenes (metrics/detection.py): mAP@[.5:.95], AP@0.5, AP@0.75,
    mean recall (at most the model's max_detections per image and class, as the AP) and the worst
    AP of a class present in the scenes; with masks also mask AP (mask_map, mask_map_50,
    mask_map_75) against the digits' visible masks.
    run_dir/samples/detections.png shows 8 scenes: true boxes, detections (score >= 0.5), and
    with masks their masks."""
    from deepzoo.metrics.detection import average_precision

    detections, targets = [], []
    for batch in data.batches(256):
        detections += [{k: v.cpu() for k, v in d.items()} for d in model.predict(batch["x"])]
        found = targets_of({k: batch[k].cpu() for k in ("boxes", "labels")})
        if model.config.masks:
            found = [
                t | {"masks": m}
                for t, m in zip(found, instance_masks({k: v.cpu() for k, v in batch.items()}))
            ]
        targets += found
    K, most = model.config.num_classes, model.config.max_detections
    scores = average_precision(detections, targets, K, max_detections=most)
    write_predictions(draw_detections(model, data[slice(0, 8)]), run_dir / "samples" / "detections.png")
    metrics = {
        "map_50": scores.map_50,
        "map": scores.map,
        "map_75": scores.map_75,
        "recall": scores.recall,
        "worst_class_ap": min((ap for ap in scores.ap_per_class if ap == ap), default=float("nan")),
        "detections_per_image": sum(len(d["scores"]) for d in detections) / len(detections),
    }
    if model.config.masks:
        masks = average_precision(detections, targets, K, max_detections=most, iou_type="segm")
        metrics |= {"mask_map_50": masks.map_50, "mask_map": masks.map, "mask_map_75": masks.map_75}
    return metrics


DETECTION_TRAIN = adamw_linear(1600, 16, 2e-3, 100, 400, max_seconds=600.0)
"""AdamW, lr 2e-3 with 100 warm-up steps, decayed linearly to 0 over 1,600 steps of 16 scenes
(about 9 minutes on 2 cores), stopped at 10 minutes if slower."""


def _detector(name: str, summary: str, model: DetectorConfig, metric: str, reference: str) -> Recipe:
    """A detection recipe on MNIST scenes with DETECTION_TRAIN, its detections drawn."""
    return register(
        Recipe(
            name=name,
            summary=summary,
            default=DetectionRun(model=model, train=DETECTION_TRAIN),
            build=lambda c: FasterRCNN(c.model),
            data=scenes_splits,
            evaluate=_evaluate_detection,
            metric=metric,
            reference=reference,
            samples="predictions",
            draw=draw_detections,
        )
    )


_detector(
    "faster-rcnn-scenes",
    "Faster R-CNN in miniature (RPN, anchors, RoI Align, box head): the digits of MNIST scenes",
    DetectorConfig(),
    "map_50",
    "goal: AP@0.5 >= 0.90 on 2,000 test scenes in 10 CPU minutes; mAP@[.5:.95] reported",
)
_detector(
    "mask-rcnn-scenes",
    "Mask R-CNN in miniature: faster-rcnn-scenes plus a mask head, the digits' instance masks",
    DetectorConfig(masks=True),
    "mask_map_50",
    "He et al. (2017); mask AP on the digits' visible masks in 2,000 test scenes; box AP too",
)
