"""Data preprocessing of the course notes: PCA and PCA whitening, fitted to a training set."""

from __future__ import annotations

import torch
from torch import nn

from deepzoo.nn.precision import compute_dtype


class PCA(nn.Module):
    """Principal component analysis of training rows x: (N, D):

        mu = mean(x),   C = (x - mu)^T (x - mu) / (N - 1) = U diag(lambda) U^T,  lambda descending
        z = (x - mu) U_d                                   (B, d): the top d components
        z = (x - mu) U_d diag(lambda_d + eps)^(-1/2)       whitened: cov(z) = I on the training set

    Each component's sign makes its largest-magnitude entry positive (the eigenvectors' sign is
    arbitrary; this fixes it by scikit-learn's rule, `svd_flip(u_based_decision=False)` since
    scikit-learn 1.5, so the components and projections equal its PCA's). Whitening adds eps to
    the variances (scikit-learn's adds none). Inputs of any shape (B, *) are flattened and fitted
    in float32, float64 ones in float64. The fitted statistics are not saved in checkpoints:
    `fit` again.
    """

    def __init__(self, dims: int, whiten: bool = False, eps: float = 1e-5) -> None:
        super().__init__()
        if dims < 1:
            raise ValueError(f"PCA needs dims >= 1, got {dims}")
        self.dims, self.whiten, self.eps = dims, whiten, eps
        self.register_buffer("mean", torch.empty(0), persistent=False)
        self.register_buffer("components", torch.empty(0), persistent=False)  # (D, d): U_d
        self.register_buffer("variances", torch.empty(0), persistent=False)  # (d,): lambda_d

    def fit(self, x: torch.Tensor) -> PCA:
        x = x.flatten(1)
        x = x.to(compute_dtype(x.dtype))
        N, D = x.shape
        if N < 2 or self.dims > D:
            raise ValueError(
                f"PCA of {self.dims} components needs >= 2 rows of >= {self.dims} values, got {N} x {D}"
            )
        mean = x.mean(0)
        centred = x - mean
        covariance = (centred.T @ centred).double() / (N - 1)  # input-dtype product, float64 eigensolver
        variances, vectors = torch.linalg.eigh(covariance)  # ascending
        variances, vectors = variances.flip(0)[: self.dims], vectors.flip(1)[:, : self.dims]
        rows = vectors.abs().argmax(0)
        vectors = vectors * vectors[rows, torch.arange(self.dims)].sign()
        self.mean, self.components = mean, vectors.to(x.dtype)
        self.variances = variances.clamp(min=0).to(x.dtype)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, *) -> z: (B, d)."""
        if self.components.numel() == 0:
            raise RuntimeError("PCA.fit(x) must be called before transforming")
        z = (x.flatten(1).to(self.mean.dtype) - self.mean) @ self.components
        return z * (self.variances + self.eps).rsqrt() if self.whiten else z
