"""Regularization through the training data: random rotations, zooms, shears and stretches,
translations, cutout, mixup and label smoothing. Each acts on one training batch x: (B, C, H, W)
in pixel space and leaves evaluation alone; randomness comes from `generator` or torch's global
generator (which the trainer's checkpoints save, so a resumed run draws the same augmentations).

- affine (the course's "rotation, scales, stretching, shearing"): each image rotated by
  a ~ U(-deg, deg), counter-clockwise as displayed (rows down; torch.rot90's and torchvision's
  direction), zoomed by s ~ U(1 - r, 1 + r) about its centre and sheared along x by
  phi ~ U(-shear, shear), sampled bilinearly, zero outside. In pixel coordinates (x right, y down)
  about the centre, output p takes input (1 / s) S(phi) R(a) p with S(phi) = [[1, -tan phi], [0, 1]]:
  the content is sheared first, then rotated and zoomed (torchvision's order), and shearing moves
  row y of the image y tan(phi) pixels to the right (our sign; the draws are symmetric). Non-square
  images rotate without shear. Stretching zooms the two axes apart, s t along x and s / t along y
  with t ~ U(1 - stretch, 1 + stretch): input (S(phi) R(a) diag(1 / (s t), t / s)) p. (torchvision's
  RandomAffine samples nearest pixels by default.)
- translate (ResNet's "pad by 4, random 32 x 32 crop" on CIFAR, He et al., 2016, with pad s):
  y[b, :, i, j] = x[b, :, i - dy_b, j - dx_b], zero outside x; dy_b, dx_b ~ U{-s, ..., s}.
- cutout (DeVries & Taylor, 2017): a size x size square centred at a uniform pixel
  (cy, cx) ~ U({0..H-1} x {0..W-1}) is set to zero, clipped at the border, so it may lie partly
  outside the image. Rows cy - size // 2 .. cy - size // 2 + size - 1 (their code's for even
  sizes). The paper zeroes normalized inputs (the mean); here pixel 0 (MNIST's background).
- mixup (Zhang et al., 2018): lambda ~ Beta(alpha, alpha), one per batch; pi a random
  permutation; x~ = lambda x + (1 - lambda) x[pi], and the loss
  L = lambda CE(f(x~), y) + (1 - lambda) CE(f(x~), y[pi]) (their official code's form).
- label smoothing (Szegedy et al., 2016): the target q = (1 - eps) onehot(y) + eps / K, as
  `F.cross_entropy(label_smoothing=eps)`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def affine_parameters(
    n: int,
    degrees: float,
    scale: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n,) angles in degrees ~ U(-degrees, degrees) and (n,) zooms ~ U(1 - scale, 1 + scale)."""
    if not 0 <= degrees <= 180 or not 0 <= scale < 1:
        raise ValueError(f"need 0 <= degrees <= 180 and 0 <= scale < 1, got {degrees} and {scale}")
    u = torch.rand(2, n, generator=generator, device=device) * 2 - 1  # U(-1, 1)
    return u[0] * degrees, 1 + u[1] * scale


def affine(
    x: torch.Tensor, angles: torch.Tensor, zooms: torch.Tensor, shears: torch.Tensor | None = None
) -> torch.Tensor:
    """x: (B, C, H, W) -> each image b sheared along x by shears[b] degrees (none when None), then
    rotated by angles[b] degrees (counter-clockwise as displayed) and zoomed about its centre by
    zooms[b] (B,), or by zooms[b, 0] along x and zooms[b, 1] along y (B, 2); bilinear, zero
    outside (see the module docstring)."""
    H, W = x.shape[-2:]
    a = angles.to(x.device, torch.float32) * (math.pi / 180)
    zooms = zooms.to(x.device, torch.float32)
    zx, zy = (zooms, zooms) if zooms.ndim == 1 else zooms.unbind(1)
    cos, sin = torch.cos(a), torch.sin(a)
    zero = torch.zeros_like(a)
    slope = zero if shears is None else torch.tan(shears.to(x.device, torch.float32) * (math.pi / 180))
    # M = S(phi) R(a) diag(1 / zx, 1 / zy) in pixels; normalized coordinates are pixels scaled by
    # 2 / W (x) and 2 / H (y): hence H / W and W / H off the diagonal
    theta = torch.stack(
        [
            torch.stack([(cos - slope * sin) / zx, (-sin - slope * cos) / zy * H / W, zero], 1),
            torch.stack([sin / zx * W / H, cos / zy, zero], 1),
        ],
        1,
    )  # (B, 2, 3): input coordinates of each output coordinate
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)


def random_affine(
    x: torch.Tensor,
    degrees: float,
    scale: float,
    generator: torch.Generator | None = None,
    shear: float = 0.0,
    stretch: float = 0.0,
) -> torch.Tensor:
    """`affine` with each image's angle and zoom s drawn by `affine_parameters`, then, when shear
    > 0, its shear angle ~ U(-shear, shear) degrees, then, when stretch > 0, its aspect
    t ~ U(1 - stretch, 1 + stretch): zoom s t along x and s / t along y (the area kept). Drawn in
    this order, so runs without shear or stretch draw as before; the identity when every range is 0."""
    if not 0 <= shear < 90 or not 0 <= stretch < 1:
        raise ValueError(f"need 0 <= shear < 90 degrees and 0 <= stretch < 1, got {shear} and {stretch}")
    if degrees == 0 and scale == 0 and shear == 0 and stretch == 0:
        return x
    device = generator_device(generator, x)
    angles, zooms = affine_parameters(len(x), degrees, scale, generator, device)
    shears = (torch.rand(len(x), generator=generator, device=device) * 2 - 1) * shear if shear else None
    if stretch:
        aspect = 1 + (torch.rand(len(x), generator=generator, device=device) * 2 - 1) * stretch
        zooms = torch.stack([zooms * aspect, zooms / aspect], 1)
    return affine(x, angles, zooms, shears)


def random_translate(
    x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """x: (B, C, H, W) -> each image shifted by its own (dy, dx) in {-s..s}^2, zero-filled."""
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    if max_shift == 0:
        return x
    B, C, H, W = x.shape
    s = max_shift
    shifts = torch.randint(-s, s + 1, (2, B), generator=generator, device=generator_device(generator, x))
    dy, dx = shifts.to(x.device)
    padded = F.pad(x, (s, s, s, s))  # (B, C, H + 2s, W + 2s); x[i] sits at padded[i + s]
    rows = (s - dy)[:, None] + torch.arange(H, device=x.device)  # (B, H): y[i] = padded[i + s - dy]
    cols = (s - dx)[:, None] + torch.arange(W, device=x.device)  # (B, W)
    b = torch.arange(B, device=x.device)[:, None, None, None]
    c = torch.arange(C, device=x.device)[None, :, None, None]
    return padded[b, c, rows[:, None, :, None], cols[:, None, None, :]]


def cutout(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """x: (B, C, H, W) -> x with one size x size square per image set to 0 (see the module docstring)."""
    if size < 0:
        raise ValueError(f"cutout size must be >= 0, got {size}")
    if size == 0:
        return x
    B, _, H, W = x.shape
    device = generator_device(generator, x)
    cy = torch.randint(0, H, (B,), generator=generator, device=device).to(x.device)
    cx = torch.randint(0, W, (B,), generator=generator, device=device).to(x.device)
    top, left = cy - size // 2, cx - size // 2
    rows = torch.arange(H, device=x.device)[None, :] - top[:, None]  # (B, H): row offset in the square
    cols = torch.arange(W, device=x.device)[None, :] - left[:, None]
    inside = ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]
    return x.masked_fill(inside[:, None], 0.0)


def mixup(
    x: torch.Tensor, y: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """x: (B, ...), y: (B,) -> (x~, y, y[pi], lambda) with x~ = lambda x + (1 - lambda) x[pi],
    lambda ~ Beta(alpha, alpha) and pi a random permutation (torch's global generator)."""
    if alpha <= 0:
        raise ValueError(f"mixup alpha must be > 0, got {alpha}")
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(len(x), device=x.device)
    return lam * x + (1 - lam) * x[perm], y, y[perm], lam


def mixed_cross_entropy(
    logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, lam: float, label_smoothing: float = 0.0
) -> torch.Tensor:
    """lambda CE(logits, y_a) + (1 - lambda) CE(logits, y_b), each with label smoothing eps:
    the cross-entropy against the mixed target lambda q(y_a) + (1 - lambda) q(y_b)."""
    ce = F.cross_entropy(logits, y_a, label_smoothing=label_smoothing)
    if lam == 1.0:
        return ce
    return lam * ce + (1 - lam) * F.cross_entropy(logits, y_b, label_smoothing=label_smoothing)


def generator_device(generator: torch.Generator | None, x: torch.Tensor) -> torch.device:
    """Where draws from `generator` must be made: its own device, else x's (the global generator)."""
    return generator.device if generator is not None else x.device
