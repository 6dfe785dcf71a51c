"""Rewards of the sequence actor-critic (rl/sequence.py): frozen scorers of a policy's actions.

`DigitReward`: p(target digit) of the image a VQ-VAE decodes from the codes, under the feature
classifier. `BeatAlignReward`: the Beat Align Score of the dance a motion VQ-VAE decodes from the
codes against the music's beats."""

from __future__ import annotations

import torch
from torch import nn

from deepzoo.data.skeleton import forward_kinematics
from deepzoo.metrics.retrieval import dance_beat_align_score
from deepzoo.nn.precision import compute_dtype, upcast


class DigitReward(nn.Module):
    """R(context, codes) = p(target | decoded image) under the feature classifier: codes (B, h w),
    the VQ-VAE's h x w codes in reading order -> (B,). Frozen: no parameter of it is trained."""

    def __init__(self, vqvae: nn.Module, classifier: nn.Module, target: int) -> None:
        super().__init__()
        self.vqvae, self.classifier, self.target = vqvae, classifier, target
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> DigitReward:
        return super().train(False)  # always in eval mode

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, h w) -> the images (B, 1, 28, 28) the reward scores."""
        return self.vqvae.decode(codes.reshape(-1, *self.vqvae.grid))

    @torch.no_grad()
    def forward(self, context: dict[str, torch.Tensor], codes: torch.Tensor) -> torch.Tensor:
        return upcast(self.classifier(self.decode(codes))).softmax(-1)[:, self.target]


class BeatAlignReward(nn.Module):
    """R(context, codes) = the Beat Align Score of the decoded dance against the music's beats:
    codes (B, P T'), a `MotionVQVAE`'s codes, the P body parts of each code step in turn
    (DanceGPT's order); context["beats"] (B, >= T' f) bool, the music's beat frames (f = frames
    per code step) -> (B,). The dance x = decode(codes) (B, T' f, 75) goes through forward
    kinematics, and its kinetic beats d_m (metrics/retrieval.kinetic_beats) are matched to the N
    music beats b_n of the window's first T' f - 1 frames (`dance_beat_align_score`):

        BAS = (1 / N) sum_n exp(-min_m (b_n - d_m)^2 / (2 sigma^2))     (0 without beats).

    The whole score is paid at the sequence's end: paying each beat's term at the code step after
    it (Bailando pays per step) measured worse here, since a code's motion, through the decoder
    and the speed's smoothing, moves beats several steps before it. Frozen, always in eval mode."""

    def __init__(self, vqvae: nn.Module, sigma: float = 3.0) -> None:
        super().__init__()
        self.vqvae, self.sigma = vqvae, sigma
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> BeatAlignReward:
        return super().train(False)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, P T') -> the dance (B, T' f, 75)."""
        return self.vqvae.decode(codes.unflatten(1, (-1, self.vqvae.parts)).transpose(1, 2))

    @torch.no_grad()
    def forward(self, context: dict[str, torch.Tensor], codes: torch.Tensor) -> torch.Tensor:
        motion = self.decode(codes)
        scores = [
            dance_beat_align_score(joints, music, self.sigma)
            for joints, music in zip(forward_kinematics(upcast(motion).cpu()), context["beats"].cpu())
        ]
        return torch.tensor(scores, dtype=compute_dtype(motion.dtype), device=codes.device)
