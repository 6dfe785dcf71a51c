"""Recipes of 3D shapes: `pointnet-ae-digits`, a PointNet autoencoder of MNIST digits extruded
into 3D point clouds (data/point_clouds.py), trained with the Chamfer distance and evaluated by
Chamfer, F-score and voxel IoU (metrics/shape.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from deepzoo.config import Count, Positive, Seed
from deepzoo.data.point_clouds import CloudConfig, digit_clouds, mnist_clouds
from deepzoo.data.tensors import TensorData
from deepzoo.models.pointnet import PointAEConfig, PointNetAutoencoder
from deepzoo.recipes.common import adamw_linear, write_predictions
from deepzoo.recipes.registry import Recipe, register
from deepzoo.train.config import TrainConfig


@dataclass(frozen=True)
class CloudsData:
    train: Count = 10_000
    """Clouds of the first MNIST train digits."""
    test: Count = 1_000
    """Clouds of the first MNIST test digits."""
    seed: Seed = 0
    """Sampling seed of the training clouds; the test clouds use seed + 1."""
    cloud: CloudConfig = CloudConfig()


@dataclass(frozen=True)
class ShapeEval:
    tau: Positive = 1 / 14
    """F-score threshold: one MNIST pixel."""
    resolution: Count = 16
    """Voxel grid side over [-1, 1]^3 for the voxel IoU."""


@dataclass(frozen=True)
class PointAERun:
    model: PointAEConfig = PointAEConfig()
    data: CloudsData = CloudsData()
    eval: ShapeEval = ShapeEval()
    train: TrainConfig = TrainConfig()


def clouds_splits(config: PointAERun, device: torch.device) -> tuple[TensorData, TensorData]:
    d = config.data
    return (
        mnist_clouds("train", d.train, d.seed, d.cloud, device),
        mnist_clouds("test", d.test, d.seed + 1, d.cloud, device),
    )


def splat(points: torch.Tensor, size: int = 56) -> torch.Tensor:
    """Clouds (N, P, 3) -> (N, 3, size, size) images of their x-y projection: a pixel is white
    where a point falls (y up)."""
    col = ((points[..., 0] + 1) / 2 * size).floor().long().clamp(0, size - 1)
    row = ((1 - points[..., 1]) / 2 * size).floor().long().clamp(0, size - 1)
    image = torch.zeros(len(points), size * size, device=points.device)
    image.scatter_(1, row * size + col, 1.0)
    return image.view(-1, 1, size, size).expand(-1, 3, -1, -1).cpu()


def draw_reconstructions(model: PointNetAutoencoder, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(N, 2, 3, 56, 56): each cloud and its reconstruction, seen from the front (x-y)."""
    return torch.stack([splat(batch["points"]), splat(model.reconstruct(batch["points"]))], 1)


def _shape_scores(pred: torch.Tensor, true: torch.Tensor, config: ShapeEval) -> dict[str, float]:
    from deepzoo.metrics.shape import cloud_scores, voxel_iou, voxelize

    scores = cloud_scores(pred, true, config.tau)
    iou = voxel_iou(voxelize(pred, config.resolution), voxelize(true, config.resolution))
    return {
        "chamfer": scores["chamfer"].mean().item(),
        "f1": scores["f1"].mean().item(),
        "voxel_iou": iou.mean().item(),
    }


def _evaluate(
    model: PointNetAutoencoder, data: TensorData, run_dir: Path, config: PointAERun
) -> dict[str, float]:
    """Chamfer distance, F-score at tau and voxel IoU of the reconstructions of the test clouds,
    averaged over clouds; and the same scores of a fresh sample of the same digits (seed + 2), the
    floor that sampling alone sets (a perfect model of the shape scores about that).
    run_dir/samples/reconstructions.png shows 16 clouds and their reconstructions."""
    from deepzoo.data.mnist import read_mnist

    true = data.tensors["points"]
    pred = torch.cat([model.reconstruct(batch["points"]) for batch in data.batches(500)])
    scores = _shape_scores(pred.float(), true.float(), config.eval)
    images, _ = read_mnist("test")
    generator = torch.Generator().manual_seed(config.data.seed + 2)
    resampled = digit_clouds(images[: len(true)], config.data.cloud, generator).to(true.device)
    floor = _shape_scores(resampled, true.float(), config.eval)
    write_predictions(
        draw_reconstructions(model, data[slice(0, 16)]), run_dir / "samples" / "reconstructions.png"
    )
    return scores | {f"resample_{k}": v for k, v in floor.items()}


register(
    Recipe(
        name="pointnet-ae-digits",
        summary="PointNet autoencoder (Chamfer loss) of MNIST digits extruded into 3D point clouds",
        default=PointAERun(train=adamw_linear(2000, 64, 1e-3, 100, 500, max_seconds=600.0)),
        build=lambda c: PointNetAutoencoder(c.model),
        data=clouds_splits,
        evaluate=_evaluate,
        metric="chamfer",
        reference="Achlioptas et al. 2018 (ShapeNet); here: compare with resample_* (the sampling floor)",
        samples="predictions",
        draw=draw_reconstructions,
    )
)
