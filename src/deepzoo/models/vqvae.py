"""VQ-VAE (van den Oord et al., 2017) on 28x28 images, and an autoregressive GPT prior over its
code grid (the paper used a PixelCNN; the two-stage idea is the same).

Stage 1. x (B, 1, 28, 28) in [0, 1] -> E(x) (B, D, 7, 7) -> nearest codes k (B, 7, 7) ->
e_k (B, D, 7, 7) -> D(e_k) = x_hat. Loss, per the paper, with the reconstruction scaled by the
data variance:

    L = ||x - x_hat||^2 / Var[x] + ||sg[E(x)] - e_k||^2 + beta ||E(x) - sg[e_k]||^2

(the codebook term is replaced by EMA updates when the quantizer uses them).

Stage 2. The 49 codes in raster order, preceded by a class token K + y, are a sequence for a GPT
with vocabulary K + 10: p(k_1..k_49 | y) = prod_t p(k_t | k_<t, y). Sampling draws codes
(ids < K) and decodes them with the frozen stage-1 decoder.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from deepzoo.models.gpt import GPT, GPTConfig
from deepzoo.nn.quantize import VectorQuantizer
from deepzoo.nn.residual import ResidualStack


@dataclass(frozen=True)
class VQVAEConfig:
    hidden: int = 64
    """Channels of the 7x7 stage (half of it at 14x14)."""
    res_hidden: int = 32
    """Channels inside each residual block."""
    res_layers: int = 2
    """Residual blocks in the encoder and in the decoder."""
    num_codes: int = 128
    """K, the codebook size."""
    code_dim: int = 32
    """D, the dimension of a code."""
    beta: float = 0.25
    """Weight of the commitment term."""
    ema: bool = True
    """EMA codebook updates (else the codebook loss)."""
    decay: float = 0.99
    """EMA decay of the codebook and of the usage counts."""
    dead_threshold: float = 1.0
    """Restart codes whose EMA usage (vectors per batch) falls below this; 0: never."""
    kmeans_init: bool = False
    """Set the codebook by k-means on the first training batch."""
    data_std: float = 0.3081
    """Standard deviation of the pixels: the reconstruction term is MSE / data_std^2 (MNIST train's)."""


class VQVAE(nn.Module):
    def __init__(self, config: VQVAEConfig = VQVAEConfig()) -> None:
        super().__init__()
        self.config = c = config
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c.hidden // 2, 4, 2, 1), nn.ReLU(),  # 28 -> 14
            nn.Conv2d(c.hidden // 2, c.hidden, 4, 2, 1), nn.ReLU(),  # 14 -> 7
            nn.Conv2d(c.hidden, c.hidden, 3, 1, 1),
            ResidualStack(c.hidden, c.res_hidden, c.res_layers),
            nn.Conv2d(c.hidden, c.code_dim, 1),
        )  # fmt: skip
        self.quantizer = VectorQuantizer(
            c.num_codes, c.code_dim, c.beta, ema=c.ema, decay=c.decay,
            dead_threshold=c.dead_threshold, kmeans_init=c.kmeans_init,
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Conv2d(c.code_dim, c.hidden, 3, 1, 1),
            ResidualStack(c.hidden, c.res_hidden, c.res_layers),
            nn.ConvTranspose2d(c.hidden, c.hidden // 2, 4, 2, 1), nn.ReLU(),  # 7 -> 14
            nn.ConvTranspose2d(c.hidden // 2, 1, 4, 2, 1),  # 14 -> 28
        )  # fmt: skip

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
        recon = F.mse_loss(self.decoder(q.z_q).float(), x) / self.config.data_std**2
        return {"loss": recon + q.loss, "recon": recon, **q.terms()}

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 1, 28, 28) -> codes (B, 7, 7)."""
        return self.quantizer(self.encoder(x)).codes

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, 7, 7) -> images (B, 1, 28, 28) in [0, 1]."""
        return self.decoder(self.quantizer.lookup(codes)).float().clamp(0, 1)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


@dataclass(frozen=True)
class CodePriorConfig:
    vqvae: VQVAEConfig = VQVAEConfig()
    """The stage-1 model (copied from its run; its weights are frozen)."""
    gpt: GPTConfig = GPTConfig(vocab_size=0, block_size=49, layers=4, heads=4, dim=128, positions="learned")
    """vocab_size 0 means num_codes + num_classes; block_size must be the 49 codes."""
    num_classes: int = 10
    """Classes of the label token that starts each sequence."""
    temperature: float = 1.0
    """Sampling temperature of the prior."""
    top_k: int = 0
    """Sample from the top-k codes only (0: all)."""


class CodePrior(nn.Module):
    """A class-conditional GPT over a frozen VQ-VAE's code grid; `sample` returns images."""

    def __init__(self, config: CodePriorConfig = CodePriorConfig()) -> None:
        super().__init__()
        self.config = config
        self.vqvae = VQVAE(config.vqvae).requires_grad_(False).eval()
        vocab = config.vqvae.num_codes + config.num_classes
        gpt = config.gpt
        if gpt.vocab_size not in (0, vocab):
            raise ValueError(f"the prior's vocabulary must be num_codes + num_classes = {vocab}")
        self.gpt = GPT(replace(gpt, vocab_size=vocab))

    def train(self, mode: bool = True) -> CodePrior:
        super().train(mode)
        self.vqvae.eval()  # frozen: no EMA updates, no restarts
        return self

    def tokens(self, codes: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """codes (B, 7, 7), y (B,) -> [K + y, k_1, ..., k_49] (B, 50)."""
        start = (self.config.vqvae.num_codes + y).unsqueeze(1)
        return torch.cat([start, codes.flatten(1)], dim=1)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Cross-entropy of the codes in nats per code (batch: "codes" (B, 7, 7), "y" (B,))."""
        return self.gpt.loss({"tokens": self.tokens(batch["codes"], batch["y"])})

    @torch.no_grad()
    def sample(
        self, n: int, *, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """n images of digits `labels` (default 0, 1, ..., 9, 0, ...), (n, 1, 28, 28) in [0, 1]."""
        device = self.gpt.embed.weight.device
        c = self.config
        y = torch.arange(n, device=device) % c.num_classes if labels is None else labels.to(device)
        prompt = (c.vqvae.num_codes + y).unsqueeze(1)
        tokens = self.gpt.generate(
            prompt, 49, c.temperature, c.top_k, generator=generator, max_token=c.vqvae.num_codes
        )
        return self.vqvae.decode(tokens[:, 1:].reshape(n, 7, 7))
