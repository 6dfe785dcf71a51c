"""Music-to-dance models after Bailando (Li et al., 2022, "Bailando: 3D Dance Generation by
Actor-Critic GPT with Choreographic Memory"). This module: the choreographic memory, a 1-D
convolutional VQ-VAE over pose sequences, and the music-conditioned GPT over its codes
(`DanceGPT`, its docstring has the sequence and the factorization).

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

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from deepzoo.config import Count, Index, NonNegative, Positive
from deepzoo.models.gpt import GPT, GPTConfig, sample_next
from deepzoo.nn.norms import feature_standardization
from deepzoo.nn.precision import upcast
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
    downsample: Index = 3
    """Stride-2 convolutions: one code per 2^downsample frames (8: 7.5 codes per second)."""
    hidden: Count = 128
    """Channels of the convolutions."""
    num_codes: Count = 256
    """K, codes in each part's codebook."""
    code_dim: Count = 64
    """D, the dimension of a code."""
    beta: NonNegative = 0.25
    """Weight of the commitment term (VQ-VAE's; Bailando's config has 0.02, see docs/dance.md)."""
    ema: bool = True
    """EMA codebook updates (else the codebook loss)."""
    dead_threshold: NonNegative = 1.0
    """Restart codes whose EMA usage (vectors per batch) falls below this; 0: never."""
    velocity_weight: NonNegative = 1.0
    """w_v."""
    acceleration_weight: NonNegative = 1.0
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

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, C) -> codes (B, T'), the codebook left as it is (no decoder pass)."""
        return self.quantizer.nearest(self.encoder(x.transpose(1, 2)).transpose(1, 2))

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
        (`nn.norms.feature_standardization`: a dimension that never moves standardizes to 0)."""
        mean, std = feature_standardization(motion)
        self.mean.copy_(mean)
        self.std.copy_(std)

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
        x_hat = torch.empty_like(upcast(x))
        terms: dict[str, torch.Tensor] = {}
        vq_loss = torch.zeros((), device=x.device)
        for dims, part in zip(self.part_dims, self.part_vqvaes):
            recon, q = part(x[..., dims])
            x_hat[..., dims] = upcast(recon)
            vq_loss = vq_loss + q.loss
            for key, value in q.terms().items():
                terms[key] = terms.get(key, 0.0) + value / self.parts
        c = self.config
        x = upcast(x)
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
        """motion (B, T, 75) -> codes (B, parts, T / frames_per_code); the codebooks are left as
        they are in any mode."""
        self._check(motion)
        x = (motion - self.mean) / self.std
        parts = zip(self.part_dims, self.part_vqvaes)
        return torch.stack([part.encode(x[..., dims]) for dims, part in parts], 1)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, parts, T') -> motion (B, T' frames_per_code, 75) in the data's units."""
        if codes.ndim != 3 or codes.shape[1] != self.parts:
            raise ValueError(f"need codes (B, {self.parts}, T'), got {tuple(codes.shape)}")
        b, _, steps = codes.shape
        std, mean = upcast(self.std), upcast(self.mean)
        x = torch.zeros(b, steps * self.frames_per_code, MOTION_DIM, device=codes.device, dtype=std.dtype)
        for i, (dims, part) in enumerate(zip(self.part_dims, self.part_vqvaes)):
            x[..., dims] = part.decode(codes[:, i]).to(x.dtype)
        return x * std + mean

    @torch.no_grad()
    def reconstruct(self, motion: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(motion))


# ---------------------------------------------------------------- the music-conditioned GPT
@dataclass(frozen=True)
class DanceGPTConfig:
    gpt: GPTConfig = GPTConfig(vocab_size=0, block_size=121, layers=4, heads=4, dim=128, positions="learned")
    """vocab_size 0: parts * K + 1 (the start token); block_size: tokens of context, the start token
    included (121 = 60 code steps of 2 parts = 8 s of motion)."""
    music_dim: Count = 438
    """Width of the music features (data/music.py)."""
    window_steps: Count = 30
    """Training crops: a random window of this many code steps (30 = 240 frames = 4 s) of each
    dance, starting at a code boundary; evaluation reads whole sequences (they must fit the context)."""
    temperature: Positive = 1.0
    """Sampling temperature."""
    top_k: Index = 0
    """Sample from the top-k codes only (0: all)."""


class DanceGPT(nn.Module):
    """A GPT over a frozen `MotionVQVAE`'s codes, conditioned on the music.

    The codes (B, P, T') are read step by step, the P parts of each step in turn (upper then lower
    body): s = [k^1_1, k^2_1, k^1_2, k^2_2, ...], part p's ids shifted by p K. The input is
    [start, s_1, ..., s_{n-1}]; at position i the embedding gets W m_j added, m_j the standardized
    music features averaged over the frames of the code step j = floor(i / P) that position i
    predicts, so every code is chosen knowing the music of its own frames (and all before):

        p(s | m) = prod_i p(s_i | s_<i, m_<=j(i)),    s_i among part (i mod P)'s K codes only.

    Bailando predicts both parts of a step at once with cross-conditional heads; the interleaved
    sequence is the same factorization with the lower body also seeing the upper body's code of
    the same step. Sequences longer than the context slide: the window restarts from the start
    token followed by the last block_size - 1 tokens (as the training crops start)."""

    def __init__(self, config: DanceGPTConfig, vqvae: MotionVQVAE) -> None:
        super().__init__()
        self.config = c = config
        self.vqvae = vqvae.requires_grad_(False).eval()
        self.parts, self.num_codes = vqvae.parts, vqvae.num_codes
        vocab = self.parts * self.num_codes + 1
        if c.gpt.vocab_size not in (0, vocab):
            raise ValueError(f"the dance GPT's vocabulary must be 0 or parts * num_codes + 1 = {vocab}")
        if c.gpt.block_size < self.parts + 1:
            raise ValueError(f"gpt.block_size must hold the start token and one step, got {c.gpt.block_size}")
        self.gpt = GPT(replace(c.gpt, vocab_size=vocab))
        self.start = vocab - 1
        self.music = nn.Linear(c.music_dim, c.gpt.dim)
        self.feature_dim = c.gpt.dim
        self.register_buffer("music_mean", torch.zeros(c.music_dim))
        self.register_buffer("music_std", torch.ones(c.music_dim))

    def train(self, mode: bool = True) -> DanceGPT:
        super().train(mode)
        self.vqvae.eval()
        return self

    @torch.no_grad()
    def fit_normalization(self, music: torch.Tensor) -> None:
        """Standardize music features with the mean and standard deviation of music (N, T, F)."""
        mean, std = feature_standardization(music)
        self.music_mean.copy_(mean)
        self.music_std.copy_(std)

    def music_steps(self, music: torch.Tensor) -> torch.Tensor:
        """music (B, T, F) at 60 FPS -> (B, T / frames_per_code, F): standardized, averaged per code step."""
        steps = music.shape[1] // self.vqvae.frames_per_code
        music = (music[:, : steps * self.vqvae.frames_per_code] - self.music_mean) / self.music_std
        return music.unflatten(1, (steps, self.vqvae.frames_per_code)).mean(2)

    def sequence(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, P, T') -> s (B, P T'), the parts of each step in turn, part p shifted by p K."""
        shifted = codes + self.num_codes * torch.arange(self.parts, device=codes.device)[:, None]
        return shifted.transpose(1, 2).flatten(1)

    def conditioning(self, steps: torch.Tensor, first: int, length: int) -> torch.Tensor:
        """W m_j for the positions first .. first + length - 1 (j = floor(i / P)): (B, length, D)."""
        j = (torch.arange(first, first + length, device=steps.device) // self.parts).clamp(
            max=steps.shape[1] - 1
        )
        return self.music(steps[:, j].to(self.music.weight.dtype))

    def _part_logits(self, logits: torch.Tensor, first: int) -> torch.Tensor:
        """Logits (B, L, V) of positions first.. -> (B, L, K): each position's part's codes only."""
        part = torch.arange(first, first + logits.shape[1], device=logits.device) % self.parts
        index = part[:, None] * self.num_codes + torch.arange(self.num_codes, device=logits.device)
        return logits.gather(2, index.expand(logits.shape[0], -1, -1))

    def action_logits(
        self, context: dict[str, torch.Tensor], actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """For music context["music"] (B, T, F) and codes `actions` (B, P T') in sequence order
        (part-local ids, T' <= T / frames_per_code): the features of the states that choose them
        (B, P T', D) and the logits over each position's part's codes (B, P T', K); one pass,
        so P T' <= block_size."""
        if actions.shape[1] > self.gpt.config.block_size:
            raise ValueError(
                f"{actions.shape[1]} tokens exceed the context of {self.gpt.config.block_size}; "
                "crop the batch"
            )
        s = actions + (torch.arange(actions.shape[1], device=actions.device) % self.parts) * self.num_codes
        inputs = torch.cat([torch.full_like(s[:, :1], self.start), s[:, :-1]], dim=1)
        extra = self.conditioning(self.music_steps(context["music"]), 0, s.shape[1])
        features = self.gpt.features(inputs, extra=extra)
        return features, self._part_logits(self.gpt.head(features), 0)

    def sample(
        self, context: dict[str, torch.Tensor], temperature: float, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Codes (B, P T') in sequence order (part-local ids) for music context["music"], drawn
        from softmax(logits / temperature) over all of each part's codes (the actor-critic's policy)."""
        codes = self.generate_codes(context["music"], generator, temperature=temperature, top_k=0)
        return codes.transpose(1, 2).flatten(1)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """batch "motion" (B, T, 75), "music" (B, T, F) -> {"loss": nats per code}. In training a
        random window of `window_steps` code steps (one offset for the batch) is read; in
        evaluation the whole sequence, which must fit the context: P T / frames_per_code <= block_size."""
        motion, music = batch["motion"], batch["music"]
        frames = self.config.window_steps * self.vqvae.frames_per_code
        if self.training and motion.shape[1] > frames:
            steps = motion.shape[1] // self.vqvae.frames_per_code - self.config.window_steps
            first = int(torch.randint(steps + 1, ())) * self.vqvae.frames_per_code
            motion, music = motion[:, first : first + frames], music[:, first : first + frames]
        target = self.vqvae.encode(motion).transpose(1, 2).flatten(1)  # (B, P T'), part-local ids
        _, logits = self.action_logits({"music": music}, target)
        return {"loss": F.cross_entropy(upcast(logits.flatten(0, 1)), target.flatten())}

    @torch.no_grad()
    def generate_codes(
        self,
        music: torch.Tensor,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        temperature: float | None = None,
        top_k: int | None = None,
    ) -> torch.Tensor:
        """Codes (B, P, T') for music (B, T, F) of any length, T' = T / frames_per_code: each token
        drawn from softmax(logits / temperature) over its part's codes (top-k when set; both
        default to the config's)."""
        temperature = self.config.temperature if temperature is None else temperature
        top_k = self.config.top_k if top_k is None else top_k
        steps = self.music_steps(music)
        if steps.shape[1] == 0:
            raise ValueError(
                f"need at least {self.vqvae.frames_per_code} frames of music, got {music.shape[1]}"
            )
        n, block = steps.shape[1] * self.parts, self.gpt.config.block_size
        s = torch.empty(music.shape[0], 0, dtype=torch.long, device=music.device)
        start = torch.full((music.shape[0], 1), self.start, dtype=torch.long, device=music.device)
        caches, cached_from = None, -1
        for i in range(n):
            # the window [start, s[first:i]] fits the block and begins at a code step, as training crops do
            first = max(0, -(-(i - (block - 1)) // self.parts) * self.parts)
            if use_cache and caches is not None and first == cached_from:
                logits = self.gpt(s[:, -1:], caches, self.conditioning(steps, i, 1))
            else:
                inputs = torch.cat([start, s[:, first:]], dim=1)
                caches, cached_from = (self.gpt.new_caches(), first) if use_cache else (None, -1)
                logits = self.gpt(inputs, caches, self.conditioning(steps, first, inputs.shape[1]))
            part_logits = self._part_logits(logits[:, -1:], i)[:, -1]
            token = (
                sample_next(part_logits, temperature, top_k, generator) + (i % self.parts) * self.num_codes
            )
            s = torch.cat([s, token], dim=1)
        codes = s.view(len(s), steps.shape[1], self.parts).transpose(1, 2)
        return codes - self.num_codes * torch.arange(self.parts, device=s.device)[:, None]

    @torch.no_grad()
    def generate(self, music: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A dance (B, T' frames_per_code, 75) for music (B, T, F)."""
        return self.vqvae.decode(self.generate_codes(music, generator))
