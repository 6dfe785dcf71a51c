"""Likelihood estimates in nats (binarized data) or bits per dimension.

The importance-weighted bound (Burda et al., 2016) with k samples z_i ~ q(z|x):

    log p(x) >= L_k = log (1/k) sum_i p(x, z_i) / q(z_i|x),    L_1 <= L_k <= L_{k+1} <= log p(x)

(L_1's expectation is the ELBO; the bound tightens in expectation as k grows.)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from deepzoo.data.tensors import TensorData

LogWeights = Callable[[torch.Tensor, int, torch.Tensor | None], torch.Tensor]
"""(x (B, ...), k, y or None) -> log importance weights (k, B)."""


def importance_weighted_bound(
    log_weights: LogWeights, x: torch.Tensor, k: int, chunk: int = 100, y: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_k, ELBO estimate) per example, each (B,), drawing the k samples `chunk` at a time so that
    memory stays at chunk * B decoder outputs: logsumexp is accumulated over chunks."""
    if k < 1 or chunk < 1:
        raise ValueError(f"need k >= 1 and chunk >= 1, got k={k}, chunk={chunk}")
    running = torch.full((len(x),), -math.inf, device=x.device, dtype=torch.float64)
    total = torch.zeros(len(x), device=x.device, dtype=torch.float64)
    done = 0
    while done < k:
        size = min(chunk, k - done)
        w = log_weights(x, size, y).double()
        running = torch.logaddexp(running, torch.logsumexp(w, dim=0))
        total += w.sum(dim=0)
        done += size
    return running - math.log(k), total / k


@torch.no_grad()
def iwae_nll(
    log_weights: LogWeights,
    data: TensorData,
    k: int,
    batch_size: int = 100,
    chunk: int = 100,
    conditional: bool = False,
) -> dict[str, float]:
    """Mean over `data` of -L_k ("nll", an upper bound of the test NLL) and of -ELBO ("neg_elbo"),
    in nats per example."""
    nll = elbo = 0.0
    for batch in data.batches(batch_size):
        y = batch["y"] if conditional else None
        bound, lower = importance_weighted_bound(log_weights, batch["x"], k, chunk, y)
        nll -= bound.sum().item()
        elbo += lower.sum().item()
    return {"nll": nll / len(data), "neg_elbo": -elbo / len(data)}


def bits_per_dim(nats: float, dims: int) -> float:
    """Nats per example -> bits per dimension."""
    return nats / (dims * math.log(2))
