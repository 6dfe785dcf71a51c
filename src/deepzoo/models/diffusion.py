"""Diffusion and flow models as one wrapper: a network, a noising process, a parameterization, an
objective and a sampler, each chosen independently (the EDM split, see deepzoo/diffusion).

Images x in [0, 1] are modelled as x_0 = 2 x - 1 (sigma_data = 0.5). Class-conditional: labels are
replaced by the null label with probability `label_dropout` in training, so one network gives
both D(x | y) and D(x) for classifier-free guidance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from deepzoo.config import Count, NonNegative, Positive, Probability, Range, ranged
from deepzoo.diffusion.losses import DDPMLoss, EDMLoss, FlowMatchingLoss, ScoreMatchingLoss
from deepzoo.diffusion.preconditioning import Denoiser, Kind, Preconditioning
from deepzoo.diffusion.samplers import SAMPLERS, guided
from deepzoo.diffusion.schedules import (
    FLOW_T_MAX,
    FlowSchedule,
    Spacing,
    VESchedule,
    VPSchedule,
    flow_sigmas,
    karras_sigmas,
)
from deepzoo.nn.precision import compute_dtype
from deepzoo.nn.unet import UNet, UNetConfig
from deepzoo.rng import randn

Process = Literal["vp", "ve", "edm", "flow"]
T_SCALE = {"vp": 1.0, "ve": 1000.0, "edm": 250.0, "flow": 1000.0}
"""c_noise = T_SCALE * native time: DDPM's index already spans 0..999; the others are stretched."""


OpenUnit = ranged(float, Range(0, 1, low_open=True, high_open=True))


@dataclass(frozen=True)
class DiffusionConfig:
    net: UNetConfig = UNetConfig(channels=(16, 32, 64), num_classes=10)
    """The U-Net behind every parameterization."""
    image_size: Count = 28
    """Height and width of the (square) images."""
    process: Process = "edm"
    """Noising process: vp (DDPM), ve (score matching), edm (sigma = t) or flow (straight path)."""
    vp_kind: Literal["linear", "cosine"] = "linear"
    """VP process: DDPM's linear betas or Nichol and Dhariwal's cosine alpha-bar."""
    parameterization: Kind = "edm"
    """What the network predicts: epsilon, x0, v, edm, velocity or score (sigma times the score)."""
    objective: Literal["ddpm", "edm", "flow", "score"] = "edm"
    """Training noise levels and weighting: ddpm (uniform t, eps MSE), edm (log-normal sigma), flow,
    score (log-uniform sigma in [sigma_min, sigma_max], Song et al.'s denoising score matching)."""
    sigma_data: Positive = 0.5
    """Standard deviation of the data, for the EDM/v preconditioning."""
    label_dropout: Probability = 0.1
    """Training probability of the null label (classifier-free guidance)."""
    sampler: str = "heun"
    """Default sampler of `sample`: euler, heun, ddim, ddpm, dpmpp_2m or rectified_flow_euler."""
    steps: Count = 18
    """Default number of sampling steps (heun: 2 steps - 1 network evaluations)."""
    guidance: NonNegative = 1.0
    """Classifier-free guidance scale w (1: conditional, 0: unconditional, > 1: guided)."""
    spacing: Spacing = "trailing"
    """VP timestep spacing of the sampling grid."""
    sigma_min: Positive = 0.002
    """Smallest noise level of the VE/EDM processes, their sampling grids and the score objective."""
    sigma_max: Positive = 80.0
    """EDM / VE sampling grid ends (Karras rho = 7 spacing) and the score objective's largest sigma."""
    flow_t_max: OpenUnit = FLOW_T_MAX
    """Flows start sampling at t = flow_t_max (t = 1 is sigma = inf)."""


class Diffusion(nn.Module):
    def __init__(self, config: DiffusionConfig = DiffusionConfig()) -> None:
        super().__init__()
        self.config = c = config
        if c.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {c.sampler!r}; choose from {sorted(SAMPLERS)}")
        if not c.sigma_min < c.sigma_max:
            raise ValueError(f"sigma_min ({c.sigma_min:g}) must be below sigma_max ({c.sigma_max:g})")
        self.schedule = {
            "vp": lambda: VPSchedule(c.vp_kind),
            "ve": lambda: VESchedule(c.sigma_min, c.sigma_max),
            "edm": lambda: None,
            "flow": FlowSchedule,
        }[c.process]()
        self.net = UNet(c.net)
        self.denoiser = Denoiser(self.net, Preconditioning(c.parameterization, c.sigma_data), self.schedule,
                                 T_SCALE[c.process])  # fmt: skip
        if c.objective == "ddpm":
            if not isinstance(self.schedule, VPSchedule):
                raise ValueError("the ddpm objective needs the vp process")
            self.objective = DDPMLoss(self.schedule)
        elif c.objective == "edm":
            self.objective = EDMLoss(sigma_data=c.sigma_data)
        elif c.objective == "flow":
            self.objective = FlowMatchingLoss(t_max=c.flow_t_max)
        elif c.objective == "score":
            self.objective = ScoreMatchingLoss(c.sigma_min, c.sigma_max)
        else:
            raise ValueError(f"unknown objective {c.objective!r}")

    @property
    def null_label(self) -> int:
        return self.config.net.num_classes

    def _labels(self, y: torch.Tensor | None) -> torch.Tensor | None:
        if y is None or not self.config.net.num_classes:
            return None
        if self.training and self.config.label_dropout > 0:
            drop = torch.rand(len(y), device=y.device) < self.config.label_dropout
            y = torch.where(drop, torch.full_like(y, self.null_label), y)
        return y

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The objective on x_0 = 2 x - 1; with batch["noise"] the (noise, x) pairs are fixed
        couplings (reflow)."""
        x0 = batch["x"] * 2 - 1
        labels = self._labels(batch.get("y"))
        if "noise" in batch:
            if not isinstance(self.objective, FlowMatchingLoss):
                raise ValueError("coupled (noise, x) pairs need the flow objective")
            return self.objective(self.denoiser, x0, labels, eps=batch["noise"])
        return self.objective(self.denoiser, x0, labels)

    def sigmas(self, steps: int) -> torch.Tensor:
        """The sampling grid (steps + 1,), decreasing to 0, of this process."""
        c = self.config
        if isinstance(self.schedule, VPSchedule):
            return self.schedule.sampling_sigmas(steps, c.spacing)
        if isinstance(self.schedule, FlowSchedule):
            return flow_sigmas(steps, t_max=c.flow_t_max)
        return karras_sigmas(steps, c.sigma_min, c.sigma_max)

    def _denoise(self, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.denoiser(x, sigma.to(x.device).expand(len(x)), labels)

    @torch.no_grad()
    def generate(
        self,
        noise: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        generator: torch.Generator | None = None,
        **sampler_options,
    ) -> torch.Tensor:
        """noise (B, C, H, W) ~ N(0, I) -> x_0 in model space (about [-1, 1]), unclamped."""
        c = self.config
        sampler, steps = sampler or c.sampler, steps or c.steps
        guidance = c.guidance if guidance is None else guidance
        if labels is None or not c.net.num_classes:
            denoise = lambda x, sigma: self._denoise(x, sigma, None)  # noqa: E731
        else:
            denoise = guided(self._denoise, labels.to(noise.device), self.null_label, guidance)
        return SAMPLERS[sampler](denoise, noise, self.sigmas(steps), generator, **sampler_options)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        **options,
    ) -> torch.Tensor:
        """n images in [0, 1]; class-conditional models draw digits `labels` (default 0..9 repeating).
        options: sampler, steps, guidance (defaults from the config)."""
        weight = next(self.parameters())  # a float64 model samples in float64, any other in float32
        device, dtype = weight.device, compute_dtype(weight.dtype)
        shape = (n, self.config.net.in_channels, self.config.image_size, self.config.image_size)
        noise = randn(shape, generator, device, dtype)
        if labels is None and self.config.net.num_classes:
            labels = torch.arange(n, device=device) % self.config.net.num_classes
        x0 = self.generate(noise, labels, generator=generator, **options)
        return ((x0.to(dtype) + 1) / 2).clamp(0, 1)
