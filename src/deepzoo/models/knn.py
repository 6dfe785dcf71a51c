"""k-nearest-neighbour classification with k chosen by k-fold cross-validation (the notes' recipe).

Distances are computed fully vectorized, a chunk of queries at a time:
    L2: ||q - t||^2 = ||q||^2 + ||t||^2 - 2 q.t   (one matrix product per chunk)
    L1: sum_d |q_d - t_d|                         (torch.cdist with p = 1)
Prediction is a majority vote among the k nearest training points; a tie between classes goes
to the tied class whose nearest member is closest (a deterministic rule). With `pca` = d, rows
are first projected onto the top d principal components of the training set (nn/preprocess.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from deepzoo.config import Count, Index, Range, Sizes, ranged
from deepzoo.nn.precision import upcast
from deepzoo.nn.preprocess import PCA

Folds = ranged(int, Range(2))


@dataclass(frozen=True)
class KNNConfig:
    k: Index = 0
    """Neighbours voting; 0 chooses k by cross-validation over `candidates`."""
    distance: Literal["l2", "l1"] = "l2"
    """l2 (Euclidean) or l1 (Manhattan), on raw pixels or their principal components."""
    pca: Index = 0
    """Compare the top this many principal components of the training set (0: raw pixels)."""
    candidates: Sizes = (1, 3, 5, 7, 9)
    """k values tried by cross-validation."""
    folds: Folds = 5
    """Cross-validation folds (contiguous blocks of the training set)."""
    chunk: Count = 1000
    """Queries per distance computation (bounds memory: chunk x N_train floats)."""
    num_classes: Count = 10
    """Classes of the labels."""


def pairwise_distances(queries: torch.Tensor, train: torch.Tensor, distance: str) -> torch.Tensor:
    """(Q, D), (N, D) -> (Q, N) L2 (squared) or L1 distances, in the rows' dtype (`embed` gives
    float32, or float64 for float64 inputs)."""
    with torch.autocast(queries.device.type, enabled=False):
        if distance == "l2":
            sq = queries.pow(2).sum(1, keepdim=True) + train.pow(2).sum(1) - 2 * queries @ train.T
            return sq.clamp(min=0)
        if distance == "l1":
            return torch.cdist(queries, train, p=1)
    raise ValueError(f"distance must be 'l2' or 'l1', got {distance!r}")


def nearest_neighbours(
    queries: torch.Tensor, train: torch.Tensor, k: int, distance: str, chunk: int
) -> torch.Tensor:
    """Indices (Q, k) of the k nearest training rows of each query, nearest first."""
    out = []
    for start in range(0, len(queries), chunk):
        d = pairwise_distances(queries[start : start + chunk], train, distance)
        out.append(d.topk(k, dim=1, largest=False, sorted=True).indices)
    return torch.cat(out)


def vote(neighbour_labels: torch.Tensor, k: int, num_classes: int) -> torch.Tensor:
    """Scores (Q, C) whose argmax is the majority label of the first k neighbours (nearest first);
    ties go to the tied class that appears first. Score = votes * (k + 1) + (k - first position)."""
    labels = neighbour_labels[:, :k]
    votes = torch.zeros(len(labels), num_classes, device=labels.device)
    votes.scatter_add_(1, labels, torch.ones_like(labels, dtype=votes.dtype))
    position = torch.arange(k, device=labels.device).expand_as(labels).float()
    first = torch.full_like(votes, float(k))
    first.scatter_reduce_(1, labels, position, reduce="amin")
    return votes * (k + 1) + (k - first)


def fold_bounds(n: int, folds: int) -> list[tuple[int, int]]:
    """[lo, hi) of each of `folds` contiguous folds covering range(n): the first n mod folds folds
    hold one example more (the course notebook's `np.array_split`, scikit-learn's `KFold`)."""
    if not 2 <= folds <= n:
        raise ValueError(f"need 2 <= folds <= {n} examples, got {folds}")
    size, extra = divmod(n, folds)
    edges = [i * size + min(i, extra) for i in range(folds + 1)]
    return list(zip(edges[:-1], edges[1:]))


def cross_validate(
    x: torch.Tensor,
    y: torch.Tensor,
    candidates: tuple[int, ...],
    folds: int,
    distance: str,
    chunk: int,
    num_classes: int,
) -> dict[int, float]:
    """Mean validation accuracy of each candidate k over `folds` contiguous folds."""
    n = len(x)
    k_max = max(candidates)
    accuracy = {k: 0.0 for k in candidates}
    for lo, hi in fold_bounds(n, folds):
        rest = torch.cat([torch.arange(0, lo), torch.arange(hi, n)]).to(x.device)
        neighbours = nearest_neighbours(x[lo:hi], x[rest], k_max, distance, chunk)
        labels = y[rest][neighbours]
        for k in candidates:
            predicted = vote(labels, k, num_classes).argmax(1)
            accuracy[k] += (predicted == y[lo:hi]).float().mean().item() / folds
    return accuracy


class KNN(nn.Module):
    """Memorizes a training set (`fit`) and classifies by the k nearest of it.
    x: (B, *) -> vote scores (B, C); the training set is not saved in checkpoints, only k."""

    def __init__(self, config: KNNConfig = KNNConfig()) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("k", torch.tensor(config.k))
        self.register_buffer("train_x", torch.empty(0), persistent=False)
        self.register_buffer("train_y", torch.empty(0, dtype=torch.long), persistent=False)
        self.pca = PCA(config.pca) if config.pca else None
        self.cv_accuracy: dict[int, float] = {}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, *) -> the rows distances are measured between: (B, D) pixels or (B, pca)."""
        return self.pca(x) if self.pca is not None else upcast(x.flatten(1))

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> KNN:
        """Store the training set; choose k by cross-validation if it is not set yet."""
        cfg = self.config
        n, k = len(x), int(self.k)
        if k > n:
            raise ValueError(f"k = {k} neighbours asked of a training set of {n} examples")
        held_in = n - math.ceil(n / max(cfg.folds, 1))  # the smallest part a fold trains on
        if k == 0 and max(cfg.candidates) > held_in:
            raise ValueError(
                f"candidates up to k = {max(cfg.candidates)} need more than the {held_in} examples "
                f"each of {cfg.folds} folds trains on"
            )
        if self.pca is not None:
            self.pca.fit(x)  # on the whole training set, before the folds (PCA is unsupervised)
        self.train_x, self.train_y = self.embed(x), y.long()
        if k == 0:
            self.cv_accuracy = cross_validate(
                self.train_x,
                self.train_y,
                cfg.candidates,
                cfg.folds,
                cfg.distance,
                cfg.chunk,
                cfg.num_classes,
            )
            best = max(self.cv_accuracy.values())
            self.k.fill_(min(k for k, acc in self.cv_accuracy.items() if acc == best))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.train_x.numel() == 0:
            raise RuntimeError("KNN.fit(x, y) must be called before classifying")
        k = int(self.k)
        neighbours = nearest_neighbours(
            self.embed(x), self.train_x, k, self.config.distance, self.config.chunk
        )
        return vote(self.train_y[neighbours], k, self.config.num_classes)
