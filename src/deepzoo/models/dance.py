"""Music-to-dance models after Bailando (Li et al., 2022, "Bailando: 3D Dance Generation by
Actor-Critic GPT with Choreographic Memory"). This module: the choreographic memory, a 1-D
convolutional VQ-VAE over pose sequences.

Motion: (B, T, 75) at 60 FPS, AIST++'s SMPL parameters (24 joint axis-angles, then the root
translation; data/skeleton.py), standardized per dimension with the training set's mean and
standard deviation (`fit_normalization`). With `split_body` the upper body (spine and above, 15
joints, 45 values) and the lower body (pelvis orientation, legs, root translation: 30 values) have
their own encoder, codebook and decoder, as in Bailando, so an upper-body move can combine with
any step of the legs; otherwise one VQ-VAE covers all 75 values.

Per part: x (B, T, C) -> conv 3 -> `downsample` x [conv 4 stride 2, ReLU, dilated residual
block] -> conv 3 to D: z (B, D, T / 2^downsample) -> nearest of K codes -> the decoder mirrors it
with nearest-neighbour upsampling -> x_hat (B, T, C). Loss, on standardized values, with
finite differences along time (velocity, acceleration) as Bailando's:

    L = |x_hat - x|_1 + w_v |D x_hat - D x|_1 + w_a |D^2 x_hat - D^2 x|_1 + L_vq

(L_vq: the quantizer's commitment term, and its codebook term without EMA).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from deepzoo.nn.quantize import VectorQuantizer

MOTION_DIM = 75
UPPER_JOINTS = (3, 6, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23)
"""SMPL joints of Bailando's upper half: the spine and everything above it."""
LOWER_JOINTS = (0, 1, 2, 4, 5, 7, 8, 10, 11)
"""The pelvis (the root's orientation) and the legs; the root translation goes with them."""


def body_parts(split: bool) -> list[list[int]]:
    """The motion dimensions of each part: [upper, lower] (45 and 30 values), or [all 75]."""
    if not split:
        return [list(range(MOTION_DIM))]
    upper = [3 * j + k for j in UPPER_JOINTS for k in range(3)]
    lower = [3 * j + k for j in LOWER_JOINTS for k in range(3)] + [72, 73, 74]
    return [upper, lower]


@dataclass(frozen=True)
class MotionVQVAEConfig:
    split_body: bool = True
    """Upper and lower body quantized separately (Bailando), else one codebook for all 75 values."""
    downsample: int = 3
    """Stride-2 convolutions: one code per 2^downsample frames (8: 7.5 codes per second)."""
    hidden: int = 128
    """Channels of the convolutions."""
    num_codes: int = 256
    """K, codes in each part's codebook."""
    code_dim: int = 64
    """D, the dimension of a code."""
    beta: float = 0.25
    """Weight of the commitment term."""
    ema: bool = True
    """EMA codebook updates (else the codebook loss)."""
    dead_threshold: float = 1.0
    """Restart codes whose EMA usage (vectors per batch) falls below this; 0: never."""
    velocity_weight: float = 1.0
    """w_v."""
    acceleration_weight: float = 1.0
    """w_a."""


class ResidualBlock1d(nn.Module):
    """x + conv1x1(relu(conv3 dilated(relu(x)))) for each dilation in turn (Jukebox/Bailando)."""

    def __init__(self, channels: int, dilations: tuple[int, ...] = (1, 3)) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.ReLU(),
                nn.Conv1d(channels, channels, 3, padding=d, dilation=d),
                nn.ReLU(),
                nn.Conv1d(channels, channels, 1),
            )  # fmt: skip
            for d in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + layer(x)
        return x


class PartVQVAE(nn.Module):
    """One body part's encoder, quantizer and decoder over (B, T, C) standardized values."""

    def __init__(self, channels: int, c: MotionVQVAEConfig) -> None:
        super().__init__()
        h = c.hidden
        down: list[nn.Module] = []
        up: list[nn.Module] = []
        for _ in range(c.downsample):
            down += [nn.Conv1d(h, h, 4, 2, 1), nn.ReLU(), ResidualBlock1d(h)]
            up += [ResidualBlock1d(h), nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv1d(h, h, 3, 1, 1)]
        self.encoder = nn.Sequential(
            nn.Conv1d(channels, h, 3, 1, 1), nn.ReLU(), *down, nn.Conv1d(h, c.code_dim, 3, 1, 1)
        )
        self.quantizer = VectorQuantizer(
            c.num_codes, c.code_dim, c.beta, ema=c.ema, dead_threshold=c.dead_threshold
        )
        self.decoder = nn.Sequential(
            nn.Conv1d(c.code_dim, h, 3, 1, 1), *up, nn.ReLU(), nn.Conv1d(h, channels, 3, 1, 1)
        )

    def forward(self, x: torch.Tensor):
        """x (B, T, C) -> (x_hat (B, T, C), the quantizer's `Quantized` with codes (B, T'))."""
        q = self.quantizer(self.encoder(x.transpose(1, 2)).transpose(1, 2))  # channels last (B, T', D)
        return self.decoder(q.z_q.transpose(1, 2)).transpose(1, 2), q

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, T') -> (B, T' 2^downsample, C)."""
        return self.decoder(self.quantizer.lookup(codes).transpose(1, 2)).transpose(1, 2)


def temporal_l1(x_hat: torch.Tensor, x: torch.Tensor, order: int) -> torch.Tensor:
    """mean |D^order x_hat - D^order x| with D the difference along time (dim 1)."""
    for _ in range(order):
        x_hat, x = x_hat.diff(dim=1), x.diff(dim=1)
    return (x_hat - x).abs().mean()


class MotionVQVAE(nn.Module):
    """The choreographic memory. Tokenizer interface: `encode(motion) -> (B, parts, T')`,
    `decode(codes) -> motion`, `num_codes`, `parts`, `frames_per_code`."""

    def __init__(self, config: MotionVQVAEConfig = MotionVQVAEConfig()) -> None:
        super().__init__()
        self.config = config
        self.part_dims = body_parts(config.split_body)
        self.part_vqvaes = nn.ModuleList(PartVQVAE(len(dims), config) for dims in self.part_dims)
        self.register_buffer("mean", torch.zeros(MOTION_DIM))
        self.register_buffer("std", torch.ones(MOTION_DIM))

    @property
    def num_codes(self) -> int:
        return self.config.num_codes

    @property
    def parts(self) -> int:
        return len(self.part_dims)

    @property
    def frames_per_code(self) -> int:
        return 2**self.config.downsample

    @torch.no_grad()
    def fit_normalization(self, motion: torch.Tensor) -> None:
        """Standardize with the per-dimension mean and standard deviation of motion (N, T, 75)
        (a dimension that never moves keeps std 1)."""
        flat = motion.reshape(-1, MOTION_DIM).double()
        std = flat.std(0)
        self.mean.copy_(flat.mean(0))
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def _check(self, motion: torch.Tensor) -> None:
        if motion.ndim != 3 or motion.shape[-1] != MOTION_DIM or motion.shape[1] % self.frames_per_code:
            raise ValueError(
                f"need motion (B, T, {MOTION_DIM}) with T divisible by {self.frames_per_code}, "
                f"got {tuple(motion.shape)}"
            )

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """{"model": encoders and decoders, "codebook": loss-trained codebooks (none with EMA)}."""
        codebook = [p for part in self.part_vqvaes for p in part.quantizer.parameters()]
        rest = [p for name, p in self.named_parameters() if ".quantizer." not in name]
        return {"model": rest, "codebook": codebook} if codebook else {"model": rest}

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """batch["motion"] (B, T, 75) -> {"loss", "position", "velocity", "acceleration", "vq",
        "commit", "perplexity", "usage"} (quantizer terms averaged over the parts)."""
        motion = batch["motion"]
        self._check(motion)
        x = (motion - self.mean) / self.std
        x_hat = torch.empty_like(x, dtype=torch.float32)
        terms: dict[str, torch.Tensor] = {}
        vq_loss = torch.zeros((), device=x.device)
        for dims, part in zip(self.part_dims, self.part_vqvaes):
            recon, q = part(x[..., dims])
            x_hat[..., dims] = recon.float()
            vq_loss = vq_loss + q.loss
            for key, value in q.terms().items():
                terms[key] = terms.get(key, 0.0) + value / self.parts
        c = self.config
        x = x.float()
        position, velocity, acceleration = (temporal_l1(x_hat, x, k) for k in (0, 1, 2))
        loss = position + c.velocity_weight * velocity + c.acceleration_weight * acceleration + vq_loss
        return {
            "loss": loss,
            "position": position,
            "velocity": velocity,
            "acceleration": acceleration,
            **terms,
        }

    @torch.no_grad()
    def encode(self, motion: torch.Tensor) -> torch.Tensor:
        """motion (B, T, 75) -> codes (B, parts, T / frames_per_code)."""
        self._check(motion)
        x = (motion - self.mean) / self.std
        return torch.stack(
            [part(x[..., dims])[1].codes for dims, part in zip(self.part_dims, self.part_vqvaes)], 1
        )

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, parts, T') -> motion (B, T' frames_per_code, 75) in the data's units."""
        if codes.ndim != 3 or codes.shape[1] != self.parts:
            raise ValueError(f"need codes (B, {self.parts}, T'), got {tuple(codes.shape)}")
        b, _, steps = codes.shape
        x = torch.zeros(b, steps * self.frames_per_code, MOTION_DIM, device=codes.device)
        for i, (dims, part) in enumerate(zip(self.part_dims, self.part_vqvaes)):
            x[..., dims] = part.decode(codes[:, i]).float()
        return x * self.std.float() + self.mean.float()

    @torch.no_grad()
    def reconstruct(self, motion: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(motion))
