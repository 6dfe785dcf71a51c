"""Vector quantization (van den Oord et al., 2017, "Neural Discrete Representation Learning").

Each vector z_i (dim D) is replaced by its nearest code e_k of a codebook E (K, D):

    k_i = argmin_k ||z_i - e_k||^2 = argmin_k (||e_k||^2 - 2 z_i . e_k)     (||z_i||^2 is common)
    z_q = z + sg[e_k - z]                      (straight-through: dL/dz = dL/dz_q)
    L_vq = ||sg[z] - e_k||^2 + beta ||z - sg[e_k]||^2

The first term (codebook) moves codes only, the second (commitment, weighted by beta) moves the
encoder only. With `ema=True` the codebook is not learned by gradients but is the running mean of
the vectors assigned to each code (Appendix A.1 of the paper), with Laplace-smoothed counts:

    N_k <- d N_k + (1 - d) n_k,     m_k <- d m_k + (1 - d) sum_{i: k_i = k} z_i
    e_k = m_k / ((N_k + eps) / (sum_j N_j + K eps) * sum_j N_j)

A code whose usage N_k falls below `dead_threshold` is restarted from a random vector of the
batch. Usage counts are kept in both modes (they drive the restart and the `usage` metric).

With `normalize=True` (Yu et al., 2022, "Vector-quantized Image Modeling with Improved VQGAN")
both z and the codes are l2-normalized before the lookup, so the nearest code is the one of
largest cosine similarity and every distance lies in [0, 4]; combined with a small code dimension
(the "factorized" codes: the encoder projects to D of 4-32) this keeps far more codes in use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from deepzoo.nn.precision import compute_dtype, upcast


@dataclass
class Quantized:
    """What `VectorQuantizer` returns. `codes` has the input's shape without the channel axis."""

    z_q: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor
    """The term to add to the model's loss: codebook term (gradient mode only) + beta * commitment."""
    codebook: torch.Tensor
    """||sg[z] - e||^2 (logged; its gradient reaches the codebook only, and only without EMA)."""
    commit: torch.Tensor
    """||z - sg[e]||^2, unweighted (its gradient reaches the encoder only)."""
    perplexity: torch.Tensor
    """exp(entropy) of the batch's code histogram: the effective number of codes in use."""
    usage: torch.Tensor
    """Fraction of the K codes used at least once in the batch."""

    def terms(self) -> dict[str, torch.Tensor]:
        return {
            "vq": self.codebook,
            "commit": self.commit,
            "perplexity": self.perplexity,
            "usage": self.usage,
        }


def perplexity(codes: torch.Tensor, num_codes: int) -> torch.Tensor:
    """exp(-sum_k p_k log p_k) with p the histogram of `codes` over num_codes codes."""
    p = torch.bincount(codes.flatten(), minlength=num_codes).float() / codes.numel()
    return torch.exp(-torch.special.xlogy(p, p).sum())


def nearest_code(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """x (N, D), codebook (K, D) -> argmin_k ||x_n - e_k||^2 as (N,), in float32 (float64 stays).

    ||x||^2 is the same for every k, so argmin_k (||e_k||^2 - 2 x.e_k): one matmul, one argmin."""
    dtype = compute_dtype(torch.promote_types(x.dtype, codebook.dtype))
    x, codebook = x.to(dtype), codebook.to(dtype)
    scores = torch.addmm(codebook.pow(2).sum(1), x, codebook.t(), beta=1.0, alpha=-2.0)
    return scores.argmin(dim=1)


def kmeans(
    x: torch.Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Lloyd's k-means on x (N, D): k centroids (k, D), started from k random rows of x (with
    replacement when N < k); an empty cluster keeps its centroid."""
    if len(x) >= k:  # k distinct rows: a repeated row would leave its twin's cluster empty
        start = torch.randperm(len(x), generator=generator, device="cpu")[:k].to(x.device)
    else:
        start = torch.randint(len(x), (k,), generator=generator, device="cpu").to(x.device)
    centroids = x[start].clone()
    for _ in range(iters):
        assign = nearest_code(x, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1).to(x.dtype)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
    return centroids


def _all_reduce(*tensors: torch.Tensor) -> None:
    if dist.is_available() and dist.is_initialized():
        for t in tensors:
            dist.all_reduce(t)


class VectorQuantizer(nn.Module):
    """Quantizes (B, C, H, W) (channels first), (B, T, C) or (N, C) (channels last) with C = dim.

    Args:
        num_codes: K, the codebook size.
        dim: D, the code dimension.
        beta: weight of the commitment term ||z - sg[e]||^2.
        ema: update codes by exponential moving averages (else by the codebook loss).
        decay: the EMA decay d (used for the usage counts in both modes).
        eps: Laplace smoothing of the EMA counts.
        dead_threshold: restart codes whose EMA usage count falls below this (0: never).
        kmeans_init: set the codebook by k-means on the first training batch.
        normalize: l2-normalize the inputs and the codes (cosine-similarity lookup).
    """

    def __init__(
        self,
        num_codes: int,
        dim: int,
        beta: float = 0.25,
        ema: bool = True,
        decay: float = 0.99,
        eps: float = 1e-5,
        dead_threshold: float = 0.0,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        if num_codes < 1 or dim < 1:
            raise ValueError(f"need num_codes >= 1 and dim >= 1, got {num_codes} and {dim}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.num_codes, self.dim, self.beta = num_codes, dim, beta
        self.ema, self.decay, self.eps = ema, decay, eps
        self.dead_threshold, self.kmeans_init, self.kmeans_iters = dead_threshold, kmeans_init, kmeans_iters
        self.normalize = normalize
        codebook = torch.randn(num_codes, dim)
        if normalize:
            codebook = F.normalize(codebook, dim=1)
        if ema:
            self.register_buffer("codebook", codebook)
            self.register_buffer("code_sum", codebook.clone())
        else:
            self.codebook = nn.Parameter(codebook)
        self.register_buffer("code_count", torch.ones(num_codes))
        self.register_buffer("initialized", torch.tensor(not kmeans_init))

    # ---------------------------------------------------------------- layout
    def _flatten(self, z: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        if z.ndim == 4:
            z = z.permute(0, 2, 3, 1)
        elif z.ndim not in (2, 3):
            raise ValueError(f"expected (B, C, H, W), (B, T, C) or (N, C), got shape {tuple(z.shape)}")
        if z.shape[-1] != self.dim:
            raise ValueError(f"expected {self.dim} channels, got shape {tuple(z.shape)}")
        return z.reshape(-1, self.dim), z.shape[:-1]

    def codes(self) -> torch.Tensor:
        """The codebook as used (K, D): l2-normalized rows when `normalize`."""
        return F.normalize(self.codebook, dim=1) if self.normalize else self.codebook

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, H, W) -> (B, D, H, W); (B, T) -> (B, T, D); (N,) -> (N, D)."""
        e = F.embedding(codes, self.codes())
        return e.permute(0, 3, 1, 2) if codes.ndim == 3 else e

    @torch.no_grad()
    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """The codes `forward` would choose for z (its layouts), without touching the codebook:
        no EMA update, restart or k-means start even in training mode (an encoder's `encode`).
        (B, C, H, W) -> (B, H, W); (B, T, C) -> (B, T); (N, C) -> (N,)."""
        with torch.autocast(z.device.type, enabled=False):
            flat, grid = self._flatten(upcast(z))
            if self.normalize:
                flat = F.normalize(flat, dim=1)
            return nearest_code(flat, self.codes()).reshape(grid)

    # ---------------------------------------------------------------- forward
    def forward(self, z: torch.Tensor) -> Quantized:
        dtype = z.dtype
        with torch.autocast(z.device.type, enabled=False):
            flat, grid = self._flatten(upcast(z))
            if self.normalize:
                flat = F.normalize(flat, dim=1)
            if self.training and not bool(self.initialized):
                self._kmeans_init(flat.detach())
            codebook = self.codes()
            codes = nearest_code(flat.detach(), codebook.detach())
            # Quantize with the codebook that chose the codes: the update below must not leak
            # into this batch's z_q (F.embedding copies the rows; its backward needs no weights).
            e = F.embedding(codes, codebook)
            if self.training:
                self._update(flat.detach(), codes)
            codebook_term = F.mse_loss(e, flat.detach())
            commit = F.mse_loss(flat, e.detach())
            loss = self.beta * commit if self.ema else codebook_term + self.beta * commit
            z_q = flat + (e - flat).detach()
            z_q = z_q.reshape(*grid, self.dim)
            if z.ndim == 4:
                z_q = z_q.permute(0, 3, 1, 2)
            with torch.no_grad():
                usage = (torch.bincount(codes, minlength=self.num_codes) > 0).float().mean()
                ppl = perplexity(codes, self.num_codes)
        return Quantized(z_q.to(dtype), codes.reshape(grid), loss, codebook_term, commit, ppl, usage)

    @torch.no_grad()
    def _kmeans_init(self, flat: torch.Tensor) -> None:
        centroids = kmeans(flat, self.num_codes, self.kmeans_iters)
        if self.normalize:
            centroids = F.normalize(centroids, dim=1)
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(centroids, 0)
        self.codebook.data.copy_(centroids)
        if self.ema:
            self.code_sum.copy_(centroids)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, codes: torch.Tensor) -> None:
        """EMA counts (both modes), EMA codebook (ema mode), then dead-code restart."""
        counts = torch.bincount(codes, minlength=self.num_codes).to(self.code_count.dtype)
        sums = torch.zeros_like(self.codebook).index_add_(0, codes, flat) if self.ema else None
        _all_reduce(*(t for t in (counts, sums) if t is not None))
        self.code_count.lerp_(counts, 1.0 - self.decay)
        if self.ema:
            self.code_sum.lerp_(sums, 1.0 - self.decay)
            n = self.code_count.sum()
            smoothed = (self.code_count + self.eps) / (n + self.num_codes * self.eps) * n
            means = self.code_sum / smoothed.unsqueeze(1)
            self.codebook.copy_(F.normalize(means, dim=1) if self.normalize else means)
        if self.dead_threshold > 0:
            self._restart_dead(flat, counts)

    @torch.no_grad()
    def _restart_dead(self, flat: torch.Tensor, counts: torch.Tensor) -> None:
        """Codes whose EMA count fell below dead_threshold, and that no vector of this batch
        chose, take random vectors of the batch."""
        dead = (self.code_count < self.dead_threshold) & (counts == 0)
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        pick = torch.randint(len(flat), (n_dead,), device=flat.device)
        fresh = flat[pick]
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(fresh, 0)
        self.codebook.data[dead] = fresh
        self.code_count[dead] = self.dead_threshold
        if self.ema:
            self.code_sum[dead] = fresh * self.dead_threshold
