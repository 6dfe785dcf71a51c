"""Benchmarks of the detection and segmentation family (issue #15): detection of the MNIST test
scenes by `faster-rcnn-scenes`, instance segmentation by `mask-rcnn-scenes` and semantic
segmentation by `unet-scenes` and `fcn-scenes`, each in its 10-minute budget; NMS speed against
torchvision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from deepzoo.bench.registry import register
from deepzoo.bench.timing import interleaved_speedup, train_recipe_report

GOAL = 0.85
"""mIoU (11 classes) of the better of the two segmentation networks, in 10 CPU minutes."""
DETECTION_GOAL = 0.90
"""AP@0.5 of faster-rcnn-scenes in 10 CPU minutes."""
MASK_GAP = 0.05
"""mask-rcnn-scenes in 10 CPU minutes: its mask AP@0.5 within this of its own box AP@0.5 (a mask
matches at IoU 0.5 of the digit's pixels, harder for a thin stroke than a box is)."""


def bench_segmentation(quick: bool, results: Path) -> dict[str, Any]:
    """unet-scenes and fcn-scenes with their defaults (3,500 steps or 10 minutes): mIoU, pixel
    accuracy and the worst digit's IoU on 2,000 test scenes; pictures of 8 test scenes."""
    keys = ("miou", "pixel_accuracy", "mean_accuracy", "background_iou", "worst_digit_iou")
    runs = {
        name: train_recipe_report(name, quick, results, "segmentation.png", keys)
        for name in ("unet-scenes", "fcn-scenes")
    }
    best = max(r["final"]["miou"] for r in runs.values())
    return {"runs": runs, "best_miou": best, "goal": GOAL}


def _segmentation_rows(r: dict[str, Any]) -> list[str]:
    rows = []
    for name, run in r["runs"].items():
        f = run["final"]
        rows.append(
            f"| `{name}` mIoU on 2,000 test scenes (11 classes; {run['steps']} steps, "
            f"{run['train_seconds']:.0f} s; pixel accuracy {f['pixel_accuracy']:.2%}, worst digit IoU "
            f"{f['worst_digit_iou']:.3f}) | {f['miou']:.3f} | >= {r['goal']} (the better of the two) |"
        )
    return rows


register(
    "segmentation",
    "unet-scenes and fcn-scenes: test mIoU after their 10-minute budgets (~22 min)",
    bench_segmentation,
    _segmentation_rows,
    lambda r: max(run["final"]["miou"] for run in r["runs"].values()) >= GOAL,
)


def bench_detection(quick: bool, results: Path) -> dict[str, Any]:
    """faster-rcnn-scenes with its defaults (1,600 steps or 10 minutes): AP@0.5, mAP@[.5:.95],
    AP@0.75, recall and the worst class's AP on 2,000 test scenes; a picture of 8 test scenes."""
    keys = ("map_50", "map", "map_75", "recall", "worst_class_ap", "detections_per_image")
    run = train_recipe_report("faster-rcnn-scenes", quick, results, "detections.png", keys)
    return {"run": run, "goal": DETECTION_GOAL}


def _detection_rows(r: dict[str, Any]) -> list[str]:
    run, f = r["run"], r["run"]["final"]
    return [
        f"| `faster-rcnn-scenes` AP@0.5 on 2,000 test scenes ({run['steps']} steps, "
        f"{run['train_seconds']:.0f} s; "
        f"mAP@[.5:.95] {f['map']:.3f}, AP@0.75 {f['map_75']:.3f}, worst class AP {f['worst_class_ap']:.3f}) "
        f"| {f['map_50']:.3f} | >= {r['goal']} |"
    ]


register(
    "detection",
    "faster-rcnn-scenes: test AP@0.5 and mAP@[.5:.95] after its 10-minute budget (~11 min)",
    bench_detection,
    _detection_rows,
    lambda r: r["run"]["final"]["map_50"] >= DETECTION_GOAL,
)


def bench_mask_rcnn(quick: bool, results: Path) -> dict[str, Any]:
    """mask-rcnn-scenes with its defaults (1,600 steps or 10 minutes): mask and box AP on 2,000
    test scenes; a picture of 8 test scenes (truth, boxes, masks)."""
    keys = ("mask_map_50", "mask_map", "mask_map_75", "map_50", "map", "detections_per_image")
    run = train_recipe_report("mask-rcnn-scenes", quick, results, "detections.png", keys)
    return {"run": run, "gap": MASK_GAP}


def _mask_met(r: dict[str, Any]) -> bool:
    final = r["run"]["final"]
    return final["mask_map_50"] >= final["map_50"] - MASK_GAP


def _mask_rows(r: dict[str, Any]) -> list[str]:
    run, f = r["run"], r["run"]["final"]
    return [
        f"| `mask-rcnn-scenes` mask AP@0.5 on 2,000 test scenes ({run['steps']} steps, "
        f"{run['train_seconds']:.0f} s; mask mAP@[.5:.95] {f['mask_map']:.3f}, box AP@0.5 {f['map_50']:.3f}) "
        f"| {f['mask_map_50']:.3f} | >= box AP@0.5 - {r['gap']}: {'met' if r['met'] else 'not met'} |"
    ]


register(
    "mask-rcnn",
    "mask-rcnn-scenes: test mask AP@0.5 and box AP after its 10-minute budget (~12 min)",
    bench_mask_rcnn,
    _mask_rows,
    _mask_met,
)


def clustered_boxes(
    n: int, generator: torch.Generator, size: float = 512.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """n detector-like boxes in a size x size image: n / 20 objects (sides 16-128 px), each seen by
    20 boxes whose corners are jittered by up to 20% of its side (so every box keeps at least 60%
    of the side); scores uniform. -> boxes (n, 4), scores (n,)."""
    objects = max(1, n // 20)
    side = 16 + torch.rand(objects, 2, generator=generator) * 112
    corner = torch.rand(objects, 2, generator=generator) * (size - side)
    which = torch.randint(0, objects, (n,), generator=generator)
    jitter = (torch.rand(n, 4, generator=generator) - 0.5) * 0.4 * side[which].repeat(1, 2)
    boxes = torch.cat([corner[which], corner[which] + side[which]], 1) + jitter
    return boxes, torch.rand(n, generator=generator)


def _nms_at(n: int, generator: torch.Generator, torchvision: Any) -> dict[str, Any]:
    from deepzoo.ops.boxes import batched_nms, nms

    boxes, scores = clustered_boxes(n, generator)
    classes = torch.randint(0, 20, (n,), generator=generator)

    def per_class_loop() -> torch.Tensor:
        kept = [torch.nonzero(classes == c).squeeze(1) for c in torch.unique(classes)]
        kept = torch.cat([i[nms(boxes[i], scores[i], 0.5)] for i in kept]).sort().values
        return kept[torch.sort(scores[kept], descending=True, stable=True).indices]  # ties: index order

    def ours_batched() -> torch.Tensor:
        return batched_nms(boxes, scores, classes, 0.5)

    row: dict[str, Any] = {"kept": len(nms(boxes, scores, 0.5))}
    assert torch.equal(ours_batched(), per_class_loop())
    ours, loop, speedup = interleaved_speedup(ours_batched, per_class_loop, repeats=5, rounds=3)
    row |= {"batched_seconds": ours, "per_class_loop_seconds": loop, "batched_speedup_vs_loop": speedup}
    if torchvision is None:
        return row
    tv = torchvision.ops
    assert torch.equal(nms(boxes, scores, 0.5), tv.nms(boxes, scores, 0.5))
    ours, theirs, speedup = interleaved_speedup(
        lambda: nms(boxes, scores, 0.5), lambda: tv.nms(boxes, scores, 0.5), repeats=5, rounds=3
    )
    row |= {"nms_seconds": ours, "torchvision_nms_seconds": theirs, "ratio_to_torchvision": 1 / speedup}
    blocked, _, speedup = interleaved_speedup(
        lambda: nms(boxes, scores, 0.5, kernel="blocked"),
        lambda: tv.nms(boxes, scores, 0.5),
        repeats=5,
        rounds=1,
    )
    row |= {"blocked_seconds": blocked, "blocked_ratio_to_torchvision": 1 / speedup}
    _, theirs, _ = interleaved_speedup(
        ours_batched, lambda: tv.batched_nms(boxes, scores, classes, 0.5), repeats=5, rounds=1
    )
    return row | {"torchvision_batched_seconds": theirs}


def bench_nms_speed(quick: bool, results: Path) -> dict[str, Any]:
    """ops.boxes.nms (its default kernel: the compiled loop where numba is installed) against
    torchvision.ops.nms (C++) at 1k / 5k / 20k clustered boxes, IoU 0.5, same inputs, kept indices
    checked equal, and the tensor ("blocked") kernel's time beside them; and batched_nms over 20
    classes against a Python loop of nms per class (and torchvision's batched_nms). Medians of 5
    calls, 3 interleaved rounds."""
    try:
        import torchvision
    except ImportError:
        torchvision = None
    generator = torch.Generator().manual_seed(0)
    sizes = (1000, 5000) if quick else (1000, 5000, 20000)
    return {
        "torchvision": getattr(torchvision, "__version__", None),
        "sizes": {str(n): _nms_at(n, generator, torchvision) for n in sizes},
    }


def _nms_rows(r: dict[str, Any]) -> list[str]:
    out = []
    for n, row in r["sizes"].items():
        if "ratio_to_torchvision" in row:
            out.append(
                f"| `nms` time / torchvision.ops.nms (C++), {n} boxes, {row['kept']} kept, same output "
                f"({row['nms_seconds'] * 1e3:.1f} ms vs {row['torchvision_nms_seconds'] * 1e3:.1f} ms) "
                f"| {row['ratio_to_torchvision']:.2f}x | <= 1.5x |"
            )
        if "blocked_ratio_to_torchvision" in row:
            out.append(
                f'| the same, tensor kernel (`kernel="blocked"`, any device; '
                f"{row['blocked_seconds'] * 1e3:.1f} ms) "
                f"| {row['blocked_ratio_to_torchvision']:.2f}x | |"
            )
        out.append(
            f"| `batched_nms` speed-up over a per-class loop of `nms`, {n} boxes, 20 classes "
            f"({row['batched_seconds'] * 1e3:.1f} ms vs {row['per_class_loop_seconds'] * 1e3:.1f} ms) "
            f"| {row['batched_speedup_vs_loop']:.2f}x | > 1x |"
        )
    return out


register(
    "nms-speed",
    "NMS (compiled loop, tensor kernel) at 1k / 5k / 20k boxes against torchvision's C++ "
    "(where installed), batched vs a loop (~1 min)",
    bench_nms_speed,
    _nms_rows,
)


def bench_pointnet(quick: bool, results: Path) -> dict[str, Any]:
    """pointnet-ae-digits with its defaults: Chamfer, F-score@1px and voxel IoU of the test
    reconstructions, beside the same scores of a fresh sample of the test digits (the floor)."""
    keys = ("chamfer", "f1", "voxel_iou", "resample_chamfer", "resample_f1", "resample_voxel_iou")
    return {"run": train_recipe_report("pointnet-ae-digits", quick, results, "reconstructions.png", keys)}


def _pointnet_rows(r: dict[str, Any]) -> list[str]:
    run, f = r["run"], r["run"]["final"]
    where = f"1,000 test digits, {run['steps']} steps, {run['train_seconds']:.0f} s"
    return [
        f"| `pointnet-ae-digits` Chamfer distance ({where}) | {f['chamfer']:.4f} | "
        f"resampling floor {f['resample_chamfer']:.4f} |",
        f"| `pointnet-ae-digits` F-score at 1 px / voxel IoU at 16^3 "
        f"| {f['f1']:.3f} / {f['voxel_iou']:.3f} | "
        f"resampling floor {f['resample_f1']:.3f} / {f['resample_voxel_iou']:.3f} |",
    ]


register(
    "pointnet",
    "pointnet-ae-digits: Chamfer, F-score and voxel IoU of test reconstructions vs the resampling floor",
    bench_pointnet,
    _pointnet_rows,
)
