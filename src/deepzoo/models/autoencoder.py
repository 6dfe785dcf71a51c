"""Autoencoders on 28x28 images: a deterministic AE, the VAE (Kingma & Welling, 2014) and the
conditional VAE (Sohn et al., 2015).

x: (B, 1, 28, 28) in [0, 1]; y: (B,) digit labels (CVAE only).
VAE: q(z|x) = N(mu(x), diag sigma^2(x)), p(z) = N(0, I), p(x|z) = prod_i Bernoulli(x_i; pi_i(z))
(or a Gaussian N(x; mu(z), s^2) with one learned s for continuous data). With the
reparameterization z = mu + sigma * eps, eps ~ N(0, I), the negative ELBO per image, in nats, is

    L = E_q[-log p(x|z)] + KL(q(z|x) || p(z)),   KL = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2)

The CVAE conditions encoder and decoder on the one-hot label: q(z|x, y), p(x|z, y). Bernoulli
models are trained on dynamically binarized images (x ~ Bernoulli(pixel) at every step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from deepzoo.config import Count, Index
from deepzoo.nn.precision import compute_dtype, upcast
from deepzoo.rng import randn

IMAGE_SHAPE = (1, 28, 28)
PIXELS = 28 * 28
LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class AutoencoderConfig:
    kind: Literal["ae", "vae", "cvae"] = "vae"
    """ae: deterministic code; vae: Gaussian posterior and prior; cvae: VAE conditioned on the label."""
    arch: Literal["mlp", "conv"] = "mlp"
    """mlp: two hidden layers each way; conv: two stride-2 convolutions each way (28 -> 14 -> 7)."""
    latent: Count = 32
    """Size of the latent code z."""
    hidden: Count = 512
    """mlp: units per hidden layer; conv: channels of the 7x7 stage (half of it at 14x14)."""
    likelihood: Literal["bernoulli", "gaussian"] = "bernoulli"
    """bernoulli: binary pixels (dynamically binarized); gaussian: continuous pixels, learned scale."""
    num_classes: Index = 10
    """Classes of the CVAE's label (one-hot into encoder and decoder)."""


def _one_hot(y: torch.Tensor | None, num_classes: int, like: torch.Tensor) -> torch.Tensor | None:
    return None if y is None else F.one_hot(y, num_classes).to(like.dtype)


def _cat(h: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    return h if cond is None else torch.cat([h, cond], dim=1)


class Encoder(nn.Module):
    """x (B, 1, 28, 28) [+ condition (B, c)] -> (B, out)."""

    def __init__(self, arch: str, hidden: int, out: int, cond: int = 0) -> None:
        super().__init__()
        if arch == "mlp":
            self.body = nn.Sequential(
                nn.Flatten(), nn.Linear(PIXELS, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU()
            )
            features = hidden
        elif arch == "conv":
            self.body = nn.Sequential(
                nn.Conv2d(1, hidden // 2, 4, 2, 1), nn.GELU(),
                nn.Conv2d(hidden // 2, hidden, 4, 2, 1), nn.GELU(),
                nn.Flatten(),
            )  # fmt: skip
            features = hidden * 49
        else:
            raise ValueError(f"arch must be 'mlp' or 'conv', got {arch!r}")
        self.head = nn.Linear(features + cond, out)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(_cat(self.body(x), cond))


class Decoder(nn.Module):
    """z (B, latent) [+ condition (B, c)] -> pixel logits or means (B, 1, 28, 28)."""

    def __init__(self, arch: str, hidden: int, latent: int, cond: int = 0) -> None:
        super().__init__()
        if arch == "mlp":
            self.body = nn.Sequential(
                nn.Linear(latent + cond, hidden), nn.GELU(),
                nn.Linear(hidden, hidden), nn.GELU(),
                nn.Linear(hidden, PIXELS), nn.Unflatten(1, IMAGE_SHAPE),
            )  # fmt: skip
        elif arch == "conv":
            self.body = nn.Sequential(
                nn.Linear(latent + cond, hidden * 49), nn.GELU(), nn.Unflatten(1, (hidden, 7, 7)),
                nn.ConvTranspose2d(hidden, hidden // 2, 4, 2, 1), nn.GELU(),
                nn.ConvTranspose2d(hidden // 2, 1, 4, 2, 1),
            )  # fmt: skip
        else:
            raise ValueError(f"arch must be 'mlp' or 'conv', got {arch!r}")

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.body(_cat(z, cond))


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per row: 1/2 sum_j (mu^2 + sigma^2 - 1 - log sigma^2)."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(dim=-1)


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag exp(logvar)) summed over the last axis."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).square() * torch.exp(-logvar)).sum(dim=-1)


class Autoencoder(nn.Module):
    """AE, VAE or CVAE (config.kind); `loss(batch)` gives the per-image objective in nats."""

    def __init__(self, config: AutoencoderConfig = AutoencoderConfig()) -> None:
        super().__init__()
        self.config = c = config
        if c.kind not in ("ae", "vae", "cvae"):
            raise ValueError(f"kind must be 'ae', 'vae' or 'cvae', got {c.kind!r}")
        cond = c.num_classes if c.kind == "cvae" else 0
        self.encoder = Encoder(c.arch, c.hidden, c.latent if c.kind == "ae" else 2 * c.latent, cond)
        self.decoder = Decoder(c.arch, c.hidden, c.latent, cond)
        self.log_scale = nn.Parameter(torch.zeros(())) if c.likelihood == "gaussian" else None
        if c.kind == "ae":  # a diagonal Gaussian fitted to the training codes, for `sample`
            self.register_buffer("code_mean", torch.zeros(c.latent))
            self.register_buffer("code_var", torch.ones(c.latent))

    @property
    def conditional(self) -> bool:
        return self.config.kind == "cvae"

    def _cond(self, y: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
        if not self.conditional:
            return None
        if y is None:
            raise ValueError("a CVAE needs the labels y")
        return _one_hot(y, self.config.num_classes, like)

    # ---------------------------------------------------------------- the two halves
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar), each (B, latent); for the AE, (code, None)."""
        h = self.encoder(x, self._cond(y, x))
        if self.config.kind == "ae":
            return h, None
        mu, logvar = upcast(h).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (Bernoulli) or means (Gaussian) of p(x|z), (B, 1, 28, 28)."""
        return self.decoder(z, self._cond(y, z))

    def mean_image(self, out: torch.Tensor) -> torch.Tensor:
        """E[x|z] in [0, 1] from the decoder output."""
        out = upcast(out)
        return torch.sigmoid(out) if self.config.likelihood == "bernoulli" else out.clamp(0, 1)

    def log_likelihood(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per image, summed over pixels: x (..., 1, 28, 28) -> (...)."""
        out = upcast(out)
        if self.config.likelihood == "bernoulli":
            return -F.binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none").sum(
                (-3, -2, -1)
            )
        log_s = upcast(self.log_scale)
        squares = (x - out).square() * torch.exp(-2 * log_s)
        return -0.5 * (LOG_2PI + 2 * log_s + squares).sum((-3, -2, -1))

    def _binarize(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.likelihood == "bernoulli" and self.training:
            return torch.bernoulli(x)
        return x

    # ---------------------------------------------------------------- the objective
    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{"loss", "recon", ("kl")}: recon = -log p(x|z) and kl = KL(q || p), nats per image.
        Bernoulli models binarize x at every training step; the AE also tracks its code statistics."""
        x = self._binarize(batch["x"])
        y = batch.get("y") if self.conditional else None
        mu, logvar = self.encode(x, y)
        if self.config.kind == "ae":
            if self.training:
                self._track_codes(upcast(mu.detach()))
            recon = -self.log_likelihood(x, self.decode(mu)).mean()
            return {"loss": recon, "recon": recon}
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        recon = -self.log_likelihood(x, self.decode(z, y)).mean()
        kl = gaussian_kl(mu, logvar).mean()
        return {"loss": recon + kl, "recon": recon, "kl": kl}

    @torch.no_grad()
    def _track_codes(self, codes: torch.Tensor, momentum: float = 0.01) -> None:
        self.code_mean.lerp_(codes.mean(0), momentum)
        self.code_var.lerp_(codes.var(0), momentum)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | z = posterior mean], (B, 1, 28, 28) in [0, 1]."""
        mu, _ = self.encode(x, y)
        return self.mean_image(self.decode(mu, y))

    def log_importance_weights(self, x: torch.Tensor, k: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """log w_i = log p(x, z_i) - log q(z_i|x) for z_i ~ q(z|x), i = 1..k: (k, B).
        logmeanexp over i is the importance-weighted bound (IWAE); the mean is the ELBO estimate."""
        if self.config.kind == "ae":
            raise ValueError("a deterministic autoencoder has no likelihood bound")
        mu, logvar = self.encode(x, y)
        z = mu + torch.randn(k, *mu.shape, device=mu.device) * torch.exp(0.5 * logvar)  # (k, B, latent)
        y_k = None if y is None else y.repeat(k)
        out = self.decode(z.flatten(0, 1), y_k).unflatten(0, (k, len(x)))
        log_prior = gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z))
        return self.log_likelihood(x, out) + log_prior - gaussian_log_prob(z, mu, logvar)

    @torch.no_grad()
    def sample(
        self, n: int, *, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """n images E[x|z], z ~ p(z) (the AE: the Gaussian fitted to its training codes), in [0, 1].
        The CVAE draws the digits `labels` (default 0, 1, ..., 9, 0, ...)."""
        weight = next(self.parameters())  # a float64 model samples in float64, any other in float32
        device = weight.device
        z = randn((n, self.config.latent), generator, device, compute_dtype(weight.dtype))
        if self.config.kind == "ae":
            z = self.code_mean + z * self.code_var.sqrt()
        y = None
        if self.conditional:
            y = (
                torch.arange(n, device=device) % self.config.num_classes
                if labels is None
                else labels.to(device)
            )
        return self.mean_image(self.decode(z, y))
