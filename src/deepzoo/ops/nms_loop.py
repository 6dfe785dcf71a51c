"""Greedy NMS as one compiled loop (numba), the CPU kernel behind `ops.boxes.nms`.

torchvision's CPU NMS is this loop in C++: visit boxes in score order; a box not yet suppressed
is kept and suppresses every later box of its group with IoU > t. Its cost is O(N x kept) scalar
IoUs, against the blocked tensor formulation's O(N x block) vector ones plus a few hundred tensor
calls, which dominate below ~5,000 boxes. numba is optional (`pip install 'deepzoo[detection]'`,
and librosa brings it): without it, `available()` is False and NMS runs the tensor formulation.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np


@functools.cache
def available() -> bool:
    """Whether numba imports (it is compiled on first use, then cached on disk)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _kernel() -> Any:
    import numba

    def greedy(boxes, area, groups, threshold):  # pragma: no cover (compiled; 0 / 0 is NaN)
        n = boxes.shape[0]
        suppressed = np.zeros(n, np.bool_)
        keep = np.empty(n, np.int64)
        k = 0
        for i in range(n):
            if suppressed[i]:
                continue
            keep[k] = i
            k += 1
            x1, y1, x2, y2 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
            for j in range(i + 1, n):
                if groups[j] != groups[i]:
                    break
                if suppressed[j]:
                    continue
                w = min(x2, boxes[j, 2]) - max(x1, boxes[j, 0])
                h = min(y2, boxes[j, 3]) - max(y1, boxes[j, 1])
                if w < 0:
                    w = w - w  # 0 in the boxes' dtype (a literal 0 would promote float32)
                if h < 0:
                    h = h - h
                inter = w * h
                if inter / (area[i] + area[j] - inter) > threshold:
                    suppressed[j] = True
        return keep[:k]

    try:  # cached on disk where numba finds a writable cache folder; else compiled per process
        return numba.njit(cache=True, nogil=True, error_model="numpy")(greedy)
    except RuntimeError:
        return numba.njit(nogil=True, error_model="numpy")(greedy)


def greedy_nms(boxes: np.ndarray, groups: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Positions kept by greedy NMS of `boxes` (N, 4) float32/float64, given in visiting order,
    within runs of equal `groups` (N,) int64, non-decreasing. IoU is computed in the boxes' dtype
    and compared with `iou_threshold` cast to it, as the tensor path's `inter / union > t` does
    (`ops.boxes.nms` passes a threshold the dtype holds exactly: `_threshold_below`)."""
    boxes = np.ascontiguousarray(boxes)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    threshold = boxes.dtype.type(iou_threshold)
    return _kernel()(boxes, area, np.ascontiguousarray(groups, dtype=np.int64), threshold)
