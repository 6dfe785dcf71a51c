"""CLIP (Radford et al., 2021) on MNIST with captions, and the per-frame motion-music CLIP of the
notes (`../shared/notes/ml-models.md`, "CLIP").

Image-text: an image encoder f (the MNIST CNN, its last layer the projection) and a text encoder
g (CLIP's: byte tokens, a causal Transformer, the features of the end-of-text token, a linear
projection) map a batch of (image, caption) pairs to unit vectors; the loss is the symmetric CLIP
loss of nn/contrastive.py. Captions are drawn per example from TRAIN_TEMPLATES ("a handwritten
seven"). Zero-shot classification embeds every class under the held-out TEST_TEMPLATES, averages
over templates (CLIP's prompt ensembling) and picks the class of highest cosine similarity.

Motion-music: two sequence encoders (per-frame features of dilated 1-d convolutions, so a frame
sees about a second around it) and linear projections map motion (B, S, 75) and music (B, S, 438)
to unit vectors per frame; the loss is the per-frame CLIP loss (each motion frame finds its music
frame among the S frames of its sequence, and back). A segment's similarity to another is the mean
over frames of their frame-by-frame cosine similarity.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from deepzoo.config import Count, Positive
from deepzoo.models.classifier import CNN, CNNConfig
from deepzoo.nn.contrastive import LogitScale, clip_loss, per_frame_clip_loss
from deepzoo.nn.norms import feature_standardization
from deepzoo.nn.positions import check_heads
from deepzoo.nn.precision import upcast
from deepzoo.nn.transformer import DecoderBlock

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TRAIN_TEMPLATES = (
    "a handwritten {}", "the digit {}", "a photo of the number {}", "a picture of a {}",
    "a scan of a handwritten {}", "{}", "the number {}", "a blurry {}", "a {} written by hand",
    "a bold {}", "a thin {}", "someone wrote a {}", "an old photo of a {}", "a {} on a white page",
    "a sketch of the digit {}", "a small {}",
)  # fmt: skip
"""Caption templates seen in training."""
TEST_TEMPLATES = (
    'a photo of the number: "{}".', "an image of a {}.", "a scribbled {}", "this is a {}",
    "a {} drawn with ink",
)  # fmt: skip
"""Held-out templates for zero-shot classification (the first is CLIP's own MNIST prompt); none
of them is in TRAIN_TEMPLATES."""

SOT, EOT, PAD = 256, 257, 258
VOCAB = 259
"""Tokens: the 256 UTF-8 byte values of the lower-cased text, start and end of text, padding."""


def tokenize(texts: list[str], context: int) -> torch.Tensor:
    """(N, context) int64: SOT, the bytes of text.lower(), EOT, then PAD; too long is an error."""
    rows = torch.full((len(texts), context), PAD, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [SOT, *text.lower().encode(), EOT]
        if len(ids) > context:
            raise ValueError(f"caption {text!r} needs {len(ids)} tokens, more than the context {context}")
        rows[i, : len(ids)] = torch.tensor(ids)
    return rows


def captions(templates: tuple[str, ...]) -> list[list[str]]:
    """[template][class] caption strings."""
    return [[template.format(word) for word in DIGITS] for template in templates]


@dataclass(frozen=True)
class ImageTextConfig:
    embed_dim: Count = 64
    """Dimension of the joint embedding space."""
    image: CNNConfig = CNNConfig(channels=(32, 64, 128), feature_dim=256)
    """The image encoder (its classifier layer, num_classes set to embed_dim, is the projection)."""
    text_width: Count = 128
    """Width of the text Transformer."""
    text_layers: Count = 2
    """Causal Transformer blocks of the text encoder."""
    text_heads: Count = 4
    """Attention heads of the text encoder."""
    context: Count = 40
    """Tokens per caption (SOT + bytes + EOT + padding)."""
    init_temperature: Positive = 0.07
    """Initial temperature; the learned logit scale 1 / temperature is clamped at 100."""

    def __post_init__(self) -> None:
        check_heads(self.text_width, self.text_heads, rope=False, names=("text_width", "text_heads"))


class TextEncoder(nn.Module):
    """tokens (B, L) -> (B, E): embeddings + learned positions, causal pre-norm blocks, final
    LayerNorm, the feature at each caption's EOT token, a linear projection without bias (CLIP)."""

    def __init__(self, width: int, layers: int, heads: int, context: int, embed_dim: int) -> None:
        super().__init__()
        self.token = nn.Embedding(VOCAB, width)
        self.position = nn.Parameter(0.01 * torch.randn(context, width))
        self.blocks = nn.ModuleList(DecoderBlock(width, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(width)
        self.project = nn.Linear(width, embed_dim, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token(tokens) + self.position[: tokens.shape[1]]  # (B, L, W)
        for block in self.blocks:
            x = block(x)
        end = (tokens == EOT).int().argmax(dim=1)  # causal: the EOT feature has read the caption
        return self.project(self.ln(x[torch.arange(len(x)), end]))  # (B, E)


class ImageTextCLIP(nn.Module):
    """batch {"x": (B, 1, 28, 28) in [0, 1], "y": (B,) digit}: the caption of example i is
    TRAIN_TEMPLATES[t_i].format(DIGITS[y_i]), t_i uniform (drawn from torch's generator)."""

    def __init__(self, config: ImageTextConfig = ImageTextConfig()) -> None:
        super().__init__()
        self.config = config
        self.image = CNN(replace(config.image, num_classes=config.embed_dim))
        self.text = TextEncoder(
            config.text_width, config.text_layers, config.text_heads, config.context, config.embed_dim
        )
        self.logit_scale = LogitScale(config.init_temperature)
        texts = captions(TRAIN_TEMPLATES)
        tokens = tokenize([c for row in texts for c in row], config.context)
        self.register_buffer(
            "train_tokens", tokens.view(len(TRAIN_TEMPLATES), len(DIGITS), -1), persistent=False
        )

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(upcast(self.image(x)), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(upcast(self.text(tokens)), dim=-1)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        y = batch["y"]
        template = torch.randint(len(TRAIN_TEMPLATES), y.shape, device=y.device)
        tokens = self.train_tokens[template, y]  # (B, L)
        return clip_loss(self.encode_image(batch["x"]), self.encode_text(tokens), self.logit_scale())

    @torch.no_grad()
    def class_embeddings(self, templates: tuple[str, ...] = TEST_TEMPLATES) -> torch.Tensor:
        """(10, E) unit vectors: each digit's caption embeddings over `templates`, averaged, normalised."""
        texts = captions(templates)
        tokens = tokenize([c for row in texts for c in row], self.config.context)
        embedded = self.encode_text(tokens.to(self.logit_scale.log_scale.device))
        return F.normalize(embedded.view(len(templates), len(DIGITS), -1).mean(0), dim=-1)

    @torch.no_grad()
    def classify(self, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """(B,) zero-shot digits of images x against class embeddings (10, E)."""
        return (self.encode_image(x) @ classes.T).argmax(dim=1)


@dataclass(frozen=True)
class MotionMusicConfig:
    motion_dim: Count = 75
    """Per-frame motion features (AIST++: 72 SMPL pose values + 3 root translation)."""
    music_dim: Count = 438
    """Per-frame music features (data/music.py)."""
    width: Count = 128
    """Channels of both sequence encoders."""
    layers: Count = 5
    """Residual blocks of each encoder; block i dilates by 2^i, so a frame reads 2^layers - 1 each side."""
    embed_dim: Count = 64
    """Dimension of the joint per-frame embedding."""
    window: Count = 120
    """Frames of the training windows cut from each sequence (2 s at 60 FPS)."""
    both_directions: bool = True
    """Train on motion -> music and music -> motion (the notes' sum), or motion -> music only."""
    init_temperature: Positive = 0.07
    """Initial temperature; the learned logit scale is clamped at 100."""


def channel_norm(x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the channels of each frame of x (B, C, S), without affine parameters: it
    keeps every frame's output a function of its receptive field alone (GroupNorm would not)."""
    return F.layer_norm(x.mT, x.shape[1:2]).mT


class DilatedBlock(nn.Module):
    """x (B, C, S) -> x + Conv1x1(GELU(Conv_k,dilation(GELU(norm(x))))): same length out,
    zero-padded ends; frame t reads frames t - dilation .. t + dilation (kernel 3)."""

    def __init__(self, channels: int, dilation: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv1d(
            channels, channels, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation
        )
        self.mix = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(F.gelu(self.conv(F.gelu(channel_norm(x)))))


class SequenceEncoder(nn.Module):
    """(B, S, C_in) standardised features -> (B, S, W): a linear lift, residual blocks dilated
    1, 2, 4, ..., a final per-frame norm. Frame t's output reads frames t - r .. t + r, r = 2^layers - 1."""

    def __init__(self, c_in: int, width: int, layers: int) -> None:
        super().__init__()
        self.lift = nn.Conv1d(c_in, width, 1)
        self.blocks = nn.Sequential(*(DilatedBlock(width, 2**i) for i in range(layers)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_norm(self.blocks(self.lift(x.mT))).mT


class MotionMusicCLIP(nn.Module):
    """batch {"motion": (B, T, 75), "music": (B, T, 438)}, T >= window: one window of `window`
    frames per sequence, its start uniform (torch's generator), the same for motion and music.

    Inputs are standardised per feature with statistics of the training set (`fit_statistics`,
    which the recipe's prepare step calls; they are buffers, saved with the weights)."""

    def __init__(self, config: MotionMusicConfig = MotionMusicConfig()) -> None:
        super().__init__()
        self.config = config
        self.motion_encoder = SequenceEncoder(config.motion_dim, config.width, config.layers)
        self.music_encoder = SequenceEncoder(config.music_dim, config.width, config.layers)
        self.motion_project = nn.Linear(config.width, config.embed_dim)
        self.music_project = nn.Linear(config.width, config.embed_dim)
        self.logit_scale = LogitScale(config.init_temperature)
        for name, dim in (("motion", config.motion_dim), ("music", config.music_dim)):
            self.register_buffer(f"{name}_mean", torch.zeros(dim))
            self.register_buffer(f"{name}_std", torch.ones(dim))

    @torch.no_grad()
    def fit_statistics(self, motion: torch.Tensor, music: torch.Tensor) -> None:
        """Per-feature mean and standard deviation (floored at 1e-3 of the largest, so constant
        features stay finite) of (N, T, 75) motion and (N, T, 438) music."""
        for name, x in (("motion", motion), ("music", music)):
            mean, std = feature_standardization(x)
            getattr(self, f"{name}_mean").copy_(mean)
            getattr(self, f"{name}_std").copy_(std)

    def encode_motion(self, motion: torch.Tensor) -> torch.Tensor:
        """(B, S, 75) -> (B, S, E) unit vectors."""
        x = (motion - self.motion_mean) / self.motion_std
        return F.normalize(upcast(self.motion_project(self.motion_encoder(x))), dim=-1)

    def encode_music(self, music: torch.Tensor) -> torch.Tensor:
        """(B, S, 438) -> (B, S, E) unit vectors."""
        x = (music - self.music_mean) / self.music_std
        return F.normalize(upcast(self.music_project(self.music_encoder(x))), dim=-1)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        motion, music = batch["motion"], batch["music"]
        if motion.shape[:2] != music.shape[:2]:
            raise ValueError(f"motion {tuple(motion.shape)} and music {tuple(music.shape)} differ in (B, T)")
        batch_size, frames, window = *motion.shape[:2], self.config.window
        if frames < window:
            raise ValueError(f"sequences of {frames} frames are shorter than the window {window}")
        start = torch.randint(frames - window + 1, (batch_size, 1), device=motion.device)
        index = start + torch.arange(window, device=motion.device)  # (B, window)
        motion = motion.gather(1, index[..., None].expand(-1, -1, motion.shape[-1]))
        music = music.gather(1, index[..., None].expand(-1, -1, music.shape[-1]))
        return per_frame_clip_loss(
            self.encode_motion(motion),
            self.encode_music(music),
            self.logit_scale(),
            self.config.both_directions,
        )

    @torch.no_grad()
    def segment_similarity(self, music: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        """(N, S, 438) music and (M, S, 75) motion segments -> (N, M): sim_ij = 1/S sum_t
        <music_i,t, motion_j,t>, the mean frame-by-frame cosine similarity."""
        a, b = self.encode_music(music), self.encode_motion(motion)
        return torch.einsum("isd,jsd->ij", a, b) / a.shape[1]
