"""Recipes of the detection and segmentation family on MNIST scenes (data/scenes.py): semantic
segmentation with a U-Net (`unet-scenes`) and an FCN with max-unpooling (`fcn-scenes`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from deepzoo.data.scenes import NUM_CLASSES, SceneConfig, mnist_scenes
from deepzoo.data.tensors import TensorData
from deepzoo.models.segmentation import SegmentationConfig, SegmentationNet
from deepzoo.recipes.common import adamw_linear
from deepzoo.recipes.registry import Recipe, register
from deepzoo.train.config import TrainConfig


@dataclass(frozen=True)
class ScenesData:
    train: int = 10_000
    """Training scenes (of MNIST train digits)."""
    test: int = 2_000
    """Evaluation scenes (of MNIST test digits)."""
    seed: int = 0
    """Scene seed of the training set; the test set uses seed + 1."""
    scene: SceneConfig = SceneConfig()


@dataclass(frozen=True)
class SegmentationRun:
    model: SegmentationConfig = SegmentationConfig()
    data: ScenesData = ScenesData()
    train: TrainConfig = TrainConfig()


def scenes_splits(config: SegmentationRun, device: torch.device) -> tuple[TensorData, TensorData]:
    d = config.data
    return (
        mnist_scenes("train", d.train, d.seed, d.scene, device),
        mnist_scenes("test", d.test, d.seed + 1, d.scene, device),
    )


def palette(num_classes: int = NUM_CLASSES + 1) -> torch.Tensor:
    """(K, 3) colours in [0, 1]: black background, matplotlib's tab10 for the digits 0-9."""
    from matplotlib import colormaps

    colours = [(0.0, 0.0, 0.0)] + [colormaps["tab10"](k)[:3] for k in range(num_classes - 1)]
    return torch.tensor(colours)


def colour_maps(maps: torch.Tensor) -> torch.Tensor:
    """(N, H, W) class maps -> (N, 3, H, W) RGB images."""
    return palette()[maps.long().cpu()].permute(0, 3, 1, 2)


def _evaluate_segmentation(
    model: SegmentationNet, data: TensorData, run_dir: Path, config: SegmentationRun
) -> dict[str, float]:
    """mIoU (11 classes, background included), pixel and mean class accuracy over the test
    scenes; run_dir/samples/segmentation.png shows 8 scenes: image, truth, prediction."""
    from deepzoo.metrics.segmentation import confusion_matrix, segmentation_scores
    from deepzoo.viz import save_image_grid

    K = model.config.num_classes
    confusion = torch.zeros(K, K, dtype=torch.int64)
    for batch in data.batches(256):
        pred = model.predict(batch["x"])
        confusion += confusion_matrix(pred.cpu(), batch["semantic"].cpu(), K, model.config.ignore_index)
    scores = segmentation_scores(confusion)
    first = data[slice(0, 8)]
    rows = [
        first["x"].cpu().expand(-1, 3, -1, -1),
        colour_maps(first["semantic"]),
        colour_maps(model.predict(first["x"])),
    ]
    save_image_grid(torch.stack(rows, 1).flatten(0, 1), run_dir / "samples" / "segmentation.png", nrow=6)
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
        )
    )


SEGMENTATION_TRAIN = adamw_linear(3500, 32, 3e-3, 50, 500, max_seconds=600.0)
"""AdamW, lr 3e-3 decayed linearly to 0 over 3,500 steps of 32 scenes (about 10 minutes on 2
cores), stopped at 10 minutes if slower."""

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
