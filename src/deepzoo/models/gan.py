"""Generative adversarial networks on 28x28 images: MLP GAN (Goodfellow et al., 2014), DCGAN
(Radford et al., 2016), the conditional GAN (Mirza & Osindero, 2014; projection discriminator,
Miyato & Koyama, 2018), WGAN (Arjovsky et al., 2017) and WGAN-GP (Gulrajani et al., 2017), and any
of them conditioned on clusters of the training images instead of labels (self-conditioning, after
Liu et al., 2020: still an unconditional model, no label is read).

x: (B, 1, 28, 28) in [0, 1] outside, scaled to [-1, 1] for both networks (G ends in tanh);
z ~ N(0, I) of size `latent`; y: (B,) digit labels (conditional models) or cluster indices.

Self-conditioning (`clusters` = K > 0): `fit_clusters` runs k-means on the training images'
pixels once; a real image's condition is its nearest centroid c(x) = argmin_k ||x - mu_k||, and a
sample draws the cluster k with its frequency pi_k in the training set, then x~ = G(z, k). So G
models p(x) = sum_k pi_k p(x | k), and each p(x | k) covers fewer digits than p(x): a continuous
z need not stretch across the gaps between digits, where an unconditional G draws blends. Liu et
al. cluster the discriminator's features and re-cluster during training; our clusters are fixed
and come from pixels (no extra training, and the same clusters on resume).
G: z [, y] -> x~;  D: x [, y] -> one score per image (a logit, or a critic value for WGAN).
The game itself is an `Objective` of `deepzoo.nn.adversarial` (its docstring has the math).

One trainer step is one discriminator update on a fresh batch; the generator is updated after
every `n_critic`-th discriminator update, against the just-updated discriminator and on the same
noise (so n_critic = 5 is WGAN's five critic iterations per generator iteration).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from deepzoo.config import Count, NonNegative, Positive
from deepzoo.nn.adversarial import Objective, ObjectiveName, clip_weights
from deepzoo.nn.precision import compute_dtype, upcast
from deepzoo.nn.quantize import kmeans, nearest_code
from deepzoo.rng import randn

IMAGE_SHAPE = (1, 28, 28)
PIXELS = 28 * 28


@dataclass(frozen=True)
class GANConfig:
    arch: Literal["mlp", "dcgan"] = "dcgan"
    """mlp: two hidden layers each; dcgan: G projects z to 7x7 and upsamples with two stride-2
    transposed convolutions (BatchNorm, ReLU); D mirrors it with stride-2 convolutions (LeakyReLU 0.2)."""
    latent: Count = 64
    """Size of the noise z."""
    width: Count = 64
    """mlp: units of the first hidden layer (twice that in the second); dcgan: channels at 14x14
    (twice that at 7x7)."""
    num_classes: int = 0
    """0: unconditional; else G takes the label's embedding next to z and D adds the projection
    <embed(y), phi(x)> to its score."""
    objective: ObjectiveName = "non_saturating"
    gp_weight: NonNegative = 10.0
    """wgan_gp: lambda of the gradient penalty."""
    r1_weight: float = 0.0
    """gamma of the R1 penalty (gamma / 2) E_p ||grad_x D(x)||^2 added to D's loss; 0: none."""
    clip: Positive = 0.01
    """wgan: every critic weight is clipped into [-clip, clip] after each critic step."""
    n_critic: int = 1
    """Discriminator updates per generator update."""
    d_norm: Literal["batch", "layer", "none"] = "batch"
    """dcgan D's normalization after its second convolution (not per example, so not with
    wgan_gp, whose penalty is per example: use layer or none there)."""
    clusters: int = 0
    """0: none; else K: condition G and D (as num_classes does) on the k-means cluster of the
    training images (module docstring); unconditional still, labels are never read."""

    def __post_init__(self) -> None:
        Objective(self.objective, r1_weight=self.r1_weight)  # validates them
        if self.n_critic < 1:
            raise ValueError(f"n_critic must be >= 1, got {self.n_critic}")
        if self.objective == "wgan_gp" and self.d_norm == "batch":
            raise ValueError("wgan_gp penalizes per-example gradients: use d_norm 'layer' or 'none'")
        if min(self.num_classes, self.clusters) < 0:
            raise ValueError(
                f"num_classes and clusters must be >= 0, got {self.num_classes}, {self.clusters}"
            )
        if self.num_classes and self.clusters:
            raise ValueError(
                f"condition on labels (num_classes {self.num_classes}) or on clusters "
                f"({self.clusters}), not both"
            )

    @property
    def conditions(self) -> int:
        """The number of conditions G and D embed: labels or clusters (0: unconditional)."""
        return self.num_classes or self.clusters


class Generator(nn.Module):
    """z (B, latent) [, y (B,)] -> x~ (B, 1, 28, 28) in [-1, 1]."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        c, w = config, config.width
        self.embed = nn.Embedding(c.conditions, c.latent) if c.conditions else None
        z_in = 2 * c.latent if c.conditions else c.latent
        if c.arch == "mlp":
            self.net = nn.Sequential(
                nn.Linear(z_in, w), nn.LeakyReLU(0.2),
                nn.Linear(w, 2 * w), nn.LeakyReLU(0.2),
                nn.Linear(2 * w, PIXELS), nn.Tanh(), nn.Unflatten(1, IMAGE_SHAPE),
            )  # fmt: skip
        else:
            self.net = nn.Sequential(
                nn.Linear(z_in, 2 * w * 49, bias=False), nn.Unflatten(1, (2 * w, 7, 7)),
                nn.BatchNorm2d(2 * w), nn.ReLU(),
                nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
                nn.ConvTranspose2d(w, 1, 4, 2, 1), nn.Tanh(),
            )  # fmt: skip

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(y)], dim=1)
        return self.net(z)


class Discriminator(nn.Module):
    """x (B, 1, 28, 28) in [-1, 1] [, y (B,)] -> scores (B,): w^T phi(x) + b [+ <embed(y), phi(x)>]."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        c, w = config, config.width
        if c.arch == "mlp":
            self.features = nn.Sequential(
                nn.Flatten(),
                nn.Linear(PIXELS, 2 * w), nn.LeakyReLU(0.2),
                nn.Linear(2 * w, w), nn.LeakyReLU(0.2),
            )  # fmt: skip
            size = w
        else:
            norm = {
                "batch": lambda: nn.BatchNorm2d(2 * w),
                "layer": lambda: nn.GroupNorm(1, 2 * w),  # LayerNorm over (C, H, W)
                "none": nn.Identity,
            }[c.d_norm]
            self.features = nn.Sequential(
                nn.Conv2d(1, w, 4, 2, 1), nn.LeakyReLU(0.2),
                nn.Conv2d(w, 2 * w, 4, 2, 1, bias=c.d_norm == "none"), norm(), nn.LeakyReLU(0.2),
                nn.Flatten(),
            )  # fmt: skip
            size = 2 * w * 49
        self.head = nn.Linear(size, 1)
        self.embed = nn.Embedding(c.conditions, size) if c.conditions else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        phi = self.features(x)
        score = self.head(phi).squeeze(1)
        if self.embed is not None:
            score = score + (self.embed(y) * phi).sum(1)
        return score


class GAN(nn.Module):
    """Generator, discriminator and objective; `train_step` alternates their updates."""

    def __init__(self, config: GANConfig = GANConfig()) -> None:
        super().__init__()
        self.config = config
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)
        self.objective = Objective(config.objective, config.gp_weight, config.r1_weight)
        self._init_weights()
        self._fitted = False
        if config.clusters:
            self.register_buffer("centroids", torch.zeros(config.clusters, PIXELS))
            self.register_buffer("cluster_frequencies", torch.zeros(config.clusters))

    def _init_weights(self) -> None:
        """DCGAN's initialization: weights N(0, 0.02), norm scales N(1, 0.02), biases 0."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    @property
    def conditional(self) -> bool:
        return self.config.num_classes > 0

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"g": list(self.generator.parameters()), "d": list(self.discriminator.parameters())}

    @property
    def clusters_fitted(self) -> bool:
        """Whether the centroids hold a fit (from `fit_clusters` or loaded weights); checked on
        the host once, then remembered, so a training step does not wait for the device."""
        if not self._fitted and self.config.clusters:
            self._fitted = bool(self.cluster_frequencies.sum() > 0)
        return self._fitted

    @torch.no_grad()
    def fit_clusters(self, images: torch.Tensor, iters: int = 20, seed: int = 0) -> None:
        """k-means (`iters` Lloyd steps from K random images, seeded) on images (N, 1, 28, 28) in
        [0, 1]: the centroids mu_k and the frequencies pi_k of the training set's clusters."""
        if not self.config.clusters:
            raise ValueError("fit_clusters needs a GAN with clusters > 0")
        x = images.flatten(1).float()
        generator = torch.Generator().manual_seed(seed)
        centroids = kmeans(x, self.config.clusters, iters, generator)
        counts = torch.bincount(nearest_code(x, centroids), minlength=self.config.clusters)
        self.centroids.copy_(centroids)
        self.cluster_frequencies.copy_(counts / counts.sum())
        self._fitted = True

    def cluster_of(self, images: torch.Tensor) -> torch.Tensor:
        """The nearest centroid's index (B,) of images (B, 1, 28, 28) in [0, 1]."""
        if not self.clusters_fitted:
            raise RuntimeError("the clusters are not fitted: call fit_clusters(training images) first")
        with torch.autocast(images.device.type, enabled=False):  # exact fp32 distances
            return nearest_code(upcast(images.flatten(1)), self.centroids)

    def _labels(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if self.config.clusters:
            return self.cluster_of(batch["x"])
        return batch["y"] if self.conditional else None

    def train_step(self, batch: dict[str, torch.Tensor], step: int, opt: Any) -> dict[str, torch.Tensor]:
        """One discriminator update on batch["x"] (B, 1, 28, 28) in [0, 1]; then, every
        n_critic-th step, one generator update on the same noise."""
        real = batch["x"] * 2 - 1
        y = self._labels(batch)
        z = torch.randn(
            real.shape[0], self.config.latent, device=real.device, dtype=compute_dtype(real.dtype)
        )
        update_g = (step + 1) % self.config.n_critic == 0
        with torch.set_grad_enabled(update_g):
            fake = self.generator(z, y)

        def critic(x: torch.Tensor) -> torch.Tensor:
            return self.discriminator(x, y)

        out = self.objective.discriminator_loss(critic, real, fake.detach())
        out |= opt.update("d", out["loss_d"])
        if self.config.objective == "wgan":
            clip_weights(self.discriminator.parameters(), self.config.clip)
        if update_g:
            g = self.objective.generator_loss(critic, fake)
            out |= g | opt.update("g", g["loss_g"])
        return out

    @torch.no_grad()
    def sample(
        self, n: int, *, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """n images G(z), z ~ N(0, I), mapped to [0, 1]. A conditional GAN draws the digits
        `labels` (default 0, 1, ..., 9, 0, ...); a self-conditioned one the clusters `labels`
        (default: each drawn with its frequency pi_k, after z)."""
        weight = next(self.parameters())  # a float64 model samples in float64, any other in float32
        device = weight.device
        z = randn((n, self.config.latent), generator, device, compute_dtype(weight.dtype))
        y = None
        if self.config.clusters:
            if labels is None:
                if not self.clusters_fitted:
                    raise RuntimeError("the clusters are not fitted: call fit_clusters first")
                source = generator.device if generator is not None else torch.device("cpu")
                frequencies = self.cluster_frequencies.float().to(source)
                labels = torch.multinomial(frequencies, n, replacement=True, generator=generator)
            y = labels.to(device)
        elif self.conditional:
            y = labels if labels is not None else torch.arange(n) % self.config.num_classes
            y = y.to(device)
        return ((upcast(self.generator(z, y)) + 1) / 2).clamp(0, 1)
