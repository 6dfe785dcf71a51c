"""Learning-rate schedules as plain functions of the step: a linear warm-up, then a decay.

    warm-up:       f(t) = (t + 1) / W                                for t < W
    constant:      f(t) = 1
    cosine:        f(t) = r + (1 - r) * (1 + cos(pi * p)) / 2,       p = (t - W) / (T - W)
    linear:        f(t) = r + (1 - r) * (1 - p)
    inverse-sqrt:  f(t) = sqrt(max(W, 1) / (t + 1))                  (Vaswani et al., 2017)
    step:          f(t) = gamma ** #{i : p >= m_i}                   (He et al., 2016: /10 at 50%, 75%)

f multiplies the base rate; T is the number of steps and r = min_ratio the floor of the cosine and
linear decays. The step decay at milestones m_i (fractions of the span after warm-up) is torch's
MultiStepLR with milestones W + ceil(m_i (T - W)).
"""

from __future__ import annotations

import math
from typing import Literal

ScheduleName = Literal["constant", "cosine", "linear", "inverse-sqrt", "step"]
SCHEDULES = ("constant", "cosine", "linear", "inverse-sqrt", "step")


def lr_factor(
    step: int,
    total_steps: int,
    schedule: ScheduleName = "cosine",
    warmup_steps: int = 0,
    min_ratio: float = 0.0,
    milestones: tuple[float, ...] = (0.5, 0.75),
    gamma: float = 0.1,
) -> float:
    """The multiplier f(step) of the base learning rate (see the module docstring)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "inverse-sqrt":
        return math.sqrt(max(warmup_steps, 1) / (step + 1))
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "step":
        return gamma ** sum(progress >= m for m in milestones)
    if schedule == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return min_ratio + (1 - min_ratio) * (1 - progress)
