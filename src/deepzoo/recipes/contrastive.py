"""Recipes of the contrastive family: CLIP on MNIST with captions (zero-shot accuracy under
held-out prompt templates) and the per-frame motion-music CLIP on the synthetic dance set
(music-to-motion retrieval among test segments)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from deepzoo.config import Count, Positive, Seed
from deepzoo.data.tensors import EVAL_BATCH, TensorData
from deepzoo.models.clip import ImageTextCLIP, ImageTextConfig, MotionMusicCLIP, MotionMusicConfig
from deepzoo.recipes.common import adamw_linear, mnist_splits
from deepzoo.recipes.registry import Recipe, register
from deepzoo.train.config import TrainConfig


@dataclass(frozen=True)
class ZeroShotEval:
    examples: Count = 10_000
    """Test digits classified (10,000: the whole test split)."""


@dataclass(frozen=True)
class ClipMnistRun:
    model: ImageTextConfig = ImageTextConfig()
    eval: ZeroShotEval = ZeroShotEval()
    train: TrainConfig = TrainConfig()


@dataclass(frozen=True)
class DanceData:
    """The synthetic music-dance set (data/synthetic_dance.py), cached under the cache root; or,
    with `root`, the real AIST++ set."""

    train_songs: Count = 160
    """Songs to train on (genres in turn)."""
    test_songs: Count = 100
    """Held-out songs: the retrieval candidates (see DanceEval)."""
    seconds: Positive = 8.0
    """Length of every song."""
    seed: Seed = 0
    """The train set's seed; the test set's is seed + 1."""
    root: str = ""
    """An AIST++ root (data/aist.py's layout) to use instead of the synthetic set: its crossmodal
    train and test splits, every sequence cut into windows of `seconds` (the song counts and the
    seed are then unused)."""


@dataclass(frozen=True)
class DanceEval:
    segment: Count = 240
    """Frames of the across-songs test segments (4 s at 60 FPS), one per test song."""
    short_segment: Count = 120
    """Frames of the within-song test segments (2 s)."""
    per_song: Count = 4
    """Within-song segments cut from each song (test_songs / per_song songs give the candidates)."""


@dataclass(frozen=True)
class ClipDanceRun:
    model: MotionMusicConfig = MotionMusicConfig()
    data: DanceData = DanceData()
    eval: DanceEval = DanceEval()
    train: TrainConfig = TrainConfig()


@torch.no_grad()
def zero_shot_accuracy(
    model: ImageTextCLIP, data: TensorData, templates: tuple[str, ...], images: torch.Tensor | None = None
) -> float:
    """Accuracy of zero-shot classification of all of `data` with the prompt ensemble `templates`
    (`images`: the data's image embeddings, when already computed)."""
    if images is None:
        images = torch.cat([model.encode_image(b["x"]) for b in data.batches(EVAL_BATCH)])
    predicted = (images @ model.class_embeddings(templates).T).argmax(dim=1)
    return (predicted == data.tensors["y"]).float().mean().item()


def _evaluate_clip_mnist(
    model: ImageTextCLIP, data: TensorData, run_dir: Path, config: ClipMnistRun
) -> dict[str, float]:
    """Zero-shot accuracy on the first `eval.examples` test digits with the held-out templates
    (ensembled, and the worst single one) and with the training templates (ensembled), for the gap."""
    from deepzoo.models.clip import TEST_TEMPLATES, TRAIN_TEMPLATES

    data = TensorData(data[slice(0, config.eval.examples)])
    images = torch.cat([model.encode_image(b["x"]) for b in data.batches(EVAL_BATCH)])
    accuracy = lambda templates: zero_shot_accuracy(model, data, templates, images)  # noqa: E731
    return {
        "zero_shot_accuracy": accuracy(TEST_TEMPLATES),
        "worst_template_accuracy": min(accuracy((t,)) for t in TEST_TEMPLATES),
        "train_templates_accuracy": accuracy(TRAIN_TEMPLATES),
    }


def _dance_split(config: ClipDanceRun, split: str) -> TensorData:
    from deepzoo.data.root import cache_root
    from deepzoo.data.synthetic_dance import synthetic_dance_set

    d = config.data
    if d.root:
        from deepzoo.data.aist import FPS, aist_windows

        arrays = aist_windows(d.root, split, round(d.seconds * FPS))
        return TensorData({name: torch.from_numpy(array) for name, array in arrays.items()})
    songs, seed = (d.train_songs, d.seed) if split == "train" else (d.test_songs, d.seed + 1)
    dance = synthetic_dance_set(songs, d.seconds, seed, cache=cache_root() / "synthetic-dance")
    return TensorData(
        {
            "motion": torch.from_numpy(dance.motion),
            "music": torch.from_numpy(dance.music),
            "beats": torch.from_numpy(dance.beats),
        }
    )


def dance_splits(config: ClipDanceRun, device: torch.device) -> tuple[TensorData, TensorData]:
    return _dance_split(config, "train").to(device), _dance_split(config, "test").to(device)


def _fit_statistics(model: MotionMusicCLIP, data: TensorData) -> None:
    model.fit_statistics(data.tensors["motion"], data.tensors["music"])


def segments_of(
    data: TensorData, frames: int, per_song: int = 1, songs: int | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(music, motion) segments (songs x per_song, frames, .), song by song: each of the first
    `songs` sequences (all when None) is cut into `per_song` equal slots and one segment is taken
    from each slot, at an offset drawn from a generator seeded `seed` (so segments never overlap)."""
    motion, music = data.tensors["motion"], data.tensors["music"]
    songs = len(motion) if songs is None else songs
    slot = motion.shape[1] // per_song
    if slot < frames or songs > len(motion):
        raise ValueError(
            f"cannot cut {per_song} segments of {frames} frames from each of {songs} of "
            f"{len(motion)} sequences of {motion.shape[1]} frames"
        )
    generator = torch.Generator().manual_seed(seed)
    start = torch.randint(slot - frames + 1, (songs, per_song), generator=generator) + slot * torch.arange(
        per_song
    )
    index = (start[..., None] + torch.arange(frames)).to(motion.device)  # (songs, per_song, frames)

    def cut(x: torch.Tensor) -> torch.Tensor:
        rows = x[:songs, None].expand(-1, per_song, -1, -1)  # (songs, per_song, T, C)
        return rows.gather(2, index[..., None].expand(-1, -1, -1, x.shape[-1])).flatten(0, 1)

    return cut(music), cut(motion)


def _evaluate_clip_dance(
    model: MotionMusicCLIP, data: TensorData, run_dir: Path, config: ClipDanceRun
) -> dict[str, float]:
    """Retrieval among 100 candidates, by recall@1/5/10 and median rank, music -> motion
    ("music_to_motion_*") and back:
    - across songs: one segment of `eval.segment` frames from each test song;
    - within songs ("same_song_*"): `eval.per_song` non-overlapping segments of `eval.short_segment`
      frames from each of the first songs, so most candidates share the query's genre and tempo;
    and the per-frame loss and accuracy on the first (each motion frame finding its music frame
    within its segment)."""
    from deepzoo.metrics.retrieval import retrieval_metrics
    from deepzoo.nn.contrastive import per_frame_clip_loss

    names = {"a2b": "music_to_motion", "b2a": "motion_to_music"}
    result = {}
    e = config.eval
    for prefix, (music, motion) in (
        ("", segments_of(data, e.segment)),
        ("same_song_", segments_of(data, e.short_segment, e.per_song, len(data) // e.per_song)),
    ):
        metrics = retrieval_metrics(model.segment_similarity(music, motion))
        result |= {f"{prefix}{names[k[:3]]}{k[3:]}": v for k, v in metrics.items()}
    music, motion = segments_of(data, e.segment)
    frames = per_frame_clip_loss(model.encode_motion(motion), model.encode_music(music), model.logit_scale())
    return result | {"frame_loss": frames["loss"].item(), "frame_accuracy": frames["accuracy_ab"].item()}


register(
    Recipe(
        name="clip-mnist",
        summary="CLIP: MNIST CNN and byte-level causal Transformer over captions; zero-shot, unseen prompts",
        default=ClipMnistRun(train=adamw_linear(600, 256, 1e-3, 100, 200, weight_decay=0.1)),
        build=lambda c: ImageTextCLIP(c.model),
        data=mnist_splits,
        evaluate=_evaluate_clip_mnist,
        metric="zero_shot_accuracy",
        reference="CLIP ViT-L/14@336 zero-shot MNIST 88.4% (Radford et al., 2021); goal here >= 97%",
    )
)
register(
    Recipe(
        name="clip-dance",
        summary="per-frame motion-music CLIP (the notes') on the synthetic dance set; segment retrieval",
        default=ClipDanceRun(train=adamw_linear(1000, 32, 1e-3, 100, 250, weight_decay=0.01)),
        build=lambda c: MotionMusicCLIP(c.model),
        data=dance_splits,
        evaluate=_evaluate_clip_dance,
        metric="music_to_motion_recall@1",
        reference="chance 1% among 100 segments; goal here >= 80%",
        prepare=_fit_statistics,
    )
)
