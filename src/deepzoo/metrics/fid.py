"""Fréchet distance between Gaussians fitted to features (Heusel et al., 2017):

    d^2 = ||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1^{1/2} S_2 S_1^{1/2})^{1/2})

On MNIST the features come from deepzoo's own shipped classifier ("classifier FID"), so the
numbers compare across deepzoo models, not with Inception-based FIDs of other papers. Larger
images of digits (the 64x64 scenes) use the same classifier slid over every 28x28-sized window,
its features averaged over the windows ("scene FID", `scene_fid`): the analogue of Inception's
spatially pooled features.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from deepzoo.data.tensors import EVAL_BATCH


def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need features of shape (N >= 2, D), got {tuple(features.shape)}")
    f = features.detach().double()
    mu = f.mean(dim=0)
    centered = f - mu
    return mu, centered.T @ centered / (f.shape[0] - 1)


def _sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix through its eigendecomposition."""
    eigenvalues, eigenvectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return eigenvectors @ torch.diag(eigenvalues.clamp(min=0).sqrt()) @ eigenvectors.T


def frechet_distance(
    mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor
) -> float:
    """d^2 between N(mu1, sigma1) and N(mu2, sigma2). tr((S1 S2)^{1/2}) is computed as the sum of
    square roots of the eigenvalues of the symmetric PSD matrix S1^{1/2} S2 S1^{1/2}."""
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    root1 = _sqrtm_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    distance = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return float(distance.clamp(min=0))


@torch.no_grad()
def extract_features(net: nn.Module, images: torch.Tensor, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """net.features over images (N, C, H, W) in [0, 1], in batches: (N, D) float32."""
    device = next(net.parameters()).device
    return torch.cat(
        [
            net.features(images[i : i + batch_size].to(device).float()).float()
            for i in range(0, len(images), batch_size)
        ]
    )


def classifier_fid(images_a: torch.Tensor, images_b: torch.Tensor, net: nn.Module | None = None) -> float:
    """Fréchet distance between two MNIST-like image sets (N, 1, 28, 28) in [0, 1], measured on the
    shipped feature classifier (or `net`)."""
    if net is None:
        from deepzoo.models.features import mnist_feature_net

        net = mnist_feature_net()
    stats_a = feature_statistics(extract_features(net, images_a))
    stats_b = feature_statistics(extract_features(net, images_b))
    return frechet_distance(*stats_a, *stats_b)


@torch.no_grad()
def sample_quality(
    samples: torch.Tensor,
    reference: torch.Tensor,
    labels: torch.Tensor | None = None,
    net: nn.Module | None = None,
) -> dict[str, float]:
    """{"fid": classifier-FID between samples and reference images (N, 1, 28, 28) in [0, 1],
    "label_entropy": H(h) in nats of the histogram h of the labels the feature classifier predicts
    for the samples (log 10 = 2.303 when every digit is equally frequent; a collapse onto a few
    modes lowers it)} and, for class-conditional samples, {"label_accuracy": share labelled as asked}."""
    if net is None:
        from deepzoo.models.features import mnist_feature_net

        net, reference_stats = mnist_feature_net(), shipped_net_statistics(reference)
    else:
        reference_stats = feature_statistics(extract_features(net, reference))
    features = extract_features(net, samples)
    out = {"fid": frechet_distance(*feature_statistics(features), *reference_stats)}
    predicted = net.head(features.to(next(net.parameters()).device)).argmax(dim=1).cpu()
    out["label_entropy"] = label_entropy(predicted)
    if labels is not None:
        out["label_accuracy"] = (predicted == labels.cpu()).float().mean().item()
    return out


_REFERENCE_STATISTICS: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


def shipped_net_statistics(images: torch.Tensor, scenes: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """feature_statistics of images on the shipped feature classifier (`scene_features` when
    `scenes`), remembered in memory and on disk (`cache_root()/fid-statistics`): a reference set
    such as the MNIST test split is scored at every evaluation of every run, and extracting its
    features takes seconds (13 s for the 10,000 test images on one core), hashing it 30 ms.
    The key (`_statistics_key`) holds everything the value depends on, so a cached file is
    never stale; an unreadable one is computed again and replaced."""
    key = _statistics_key(images, scenes)
    if key not in _REFERENCE_STATISTICS:
        _REFERENCE_STATISTICS[key] = _stored_statistics(key) or _compute_statistics(images, scenes, key)
    return _REFERENCE_STATISTICS[key]


def _statistics_key(images: torch.Tensor, scenes: bool) -> str:
    """SHA-1 of the images' dtype, shape and bytes, `scenes`, the feature network's weights and
    code (this module, models/features.py, models/classifier.py), the torch version, the CPU's
    kernels and the autocast state the features are extracted under (bf16 changes them)."""
    from deepzoo.models import classifier, features

    data = images.detach().cpu().contiguous()
    digest = hashlib.sha1(str((data.dtype, tuple(data.shape), scenes)).encode())
    digest.update(data.view(torch.uint8).numpy().tobytes())
    for path in (features.WEIGHTS, Path(__file__), Path(features.__file__), Path(classifier.__file__)):
        digest.update(path.read_bytes())
    autocast = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")
    digest.update(str((torch.__version__, torch.backends.cpu.get_cpu_capability(), autocast)).encode())
    return digest.hexdigest()


def _statistics_file(key: str) -> Path:
    from deepzoo.data.root import cache_root

    return cache_root() / "fid-statistics" / f"{key}.safetensors"


def _stored_statistics(key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        stored = load_file(_statistics_file(key))
        return stored["mu"], stored["sigma"]
    except (OSError, SafetensorError, KeyError):
        return None


def _compute_statistics(images: torch.Tensor, scenes: bool, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    from safetensors.torch import save

    from deepzoo.files import write_cache
    from deepzoo.models.features import mnist_feature_net

    data = images.detach().cpu()
    features = scene_features(data) if scenes else extract_features(mnist_feature_net(), data)
    mu, sigma = feature_statistics(features)
    write_cache(_statistics_file(key), save({"mu": mu.contiguous(), "sigma": sigma.contiguous()}))
    return mu, sigma


@torch.no_grad()
def scene_features(images: torch.Tensor, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """images (N, 1, H, W) in [0, 1], H, W >= 28 -> (N, 128): the shipped classifier's features of
    every 28x28-sized window (8 pixels apart; `models.features.window_features`), averaged."""
    from deepzoo.models.features import mnist_feature_net, window_features

    net = mnist_feature_net()
    return torch.cat(
        [
            window_features(net, images[i : i + batch_size].float()).mean((2, 3))
            for i in range(0, len(images), batch_size)
        ]
    )


def scene_fid(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Fréchet distance between the `scene_features` of images and of a reference set (whose
    statistics are remembered)."""
    stats = feature_statistics(scene_features(images.cpu()))
    return frechet_distance(*stats, *shipped_net_statistics(reference, scenes=True))


def label_entropy(labels: torch.Tensor, num_classes: int = 10) -> float:
    """Entropy in nats of the empirical distribution of integer labels (N,): -sum_k h_k log h_k."""
    h = torch.bincount(labels.flatten(), minlength=num_classes).double() / labels.numel()
    return float(-(h[h > 0] * h[h > 0].log()).sum()) + 0.0  # + 0.0: no -0.0 for one label
