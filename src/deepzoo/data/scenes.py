"""MNIST scenes: canvases with a few MNIST digits at random scales and positions, with boxes,
labels, instance maps and semantic maps, for detection and segmentation. Deterministic per seed.

A scene of `size` x `size` pixels holds 1..max_digits digits of one MNIST split. Each digit is
its 28 x 28 image resized (bilinear, antialiased) to s x s, s uniform in [min_scale, max_scale],
placed at a uniform position inside the canvas; its ink is the pixels above `ink` (the fainter
anti-aliasing fringe is dropped, so nothing outside the ink is drawn). A placement whose box has
IoU > `max_iou` with an earlier one is redrawn (up to 20 times, then the digit is left out), so
digits may overlap but rarely hide each other. The canvas is the pixelwise maximum of the digits.

Per scene:
    x         (1, S, S) float32 in [0, 1]
    boxes     (M, 4) float32 (x1, y1, x2, y2), the tight box of each digit's ink in pixel-edge
              coordinates (ops/boxes.py: ink columns j0..j1 give x1 = j0, x2 = j1 + 1)
    labels    (M,) int64 digit classes; padding: label -1 and box 0 (M = max_digits, digits first)
    instances (S, S) uint8: 0 background, i + 1 where digit i is the brightest ink
    semantic  (S, S) uint8: 0 background, 1 + class of that digit (11 classes)
(the maps are uint8 to keep 10k scenes small, 41 MB each; `.long()` them for a loss).
The padded layout keeps scenes in one TensorData, batched like any other; a detector reads the
first `labels >= 0` entries of each row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from deepzoo.config import Probability
from deepzoo.data.tensors import TensorData
from deepzoo.ops.boxes import box_iou

NUM_CLASSES = 10
"""Digit classes; the semantic maps have NUM_CLASSES + 1 (background 0)."""


@dataclass(frozen=True)
class SceneConfig:
    size: int = 64
    """Canvas side in pixels."""
    min_digits: int = 1
    max_digits: int = 5
    """Digits drawn per scene, uniform in [min_digits, max_digits] (fewer if placements fail)."""
    min_scale: int = 16
    max_scale: int = 32
    """Side of a resized 28 x 28 MNIST image, uniform in [min_scale, max_scale]."""
    max_iou: Probability = 0.3
    """Largest IoU of a new digit's box with an earlier one."""
    ink: float = 0.3
    """Intensity above which a resized pixel is the digit's (its mask); fainter ones are dropped."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_digits <= self.max_digits:
            raise ValueError(f"need 1 <= min_digits <= max_digits, got {self.min_digits}, {self.max_digits}")
        if not 4 <= self.min_scale <= self.max_scale <= self.size:
            raise ValueError(
                "need 4 <= min_scale <= max_scale <= size, "
                f"got {self.min_scale}, {self.max_scale}, {self.size}"
            )
        if not 0 < self.ink < 1:
            raise ValueError(f"ink must be in (0, 1), got {self.ink}")


@dataclass
class Scene:
    """One scene with each digit's full mask (`masks` (n, S, S) bool, overlaps included)."""

    x: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    instances: torch.Tensor
    semantic: torch.Tensor


def _resized(image: torch.Tensor, side: int, ink: float) -> torch.Tensor:
    """A (28, 28) uint8 digit -> (side, side) float intensities, zero below `ink`."""
    x = F.interpolate(image[None, None].float() / 255, size=(side, side), mode="bilinear", antialias=True)
    x = x[0, 0].clamp(0, 1)  # the antialiasing filter overshoots 1 by a hair
    return torch.where(x > ink, x, 0.0)


def _tight_box(mask: torch.Tensor) -> torch.Tensor:
    rows, cols = torch.nonzero(mask.any(1)).squeeze(1), torch.nonzero(mask.any(0)).squeeze(1)
    return torch.tensor([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=torch.float32)


def render_scene(
    images: torch.Tensor, labels: torch.Tensor, config: SceneConfig, generator: torch.Generator
) -> Scene:
    """One scene drawn from the digits `images` (N, 28, 28) uint8 with `labels` (N,), the
    generator choosing the digits, their scales and positions."""
    S = config.size
    n = int(torch.randint(config.min_digits, config.max_digits + 1, (1,), generator=generator))
    layers, boxes, classes = [], [], []
    for _ in range(n):
        index = int(torch.randint(0, len(images), (1,), generator=generator))
        for _ in range(20):
            side = int(torch.randint(config.min_scale, config.max_scale + 1, (1,), generator=generator))
            top, left = (int(v) for v in torch.randint(0, S - side + 1, (2,), generator=generator))
            digit = _resized(images[index], side, config.ink)
            if not (digit > 0).any():
                break  # an empty digit at this scale (never seen in MNIST): leave it out
            layer = torch.zeros(S, S)
            layer[top : top + side, left : left + side] = digit
            box = _tight_box(layer > 0)
            if not boxes or box_iou(box[None], torch.stack(boxes)).max() <= config.max_iou:
                layers.append(layer)
                boxes.append(box)
                classes.append(int(labels[index]))
                break
    stack = torch.stack(layers)  # (n, S, S)
    x, brightest = stack.max(0)
    inked = x > 0
    instances = torch.where(inked, brightest + 1, 0)
    semantic = torch.where(inked, torch.tensor(classes)[brightest] + 1, 0)
    return Scene(x[None], torch.stack(boxes), torch.tensor(classes), stack > 0, instances, semantic)


def make_scenes(
    images: torch.Tensor, labels: torch.Tensor, n: int, seed: int = 0, config: SceneConfig = SceneConfig()
) -> TensorData:
    """`n` scenes from the digits `images` (N, 28, 28) uint8, deterministic per seed, as TensorData
    {"x", "boxes", "labels", "instances", "semantic"} (padded layout: see the module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    S, M = config.size, config.max_digits
    x = torch.zeros(n, 1, S, S)
    boxes, classes = torch.zeros(n, M, 4), torch.full((n, M), -1)
    instances, semantic = torch.zeros(n, S, S, dtype=torch.uint8), torch.zeros(n, S, S, dtype=torch.uint8)
    for i in range(n):
        scene = render_scene(images, labels, config, generator)
        k = len(scene.labels)
        x[i], boxes[i, :k], classes[i, :k] = scene.x, scene.boxes, scene.labels
        instances[i], semantic[i] = scene.instances, scene.semantic
    return TensorData(
        {"x": x, "boxes": boxes, "labels": classes, "instances": instances, "semantic": semantic}
    )


def mnist_scenes(
    split: str = "train", n: int = 10_000, seed: int = 0, config: SceneConfig = SceneConfig(), device="cpu"
) -> TensorData:
    """`n` scenes of MNIST `split` digits (train scenes use only train digits, test only test)."""
    from deepzoo.data.mnist import read_mnist

    images, labels = read_mnist(split)
    return make_scenes(images, labels, n, seed, config).to(device)


def targets_of(batch: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """The padded boxes and labels of a batch as one {"boxes" (G, 4), "labels" (G,)} per scene."""
    keep = batch["labels"] >= 0
    return [{"boxes": b[k], "labels": lab[k]} for b, lab, k in zip(batch["boxes"], batch["labels"], keep)]


def reading_order_labels(batch: dict[str, torch.Tensor], none: int = NUM_CLASSES) -> torch.Tensor:
    """Each scene's digit labels from left to right (by the boxes' x1, ties by y1), padded with
    `none`: (N, max_digits) int64, e.g. [3, 7, 10, 10, 10] for a 3 left of a 7."""
    labels, boxes = batch["labels"], batch["boxes"]
    present = labels >= 0
    key = torch.where(present, boxes[..., 0] * 1e4 + boxes[..., 1], torch.inf)  # absent ones last
    order = key.argsort(dim=1, stable=True)
    return torch.where(present, labels, none).gather(1, order)
