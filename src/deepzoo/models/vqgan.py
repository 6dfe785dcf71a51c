"""VQGAN (Esser, Rombach & Ommer, 2021, "Taming Transformers for High-Resolution Image
Synthesis"), stage 1: a VQ autoencoder whose decoder is trained with a perceptual loss and a patch
discriminator, so that a coarse code grid still decodes to sharp images. Stage 2 is the GPT of
`models/code_prior.py`, for which this model is the tokenizer.

x (B, 1, S, S) in [0, 1], scaled to [-1, 1] inside. Encoder: conv, then per level `blocks`
residual blocks (GroupNorm, SiLU, conv, twice; min(8, C) groups, where the released code's 32 suit
its 128-512 channels) and a stride-2 conv (not after the last level),
then residual block, self-attention over the h*w positions, residual block, GroupNorm, SiLU,
conv to the code dimension D: z (B, D, h, w), h = S / 2^(levels - 1). The library's
`VectorQuantizer` (EMA or loss codebook, dead-code restart, optionally l2-normalized codes) gives
z_q; the decoder mirrors the encoder (nearest-neighbour upsampling then conv) to x_hat.

Losses (the paper's eq. 4-7, with the released code's choices):

    L_rec = |x - x_hat|_1 + w_p d_perc(x, x_hat)                 (pixel mean, perceptual per image)
    L_GAN = -E D(x_hat)                                             (generator side of the hinge game)
    L_ae  = L_rec + L_vq + 1[step >= disc_start] w_d lambda L_GAN
    lambda = ||grad_{W_L} L_rec|| / (||grad_{W_L} L_GAN|| + 1e-4), clamped to [0, 1e4], no gradient
    L_D   = E relu(1 - D(x)) + E relu(1 + D(x_hat))                 (hinge; from disc_start on)

W_L is the decoder's last convolution; D is a PatchGAN (Isola et al., 2017): strided 4x4 convs
to one logit per overlapping patch, every patch scored. d_perc is `nn.losses.PerceptualLoss` on a
fixed network (default the shipped MNIST feature CNN; the paper uses LPIPS on VGG16, with learned
channel weights). Before `disc_start` the discriminator is neither used nor trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from deepzoo.config import Count, Index, NonNegative, Rate, Sizes
from deepzoo.nn.adversarial import Objective
from deepzoo.nn.losses import PerceptualLoss
from deepzoo.nn.positions import check_heads
from deepzoo.nn.precision import upcast
from deepzoo.nn.quantize import Quantized, VectorQuantizer
from deepzoo.nn.unet import AttentionBlock, GroupNorm


@dataclass(frozen=True)
class VQGANConfig:
    image_size: Count = 64
    """S, the side of the (square, one-channel) images."""
    channels: Sizes = (8, 16, 32, 64)
    """Width of each level; each level but the last halves the side (64 -> 8 with four levels)."""
    blocks: Index = 1
    """Residual blocks per level (the decoder has one more, as in the released code)."""
    attention: bool = True
    """Self-attention between two residual blocks at the code-grid resolution."""
    heads: Count = 1
    """Heads of that attention."""
    num_codes: Count = 256
    """K, the codebook size."""
    code_dim: Count = 32
    """D, the dimension of a code (4-32 with normalize_codes: "factorized" codes)."""
    normalize_codes: bool = False
    """l2-normalize z and the codes (cosine lookup; Yu et al., 2022)."""
    beta: NonNegative = 0.25
    """Weight of the commitment term."""
    ema: bool = True
    """EMA codebook updates (else the codebook loss, with its own parameter group)."""
    decay: Rate = 0.99
    """EMA decay of the codebook and of the usage counts."""
    dead_threshold: NonNegative = 1.0
    """Restart codes whose EMA usage (vectors per batch) falls below this; 0: never."""
    perceptual_weight: NonNegative = 1.0
    """w_p; 0 turns the perceptual loss off (and does not build its network)."""
    disc_weight: NonNegative = 0.8
    """w_d, the adversarial weight on top of the adaptive lambda; 0 turns the GAN off."""
    disc_start: Index = 1000
    """First step of the discriminator and of the adversarial term."""
    adaptive_weight: bool = True
    """lambda as above (else lambda = 1)."""
    disc_channels: Count = 32
    """Channels of the discriminator's first conv (doubled per strided layer, at most 8x)."""
    disc_layers: int = 2
    """Stride-2 layers of the PatchGAN (2: 34x34-pixel patches; the paper's 3: 70x70)."""

    def __post_init__(self) -> None:
        if self.image_size % 2 ** (len(self.channels) - 1):
            raise ValueError(f"image_size {self.image_size} must divide by 2^(levels - 1)")
        if self.disc_layers < 1:
            raise ValueError(f"disc_layers must be >= 1, got {self.disc_layers}")
        if self.attention:  # at the code grid, the last level's width
            check_heads(self.channels[-1], self.heads, rope=False, names=("channels[-1]", "heads"))


def _norm(channels: int) -> GroupNorm:
    return GroupNorm(min(8, channels), channels)


class ResBlock(nn.Module):
    """x -> skip(x) + conv(silu(GN(conv(silu(GN(x)))))), skip a 1x1 conv when the width changes."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, 1, 1),
            _norm(c_out), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, 1, 1),
        )  # fmt: skip
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


def _middle(c: VQGANConfig, width: int) -> list[nn.Module]:
    attention = AttentionBlock(width, c.heads) if c.attention else nn.Identity()
    return [ResBlock(width, width), attention, ResBlock(width, width)]


class Encoder(nn.Module):
    """x (B, 1, S, S) in [-1, 1] -> z (B, D, h, w)."""

    def __init__(self, c: VQGANConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, c.channels[0], 3, 1, 1)]
        width = c.channels[0]
        for i, out in enumerate(c.channels):
            for _ in range(c.blocks):
                layers.append(ResBlock(width, out))
                width = out
            if i < len(c.channels) - 1:
                layers.append(nn.Conv2d(width, width, 3, 2, 1))  # halves the side
        layers += _middle(c, width) + [_norm(width), nn.SiLU(), nn.Conv2d(width, c.code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """z_q (B, D, h, w) -> x_hat (B, 1, S, S), unbounded (about [-1, 1]); `last` is W_L."""

    def __init__(self, c: VQGANConfig) -> None:
        super().__init__()
        width = c.channels[-1]
        layers: list[nn.Module] = [nn.Conv2d(c.code_dim, width, 3, 1, 1), *_middle(c, width)]
        for i, out in reversed(list(enumerate(c.channels))):
            for _ in range(c.blocks + 1):
                layers.append(ResBlock(width, out))
                width = out
            if i > 0:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, width, 3, 1, 1)]
        self.last = nn.Conv2d(width, 1, 3, 1, 1)
        self.net = nn.Sequential(*layers, _norm(width), nn.SiLU(), self.last)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class PatchDiscriminator(nn.Module):
    """PatchGAN: x (B, 1, S, S) in [-1, 1] -> logits (B, P, P), one per overlapping patch:
    4x4 convs, stride 2 `layers` times then stride 1 twice, LeakyReLU 0.2, BatchNorm after all
    but the first and the last (the pix2pix / taming design)."""

    def __init__(self, channels: int = 32, layers: int = 2) -> None:
        super().__init__()
        widths = [channels * min(2**i, 8) for i in range(layers + 1)]
        modules: list[nn.Module] = [nn.Conv2d(1, widths[0], 4, 2, 1), nn.LeakyReLU(0.2)]
        for i in range(1, layers + 1):
            stride = 2 if i < layers else 1
            modules += [
                nn.Conv2d(widths[i - 1], widths[i], 4, stride, 1, bias=False),
                nn.BatchNorm2d(widths[i]),
                nn.LeakyReLU(0.2),
            ]
        modules.append(nn.Conv2d(widths[-1], 1, 4, 1, 1))
        self.net = nn.Sequential(*modules)
        for m in self.modules():  # DCGAN's initialization, as pix2pix and taming
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def adaptive_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """lambda = ||d rec_loss / d last|| / (||d gan_loss / d last|| + 1e-4), clamped to [0, 1e4] and
    detached (the graphs are kept for the backward that follows)."""
    with torch.autocast(last.device.type, enabled=False):
        (g_rec,) = torch.autograd.grad(rec_loss, last, retain_graph=True)
        (g_gan,) = torch.autograd.grad(gan_loss, last, retain_graph=True)
        return (upcast(g_rec).norm() / (upcast(g_gan).norm() + 1e-4)).clamp(0.0, 1e4).detach()


class VQGAN(nn.Module):
    """Encoder, quantizer, decoder, PatchGAN and perceptual network; `train_step` updates the
    autoencoder ("ae") then the discriminator ("d"). A tokenizer for `CodePrior`."""

    def __init__(self, config: VQGANConfig = VQGANConfig(), perceptual: PerceptualLoss | None = None) -> None:
        super().__init__()
        self.config = c = config
        self.encoder = Encoder(c)
        self.quantizer = VectorQuantizer(
            c.num_codes, c.code_dim, c.beta, ema=c.ema, decay=c.decay,
            dead_threshold=c.dead_threshold, normalize=c.normalize_codes,
        )  # fmt: skip
        self.decoder = Decoder(c)
        self.discriminator = PatchDiscriminator(c.disc_channels, c.disc_layers)
        self.objective = Objective("hinge")
        if perceptual is None and c.perceptual_weight > 0:
            from deepzoo.models.features import perceptual_loss

            perceptual = perceptual_loss()
        self.perceptual = perceptual

    # ---------------------------------------------------------------- tokenizer interface
    @property
    def num_codes(self) -> int:
        return self.config.num_codes

    @property
    def grid(self) -> tuple[int, int]:
        side = self.config.image_size // 2 ** (len(self.config.channels) - 1)
        return side, side

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 1, S, S) in [0, 1] -> codes (B, h, w); the codebook is left as it is in any mode."""
        return self.quantizer.nearest(self.encoder(x * 2 - 1))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, h, w) -> images (B, 1, S, S) in [0, 1]."""
        return ((upcast(self.decoder(self.quantizer.lookup(codes))) + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # ---------------------------------------------------------------- training
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """{"ae": encoder and decoder, "codebook": a loss-trained codebook (none with EMA),
        "d": the discriminator}; the perceptual network is frozen."""
        groups = {
            "ae": [*self.encoder.parameters(), *self.decoder.parameters()],
            "codebook": list(self.quantizer.parameters()),
            "d": list(self.discriminator.parameters()),
        }
        return {name: params for name, params in groups.items() if params}

    def _autoencode(self, x: torch.Tensor) -> tuple[Quantized, torch.Tensor, dict[str, torch.Tensor]]:
        """x in [-1, 1] -> (quantized, x_hat, {"rec": L_rec, "l1", "perceptual"})."""
        q = self.quantizer(self.encoder(x))
        x_hat = self.decoder(q.z_q)
        l1 = (upcast(x_hat) - x).abs().mean()
        terms = {"l1": l1, "rec": l1}
        if self.perceptual is not None:
            perceptual = self.perceptual((upcast(x_hat) + 1) / 2, (x + 1) / 2).mean()
            terms |= {"perceptual": perceptual, "rec": l1 + self.config.perceptual_weight * perceptual}
        return q, x_hat, terms

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The autoencoder's loss without the adversarial term: {"loss": L_rec + L_vq, "rec",
        "l1", "perceptual", "vq", "commit", "perplexity", "usage"}."""
        q, _, terms = self._autoencode(batch["x"] * 2 - 1)
        return {"loss": terms["rec"] + q.loss, **terms, **q.terms()}

    def gan_active(self, step: int) -> bool:
        return self.config.disc_weight > 0 and step >= self.config.disc_start

    def train_step(self, batch: dict[str, torch.Tensor], step: int, opt: Any) -> dict[str, torch.Tensor]:
        """One autoencoder update on batch["x"] (B, 1, S, S) in [0, 1]; from disc_start on, the
        adversarial term joins it and one discriminator update follows on the same images and
        (detached) reconstructions."""
        x = batch["x"] * 2 - 1
        q, x_hat, terms = self._autoencode(x)
        loss = terms["rec"] + q.loss
        out = {**terms, **q.terms()}
        gan = self.gan_active(step)
        if gan:
            g_loss = self.objective.generator_loss_of_scores(self.discriminator(x_hat).flatten())
            weight = self.config.disc_weight
            if self.config.adaptive_weight:
                weight = weight * adaptive_weight(terms["rec"], g_loss, self.decoder.last.weight)
            loss = loss + weight * g_loss
            out |= {"loss_g": g_loss.detach(), "gan_weight": torch.as_tensor(weight)}
        groups = [name for name in ("ae", "codebook") if name in opt.names]
        out |= {"loss": loss.detach()} | opt.update(groups, loss)
        if gan:
            d = self.objective.discriminator_loss(self.discriminator, x, x_hat.detach())
            out |= d | opt.update("d", d["loss_d"])
        return out
