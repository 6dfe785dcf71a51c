"""VQ-VAE (van den Oord et al., 2017): stage 1 of a two-stage generative model.

x (B, 1, S, S) in [0, 1] -> E(x) (B, D, h, h) -> nearest codes k (B, h, h) -> e_k (B, D, h, h)
-> D(e_k) = x_hat, with h = S / 2^downsamples (28 -> 7 for MNIST, 64 -> 8 for the scenes). Loss,
per the paper, with the reconstruction scaled by the data variance:

    L = ||x - x_hat||^2 / Var[x] + ||sg[E(x)] - e_k||^2 + beta ||E(x) - sg[e_k]||^2

(the codebook term is replaced by EMA updates when the quantizer uses them).

Stage 2 (`models/code_prior.py`) is a GPT over the code grid; the VQ-VAE is its tokenizer
(`encode`, `decode`, `num_codes`, `grid`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from deepzoo.config import Count, Index, NonNegative, Positive, Rate
from deepzoo.nn.precision import upcast
from deepzoo.nn.quantize import VectorQuantizer
from deepzoo.nn.residual import ResidualStack


@dataclass(frozen=True)
class VQVAEConfig:
    image_size: Count = 28
    """S, the side of the (square, one-channel) images."""
    downsamples: int = 2
    """Stride-2 convolutions: the code grid is S / 2^downsamples on a side."""
    hidden: Count = 64
    """Channels of the code-grid stage (half of it after the first stride-2 convolution)."""
    res_hidden: Count = 32
    """Channels inside each residual block."""
    res_layers: Index = 2
    """Residual blocks in the encoder and in the decoder."""
    num_codes: Count = 128
    """K, the codebook size."""
    code_dim: Count = 32
    """D, the dimension of a code."""
    beta: NonNegative = 0.25
    """Weight of the commitment term."""
    ema: bool = True
    """EMA codebook updates (else the codebook loss)."""
    decay: Rate = 0.99
    """EMA decay of the codebook and of the usage counts."""
    dead_threshold: NonNegative = 1.0
    """Restart codes whose EMA usage (vectors per batch) falls below this; 0: never."""
    kmeans_init: bool = False
    """Set the codebook by k-means on the first training batch."""
    data_std: Positive = 0.3081
    """Standard deviation of the pixels: the reconstruction term is MSE / data_std^2 (MNIST train's)."""

    def __post_init__(self) -> None:
        if self.downsamples < 1 or self.image_size % 2**self.downsamples:
            raise ValueError(
                f"image_size {self.image_size} must divide by 2^downsamples = 2^{self.downsamples}"
            )


class VQVAE(nn.Module):
    def __init__(self, config: VQVAEConfig = VQVAEConfig()) -> None:
        super().__init__()
        self.config = c = config
        widths = [1, c.hidden // 2] + [c.hidden] * (c.downsamples - 1)  # 1 -> hidden/2 -> hidden ...
        down: list[nn.Module] = []
        for a, b in zip(widths, widths[1:]):
            down += [nn.Conv2d(a, b, 4, 2, 1), nn.ReLU()]  # halves the side
        self.encoder = nn.Sequential(
            *down,
            nn.Conv2d(c.hidden, c.hidden, 3, 1, 1),
            ResidualStack(c.hidden, c.res_hidden, c.res_layers),
            nn.Conv2d(c.hidden, c.code_dim, 1),
        )
        self.quantizer = VectorQuantizer(
            c.num_codes, c.code_dim, c.beta, ema=c.ema, decay=c.decay,
            dead_threshold=c.dead_threshold, kmeans_init=c.kmeans_init,
        )  # fmt: skip
        up: list[nn.Module] = []
        for a, b in zip(widths[::-1], widths[-2::-1]):
            up += [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.ReLU()]  # doubles the side
        self.decoder = nn.Sequential(
            nn.Conv2d(c.code_dim, c.hidden, 3, 1, 1),
            ResidualStack(c.hidden, c.res_hidden, c.res_layers),
            *up[:-1],  # no ReLU after the last layer
        )

    @property
    def num_codes(self) -> int:
        return self.config.num_codes

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w) of the code grid."""
        side = self.config.image_size // 2**self.config.downsamples
        return side, side

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """{"model": encoder and decoder, "codebook": the loss-trained codebook (none with EMA)}.

        A loss-trained codebook needs its own, larger learning rate: Adam moves each code by about
        lr per coordinate per step, while the encoder's outputs, moved by all encoder weights at
        once, drift an order of magnitude faster. Codes then fall behind, the commitment error
        grows, and codes restarted at the drifted encoder outputs land where the decoder has never
        been trained (docs/autoencoders.md)."""
        codebook = [p for p in self.quantizer.parameters()]
        rest = [p for name, p in self.named_parameters() if not name.startswith("quantizer.")]
        return {"model": rest, "codebook": codebook} if codebook else {"model": rest}

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{"loss", "recon" (MSE / Var[x]), "vq", "commit", "perplexity", "usage"}."""
        x = batch["x"]
        q = self.quantizer(self.encoder(x))
        recon = F.mse_loss(upcast(self.decoder(q.z_q)), x) / self.config.data_std**2
        return {"loss": recon + q.loss, "recon": recon, **q.terms()}

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 1, S, S) in [0, 1] -> codes (B, h, w); the codebook is left as it is in any mode."""
        return self.quantizer.nearest(self.encoder(x))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, h, w) -> images (B, 1, S, S) in [0, 1]."""
        return upcast(self.decoder(self.quantizer.lookup(codes))).clamp(0, 1)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
