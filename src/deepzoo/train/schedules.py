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

Warm restarts (Loshchilov & Hutter, 2017, SGDR; the snapshot ensembles of Huang et al., 2017): with
C cycles the cosine or linear decay runs C times over equal parts of the span after warm-up,
p = frac(C (t - W) / (T - W)), restarting at the full rate; cycle k (1..C) ends after step
W + ceil(k (T - W) / C) (`cycle_ends`). With C = 1 this is the plain decay; for an integer cycle
length it is torch's CosineAnnealingWarmRestarts(T_0 = (T - W) / C, T_mult = 1).
"""

from __future__ import annotations

import math
from typing import Literal

ScheduleName = Literal["constant", "cosine", "linear", "inverse-sqrt", "step"]
SCHEDULES = ("constant", "cosine", "linear", "inverse-sqrt", "step")
CYCLIC = ("cosine", "linear")  # the decays that restart (lr_cycles > 1)


def lr_factor(
    step: int,
    total_steps: int,
    schedule: ScheduleName = "cosine",
    warmup_steps: int = 0,
    min_ratio: float = 0.0,
    milestones: tuple[float, ...] = (0.5, 0.75),
    gamma: float = 0.1,
    cycles: int = 1,
) -> float:
    """The multiplier f(step) of the base learning rate (see the module docstring)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if cycles != 1 and schedule not in CYCLIC:
        raise ValueError(
            f"warm restarts (cycles {cycles}) need a cosine or linear schedule, not {schedule!r}"
        )
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "inverse-sqrt":
        return math.sqrt(max(warmup_steps, 1) / (step + 1))
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if cycles > 1 and progress < 1.0:
        progress = math.modf(cycles * progress)[0]
    if schedule == "step":
        return gamma ** sum(progress >= m for m in milestones)
    if schedule == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return min_ratio + (1 - min_ratio) * (1 - progress)


def cycle_ends(total_steps: int, warmup_steps: int, cycles: int) -> list[int]:
    """The number of steps done when each warm-restart cycle ends: W + ceil(k (T - W) / C), k = 1..C
    (the last is T; cycles of no steps, when C > T - W, are not repeated)."""
    span = max(0, total_steps - warmup_steps)  # a warm-up as long as the run leaves no cycle but the end
    return sorted({min(total_steps, warmup_steps + -(-k * span // cycles)) for k in range(1, cycles + 1)})
