"""Pieces several recipe families share: training schedules, sample grids and sample files,
the mean of a model's loss terms, MNIST splits."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepzoo.config import Count, Range, ranged
from deepzoo.data.mnist import load_mnist
from deepzoo.data.tensors import EVAL_BATCH, TensorData
from deepzoo.train.config import TrainConfig


def adamw_linear(
    steps: int, batch_size: int, lr: float, warmup: int, eval_every: int, **kw: Any
) -> TrainConfig:
    """AdamW with linear warm-up and linear decay to zero, checkpoints every 4 evaluations."""
    return TrainConfig(
        steps=steps,
        batch_size=batch_size,
        optimizer="adamw",
        lr=lr,
        schedule="linear",
        warmup_steps=warmup,
        eval_every=eval_every,
        checkpoint_every=eval_every * 4,
        **kw,
    )


def sequence_ac_train(steps: int, batch_size: int, lr: float, eval_every: int, **kw: Any) -> TrainConfig:
    """The sequence actor-critic's fine-tuning: AdamW at a constant rate, no weight decay, gradients
    clipped at 1, no divergence check (the loss is a policy gradient, not a quantity that falls)."""
    return TrainConfig(
        steps=steps,
        batch_size=batch_size,
        optimizer="adamw",
        lr=lr,
        weight_decay=0.0,
        schedule="constant",
        grad_clip=1.0,
        eval_every=eval_every,
        checkpoint_every=eval_every,
        log_every=10,
        diverge_factor=0.0,
        **kw,
    )


Samples = ranged(int, Range(2))
"""How many samples an evaluation draws: >= 2, a covariance needs two."""


@dataclass(frozen=True)
class SampleEval:
    """What each evaluation of a generative recipe measures."""

    samples: Samples = 1000
    """Samples drawn for classifier-FID (against the whole test split) and label accuracy (>= 2:
    a covariance needs two)."""
    iwae_k: Count = 100
    """Likelihood models: importance samples of the bound during training (the benchmark uses 1000)."""
    iwae_examples: Count = 1000
    """Likelihood models: test images the bound is averaged over during training (the benchmark: all)."""


def mnist_splits(config: Any, device: torch.device) -> tuple[TensorData, TensorData]:
    return load_mnist("train", device), load_mnist("test", device)


def binarize_once(data: TensorData, seed: int = 0) -> TensorData:
    """`data` with x replaced by one fixed draw x ~ Bernoulli(grey level) (the usual binarized
    test split of MNIST likelihood papers: drawn once, from a generator seeded `seed`)."""
    generator = torch.Generator().manual_seed(seed)
    x = data.tensors["x"]
    return TensorData({**data.tensors, "x": torch.bernoulli(x.cpu(), generator=generator).to(x.device)})


def binarized_mnist_splits(config: Any, device: torch.device) -> tuple[TensorData, TensorData]:
    """Grey-level MNIST train (models binarize it afresh every step) and the test split binarized once."""
    return load_mnist("train", device), binarize_once(load_mnist("test", device))


def sample_grid(model: nn.Module, run_dir: Path, n: int, **kw: Any) -> torch.Tensor:
    """n samples of `model.sample` (labels 0..9 repeating for conditional models), drawn 500 at a
    time from a seeded generator; the first 100 go to run_dir/samples/samples.png, 10 wide."""
    from deepzoo.viz import save_image_grid

    generator = torch.Generator().manual_seed(0)
    samples = torch.cat(
        [model.sample(min(500, n - i), generator=generator, **kw).cpu() for i in range(0, n, 500)]
    )
    save_image_grid(samples[:100], run_dir / "samples" / "samples.png", nrow=10)
    return samples


def write_samples(kind: str, model: nn.Module, samples: torch.Tensor, out: Path, n_frames: int = 16) -> Path:
    """Images -> a PNG grid at out; token ids -> model.to_text, one sample after a header line
    '=== sample i ===' each, at out with the suffix .txt; an episode's frames (T, 3, H, W) -> a GIF
    at out with the suffix .gif and a grid of `n_frames` evenly spaced frames at out.png.
    Returns the file written (the GIF for an episode)."""
    from deepzoo.files import write_bytes

    if kind == "text":
        out = out.with_suffix(".txt")
        texts = model.to_text(samples)
        body = "".join(f"=== sample {i + 1} ===\n{text}\n" for i, text in enumerate(texts))
        out.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(out, body.encode())
        return out
    if kind == "episode":
        from deepzoo.viz import save_gif, save_image_grid

        gif = out.with_suffix(".gif")
        save_gif(samples, gif)
        frames = samples[torch.linspace(0, len(samples) - 1, min(n_frames, len(samples))).round().long()]
        save_image_grid(frames, out.with_suffix(".png"), nrow=8)
        return gif
    if kind != "images":
        raise ValueError(f"write_samples: unknown kind {kind!r} (images, text or episode)")
    from deepzoo.viz import save_image_grid

    save_image_grid(samples, out)
    return out


def write_predictions(pictures: torch.Tensor, out: Path) -> Path:
    """A recipe's `draw` output (N, k, 3, H, W), k pictures per example -> one PNG grid at out,
    whole examples side by side, about sqrt(N) per row. Returns out."""
    from deepzoo.viz import save_image_grid

    n, k = pictures.shape[:2]
    save_image_grid(pictures.flatten(0, 1), out, nrow=k * math.ceil(math.sqrt(n)))
    return out


def mean_terms(model: nn.Module, data: TensorData, batch_size: int = EVAL_BATCH) -> dict[str, float]:
    """The model's loss terms averaged over all of `data`."""
    sums: dict[str, float] = {}
    for batch in data.batches(batch_size):
        size = len(next(iter(batch.values())))
        for key, value in model.loss(batch).items():
            sums[key] = sums.get(key, 0.0) + float(value) * size
    return {k: v / len(data) for k, v in sums.items()}


def write_dances(motion: torch.Tensor, beats: torch.Tensor | None, out: Path, shown: int = 4) -> list[Path]:
    """Dances (N, T, 75) -> out.npy (float32, AIST++'s 75 values per frame at 60 FPS) and out.gif:
    the first `shown` dances side by side as stick figures (forward kinematics on the SMPL tree),
    red on the frames near the music's beats (beats: (N, T) bool, or None). Returns the files."""
    import io

    import numpy as np

    from deepzoo.data.skeleton import PARENTS, forward_kinematics
    from deepzoo.files import write_bytes
    from deepzoo.viz import save_gif, skeleton_frames

    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.save(buffer, motion.float().cpu().numpy())
    npy, gif = out.with_suffix(".npy"), out.with_suffix(".gif")
    write_bytes(npy, buffer.getvalue())
    joints = forward_kinematics(motion[:shown].float().cpu())
    clips = [
        skeleton_frames(j, PARENTS, beats=None if beats is None else beats[i].cpu())
        for i, j in enumerate(joints)
    ]
    save_gif(torch.cat(clips, dim=3), gif, fps=20.0)
    return [npy, gif]
