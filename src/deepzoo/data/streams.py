"""Streams for online action detection: per-frame features with per-frame targets.

A stream is T frames of features x_t in R^D with a target row y_t in {0, 1}^C per frame: class 0
is background, 1..K the actions; a frame's row may hold several classes (THUMOS'14 marks some
frames both CliffDiving and Diving), and an all-zero row is a frame that is not scored (padding,
THUMOS'14's ambiguous frames). TensorData {"x" (N, T, D) float32, "target" (N, T, C) float32}.

Synthetic streams (`synthetic_streams`): action k is a fixed sequence of `steps` motion primitives
(the grammar, drawn once from `grammar_seed` and shared by every split). Every primitive occurs in
at least two actions (where K * steps >= 2 * primitives), so one frame cannot say which action is
going on: only the order of primitives over several frames can. Primitive v has a prototype
mu_v in R^D, |mu_v| = `signal`; a frame showing v is mu_v + noise * eps, eps ~ N(0, I); any other
frame is noise * eps. Each primitive of an action is held uniform [min_hold, max_hold] frames;
actions are separated by background gaps of uniform [min_gap, max_gap] frames, and a gap shows,
with probability `distractor`, one random primitive held uniform [min_hold, max_hold] frames at a
random place inside it (labelled background: it is not an action). A stream starts `offset`
frames into an endless such sequence, offset uniform in [0, max_gap), as if cut from a long
video. Deterministic per seed.

Digit frames (`digit_frame_streams`): the same layouts, each frame an MNIST digit, primitive v
shown as a digit v and background as digits of the other classes (the design's "MNIST frame
streams"); the recipes embed the frames with the shipped MNIST feature network.

Feature files (`load_feature_streams`): the layout of the TRN and IDN code for THUMOS'14 and
TVSeries: root/<feature>/<video>.npy (T, D_f) per feature (concatenated along D) and
root/<target>/<video>.npy (T, C) one-hot (or multi-hot) rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from deepzoo.config import Count, NonNegative, Probability, Range, Seed, check_ranges, ranged
from deepzoo.data.tensors import TensorData

Primitives = ranged(int, Range(2))


@dataclass(frozen=True)
class StreamConfig:
    actions: Count = 8
    """K action classes (targets have K + 1 columns, background first)."""
    primitives: Primitives = 6
    """Motion primitives the actions are built from (no primitive follows itself: two at least)."""
    steps: Count = 3
    """Primitives per action."""
    dim: Count = 32
    """Feature dimension D."""
    signal: NonNegative = 1.0
    """Norm of a primitive's prototype."""
    noise: NonNegative = 0.5
    """Per-coordinate standard deviation of the feature noise (|noise| ~ noise * sqrt(D))."""
    min_hold: Count = 2
    max_hold: Count = 6
    """Frames a primitive is held."""
    min_gap: Count = 4
    max_gap: Count = 24
    """Background frames between actions."""
    distractor: Probability = 0.5
    """Probability that a background gap shows one stray primitive."""
    grammar_seed: Seed = 1234
    """Seed of the primitives' prototypes and the actions' primitive sequences."""

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.actions > self.primitives * (self.primitives - 1) ** (self.steps - 1):
            raise ValueError(f"{self.actions} actions need more distinct primitive sequences than exist")
        if self.min_hold > self.max_hold or self.min_gap > self.max_gap:
            raise ValueError(f"need min_hold <= max_hold and min_gap <= max_gap; got {self}")


def stream_grammar(config: StreamConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(prototypes (V, D), sequences (K, steps) int64): the primitives' feature means and each
    action's primitive sequence (distinct sequences, no primitive twice in a row). Where there are
    enough slots (K * steps >= 2V), every primitive occurs in at least two actions: the grammar is
    redrawn until it does. Drawn once per config (copies returned): each stream's layout reads it."""
    prototypes, sequences = _grammar(config)
    return prototypes.clone(), sequences.clone()


@lru_cache(maxsize=16)
def _grammar(config: StreamConfig) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(config.grammar_seed)
    prototypes = torch.randn(config.primitives, config.dim, generator=generator)
    prototypes = config.signal * prototypes / prototypes.norm(dim=1, keepdim=True)
    shared = config.actions * config.steps >= 2 * config.primitives
    for _ in range(1000):
        sequences: list[tuple[int, ...]] = []
        while len(sequences) < config.actions:
            seq = torch.randint(0, config.primitives, (config.steps,), generator=generator).tolist()
            if all(a != b for a, b in zip(seq, seq[1:])) and tuple(seq) not in sequences:
                sequences.append(tuple(seq))
        table = torch.tensor(sequences, dtype=torch.int64).view(config.actions, config.steps)
        actions_per_primitive = torch.stack([(table == v).any(1).sum() for v in range(config.primitives)])
        if not shared or (actions_per_primitive >= 2).all():
            return prototypes, table
    raise ValueError(f"no grammar of {config} in 1,000 draws shares every primitive between two actions")


@dataclass
class StreamLayout:
    """What a synthetic stream shows: per frame, the primitive on screen (-1: none) and the label
    (0 background, k for action k); and the actions as (start, end, class) with end exclusive
    (the first may have started before the stream, the last may run past its end)."""

    primitive: torch.Tensor
    label: torch.Tensor
    actions: list[tuple[int, int, int]]


def stream_layout(length: int, config: StreamConfig, generator: torch.Generator) -> StreamLayout:
    """The segments of one stream of `length` frames (see the module docstring)."""
    sequences = _grammar(config)[1].tolist()

    def uniform(low: int, high: int) -> int:
        return int(torch.randint(low, high + 1, (1,), generator=generator))

    offset = uniform(0, config.max_gap - 1)
    total = length + offset
    primitive = torch.full((total,), -1, dtype=torch.int64)
    label = torch.zeros(total, dtype=torch.int64)
    actions = []
    t = 0
    while t < total:
        gap = uniform(config.min_gap, config.max_gap)
        if float(torch.rand((), generator=generator)) < config.distractor:
            hold = min(uniform(config.min_hold, config.max_hold), gap)
            start = t + uniform(0, gap - hold)
            primitive[start : start + hold] = uniform(0, config.primitives - 1)
        t += gap
        k = uniform(1, config.actions)
        start = t
        for v in sequences[k - 1]:
            hold = uniform(config.min_hold, config.max_hold)
            primitive[t : t + hold] = v
            t += hold
        label[start:t] = k
        if t > offset and start < total:
            actions.append((start - offset, t - offset, k))
    return StreamLayout(primitive[offset:total].clone(), label[offset:total].clone(), actions)


def _seeded_layouts(
    n: int, length: int, seed: int, config: StreamConfig
) -> tuple[list[StreamLayout], torch.Generator]:
    """The layouts of the n streams of `seed`, and the generator that drew them (drawn first, so
    that features and digit frames of one seed share them)."""
    generator = torch.Generator().manual_seed(seed)
    return [stream_layout(length, config, generator) for _ in range(n)], generator


def stream_primitives(
    n: int, length: int, seed: int = 0, config: StreamConfig = StreamConfig()
) -> torch.Tensor:
    """(n, length) int64: the primitive each frame of `synthetic_streams` (and `digit_frame_streams`)
    of this seed shows, -1 for none."""
    return torch.stack([layout.primitive for layout in _seeded_layouts(n, length, seed, config)[0]])


def synthetic_streams(
    n: int, length: int, seed: int = 0, config: StreamConfig = StreamConfig()
) -> TensorData:
    """n streams of `length` frames, deterministic per seed: {"x" (n, length, D), "target"
    (n, length, K + 1) one-hot}."""
    if n < 1 or length < 1:
        raise ValueError(f"need n >= 1 and length >= 1, got {n}, {length}")
    layouts, generator = _seeded_layouts(n, length, seed, config)
    prototypes, _ = stream_grammar(config)
    primitive = torch.stack([layout.primitive for layout in layouts])  # (n, T)
    label = torch.stack([layout.label for layout in layouts])
    means = torch.cat([prototypes, torch.zeros(1, config.dim)])[primitive]  # index -1: the zero row
    x = means + config.noise * torch.randn(n, length, config.dim, generator=generator)
    target = torch.nn.functional.one_hot(label, config.actions + 1).float()
    return TensorData({"x": x, "target": target})


def digit_frame_streams(
    labels: torch.Tensor, n: int, length: int, seed: int = 0, config: StreamConfig = StreamConfig()
) -> TensorData:
    """Streams whose frames are handwritten digits: a frame showing primitive v shows a digit v
    (primitives <= 9), every other frame a digit of the clutter classes primitives..9, each frame
    a fresh instance drawn uniformly from the images of that class. `labels` (M,) are the classes
    of the image pool (an MNIST split); {"image" (n, length) int64 indices into the pool,
    "target" (n, length, K + 1)}, the layouts the same as `synthetic_streams`' for the seed.
    The recipes turn the images into frame features with the shipped MNIST feature network, as
    TRN and IDN read features of a pretrained CNN."""
    if config.primitives > 9:
        raise ValueError(f"digit frames need primitives <= 9 (a clutter class left), got {config.primitives}")
    layouts, generator = _seeded_layouts(n, length, seed, config)
    primitive = torch.stack([layout.primitive for layout in layouts])
    clutter = torch.randint(config.primitives, 10, primitive.shape, generator=generator)
    digit = torch.where(primitive >= 0, primitive, clutter)
    image = torch.empty_like(digit)
    for d in range(10):
        pool = torch.nonzero(labels == d).squeeze(1)
        where = digit == d
        if where.any() and len(pool) == 0:
            raise ValueError(f"the image pool has no digit {d}")
        image[where] = pool[torch.randint(0, max(len(pool), 1), (int(where.sum()),), generator=generator)]
    label = torch.stack([layout.label for layout in layouts])
    target = torch.nn.functional.one_hot(label, config.actions + 1).float()
    return TensorData({"image": image, "target": target})


def chunk_streams(data: TensorData, length: int) -> TensorData:
    """Streams (N, T, ...) cut into consecutive chunks (N * ceil(T / length), length, ...), the
    last chunk of each stream padded with zeros (all-zero target rows: not scored)."""
    if length < 1:
        raise ValueError(f"chunk length must be >= 1, got {length}")
    T = next(iter(data.tensors.values())).shape[1]
    pad = -T % length
    chunks = {}
    for name, tensor in data.tensors.items():
        if pad:
            tensor = torch.cat([tensor, tensor.new_zeros(tensor.shape[0], pad, *tensor.shape[2:])], 1)
        chunks[name] = tensor.reshape(-1, length, *tensor.shape[2:])
    return TensorData(chunks)


def load_feature_streams(
    root: str | Path,
    videos: list[str],
    features: tuple[str, ...] = ("rgb", "flow"),
    target: str = "target",
    ambiguous: int | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Per video {"x" (T, D) float32, "target" (T, C) float32} from root/<feature>/<video>.npy
    (concatenated along D in the order of `features`) and root/<target>/<video>.npy. With
    `ambiguous` a target column (THUMOS'14's 21), frames marked in it get an all-zero row (not
    scored) and the column is dropped."""
    root = Path(root)

    def read(folder: str, video: str) -> np.ndarray:
        path = root / folder / f"{video}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"no {path} (expected root/<feature or target>/<video>.npy)")
        array = np.load(path)
        if array.ndim != 2:
            raise ValueError(f"{path}: expected a (frames, dim) array, got shape {array.shape}")
        return array

    streams = []
    for video in videos:
        parts = [read(f, video) for f in features]
        labels = read(target, video)
        lengths = {len(a) for a in parts} | {len(labels)}
        if len(lengths) != 1:
            shapes = {name: len(a) for name, a in zip((*features, target), (*parts, labels))}
            raise ValueError(f"video {video}: features and target disagree on the frame count: {shapes}")
        y = torch.from_numpy(labels.astype(np.float32))
        if ambiguous is not None:
            y = torch.where(y[:, ambiguous : ambiguous + 1] > 0, 0.0, y)
            y = torch.cat([y[:, :ambiguous], y[:, ambiguous + 1 :]], 1)
        x = torch.from_numpy(np.concatenate(parts, axis=1).astype(np.float32))
        streams.append({"x": x, "target": y})
    return streams


def pack_streams(streams: list[dict[str, torch.Tensor]]) -> TensorData:
    """Streams of different lengths -> TensorData padded at the end to the longest (padding:
    zero features, all-zero target rows)."""
    T = max(len(s["x"]) for s in streams)
    packed = {}
    for name in streams[0]:
        rows = [s[name] for s in streams]
        packed[name] = torch.stack([torch.cat([r, r.new_zeros(T - len(r), *r.shape[1:])]) for r in rows])
    return TensorData(packed)
