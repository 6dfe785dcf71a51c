"""Online action detectors: at every frame of a stream, class scores from that frame and the past.

Every model maps frame features x (B, T, D) and a state to logits (B, T, C) and the state after
frame T: running a stream in pieces with the state carried gives the same logits as running it
whole, and the logits at frame t never depend on frames after t (both tested). Frames are first
embedded, e_t = ReLU(W_e x_t + b_e) (TRN's feature extractor for THUMOS'14 features).

Training reads chunks of streams with a zero state (as the TRN code does). The frame loss is
TRN's multi-label cross-entropy, CE(l, y) = -sum_c y_c log softmax(l)_c, averaged over the scored
frames (target rows not all zero: padding and ambiguous frames are not scored).

- `lstm`: e_t -> LSTM -> linear classifier: the baseline of both papers.
- `trn`: Temporal Recurrent Network (Xu et al. 2019). At frame t an encoder LSTM cell reads
  [e_t, f_{t-1}] and classifies its state; a decoder LSTM cell, started from (ReLU(W h_t),
  ReLU(W' c_t)), rolls out `decoder_steps` steps, step j classifying frame t + j (its input: zero,
  then ReLU(W'' logits of step j - 1)); the future feature f_t = mean_j ReLU(W_f h^dec_j) is fed
  to the encoder at t + 1 (the STA unit). One classifier serves encoder and decoder. Loss:
  CE(encoder, y_t) + CE(decoder step j, y_{t+j}) (steps past the chunk are not scored). The paper
  has decoder step j anticipate frame t + j, j = 1..S, as here; the released code's data layer
  targets frame t + j - 1 (its first step re-predicts the current frame).
- `idn`: Information Discrimination Network (Eun et al. 2020). The frame at t is classified from
  the IDU's state after the window of the last `window` frames (nn/recurrent.py IDU: its gates
  compare each frame's embedding with the current one's). The early embedding is trained with a
  classifier on every frame's embedding and a contrastive loss on (frame, current frame) pairs of
  each window: for d = |e_t - e_0|, d^2 if the frames share a class, max(0, margin - d)^2 if not.
  Loss: CE(classifier(h), y_0) + embedding_weight * (CE(embedding classifier, y_t) + contrastive).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from deepzoo.config import NonNegative
from deepzoo.nn.precision import upcast
from deepzoo.nn.recurrent import IDU


@dataclass(frozen=True)
class OnlineConfig:
    arch: Literal["lstm", "trn", "idn"] = "lstm"
    input_dim: int = 32
    """Frame feature dimension D."""
    num_classes: int = 9
    """C classes, background (0) included."""
    embed: int = 64
    """Width of the frame embedding e_t."""
    hidden: int = 128
    """Recurrent state width."""
    dropout: float = 0.1
    """Dropout on the recurrent cells' inputs and the classifier's input (TRN's 0.1)."""
    decoder_steps: int = 8
    """trn: frames the decoder anticipates (the paper's 8 on THUMOS'14)."""
    window: int = 16
    """idn: frames in the window ending at the current frame (the paper's 16 chunks)."""
    margin: float = 1.0
    """idn: contrastive margin between embeddings of frames of different classes."""
    embedding_weight: NonNegative = 1.0
    """idn: weight of the early embedding's losses."""

    def __post_init__(self) -> None:
        if self.arch not in ("lstm", "trn", "idn"):
            raise ValueError(f"arch must be lstm, trn or idn, got {self.arch!r}")
        if min(self.input_dim, self.num_classes - 1, self.embed, self.hidden, self.decoder_steps) < 1:
            raise ValueError(f"sizes must be >= 1 (and num_classes >= 2), got {self}")
        if self.window < 1 or self.margin <= 0 or not 0 <= self.dropout < 1:
            raise ValueError(f"need window >= 1, margin > 0, 0 <= dropout < 1; got {self}")


def frame_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over scored frames of -sum_c y_c log softmax(l)_c; logits, target (..., C)."""
    scored = target.sum(-1) > 0
    nll = -(target * F.log_softmax(upcast(logits), dim=-1)).sum(-1)
    return (nll * scored).sum() / scored.sum().clamp(min=1)


def _fc_relu(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_out), nn.ReLU())


class OnlineDetector(nn.Module):
    """What the three models share: the frame embedding, the classifier and the evaluation API."""

    def __init__(self, config: OnlineConfig, classifier_in: int) -> None:
        super().__init__()
        self.config = config
        self.embed = _fc_relu(config.input_dim, config.embed)
        self.drop = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(classifier_in, config.num_classes)

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """x (B, T, D) -> logits (B, T, C), the state after frame T."""
        raise NotImplementedError

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits, _ = self(batch["x"])
        return {"loss": frame_cross_entropy(logits, batch["target"])}

    @torch.no_grad()
    def stream_probabilities(self, x: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        """x (B, T, D) -> softmax probabilities (B, T, C), run online `chunk` frames at a time."""
        state, pieces = None, []
        for start in range(0, x.shape[1], chunk):
            logits, state = self(x[:, start : start + chunk], state)
            pieces.append(upcast(logits).softmax(-1))
        return torch.cat(pieces, 1)


class LSTMDetector(OnlineDetector):
    """e_t -> LSTM -> classifier; state (h, c) (1, B, H) each."""

    def __init__(self, config: OnlineConfig) -> None:
        super().__init__(config, config.hidden)
        self.lstm = nn.LSTM(config.embed, config.hidden, batch_first=True)

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        h, state = self.lstm(self.drop(self.embed(x)), state)
        return self.classifier(self.drop(h)), state


class TRN(OnlineDetector):
    """Temporal Recurrent Network (module docstring); state (h, c, f): (B, H), (B, H), (B, E)."""

    def __init__(self, config: OnlineConfig) -> None:
        super().__init__(config, config.hidden)
        E, H, C = config.embed, config.hidden, config.num_classes
        self.encoder = nn.LSTMCell(2 * E, H)
        self.decoder = nn.LSTMCell(H, H)
        self.h_to_decoder, self.c_to_decoder = _fc_relu(H, H), _fc_relu(H, H)
        self.scores_to_input = _fc_relu(C, H)
        self.future = _fc_relu(H, E)

    def run(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """x (B, T, D) -> encoder logits (B, T, C), decoder logits (B, T, S, C) (step j at frame t
        anticipates frame t + j + 1 for j = 0..S-1), state."""
        B, T, _ = x.shape
        H, E, S = self.config.hidden, self.config.embed, self.config.decoder_steps
        e = self.embed(x)
        if state is None:
            zeros = e.new_zeros(B, H)
            state = (zeros, zeros, e.new_zeros(B, E))
        h, c, future = state
        # the decoder's next input ReLU(W_s (W_c d + b_c) + b_s) in one product, W_s W_c
        to_input, classifier = self.scores_to_input[0], self.classifier
        next_weight = to_input.weight @ classifier.weight
        next_bias = to_input.weight @ classifier.bias + to_input.bias
        encoded, anticipated = [], []
        for t in range(T):
            h, c = self.encoder(self.drop(torch.cat([e[:, t], future], -1)), (h, c))
            encoded.append(h)
            dh, dc = self.h_to_decoder(h), self.c_to_decoder(c)
            step_input = e.new_zeros(B, H)
            states, dropped = [], []
            for j in range(S):
                dh, dc = self.decoder(self.drop(step_input) if j else step_input, (dh, dc))
                states.append(dh)
                dropped.append(self.drop(dh))
                if j < S - 1:
                    step_input = F.relu(F.linear(dropped[-1], next_weight, next_bias))
            future = self.future(torch.stack(states, 1)).mean(1)
            anticipated.append(torch.stack(dropped, 1))
        logits = self.classifier(self.drop(torch.stack(encoded, 1)))
        return logits, self.classifier(torch.stack(anticipated, 1)), (h, c, future)

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        encoded, _, state = self.run(x, state)
        return encoded, state

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        target = batch["target"]
        encoded, anticipated, _ = self.run(batch["x"])
        T, S = target.shape[1], self.config.decoder_steps
        future = torch.cat([target, target.new_zeros(target.shape[0], S, target.shape[2])], 1)
        future_target = torch.stack([future[:, j + 1 : j + 1 + T] for j in range(S)], 2)  # (B, T, S, C)
        enc = frame_cross_entropy(encoded, target)
        dec = frame_cross_entropy(anticipated, future_target)
        return {"loss": enc + dec, "encoder": enc.detach(), "decoder": dec.detach()}


class IDN(OnlineDetector):
    """Information Discrimination Network (module docstring); state: the last window - 1 frames
    (B, W - 1, D) and whether each is a frame of the stream (B, W - 1)."""

    def __init__(self, config: OnlineConfig) -> None:
        super().__init__(config, config.hidden)
        self.embedding_classifier = nn.Linear(config.embed, config.num_classes)
        self.idu = IDU(config.embed, config.hidden)

    def _windows(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
        """Embeddings of the stream with the past frames before it (B, W - 1 + T, E), the windows
        ending at each of the T frames (B, T, W, E), their validity (B, T, W), the next state."""
        B, T, D = x.shape
        W = self.config.window
        if state is None:
            state = (x.new_zeros(B, W - 1, D), torch.zeros(B, W - 1, dtype=torch.bool, device=x.device))
        frames = torch.cat([state[0], x], 1)
        valid = torch.cat([state[1], torch.ones(B, T, dtype=torch.bool, device=x.device)], 1)
        e = self.embed(frames)
        windows = e.unfold(1, W, 1).transpose(2, 3)  # (B, T, W, E)
        window_valid = valid.unfold(1, W, 1)  # (B, T, W)
        next_state = (frames[:, frames.shape[1] - (W - 1) :], valid[:, valid.shape[1] - (W - 1) :])
        return e, windows, window_valid, next_state

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        B, T, _ = x.shape
        _, windows, valid, state = self._windows(x, state)
        h = self.idu(self.drop(windows.flatten(0, 1)), valid.flatten(0, 1))
        return self.classifier(self.drop(h)).view(B, T, -1), state

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, target = batch["x"], batch["target"]
        B, T, C = target.shape
        W = self.config.window
        e, windows, valid, _ = self._windows(x, None)
        h = self.idu(self.drop(windows.flatten(0, 1)), valid.flatten(0, 1))
        action = frame_cross_entropy(self.classifier(self.drop(h)).view(B, T, C), target)
        embedded = frame_cross_entropy(self.embedding_classifier(e[:, W - 1 :]), target)
        # (frame, current frame) pairs of every window, both scored
        padded = torch.cat([target.new_zeros(B, W - 1, C), target], 1)
        window_target = padded.unfold(1, W, 1).transpose(2, 3)  # (B, T, W, C)
        current_target = window_target[:, :, -1:]
        scored = (window_target.sum(-1) > 0) & (current_target.sum(-1) > 0)
        same = (window_target * current_target).sum(-1) > 0
        squared = upcast(windows - windows[:, :, -1:]).pow(2).sum(-1)
        apart = (self.config.margin - (squared + 1e-12).sqrt()).clamp(min=0) ** 2
        pair = torch.where(same, squared, apart)
        contrastive = (pair * scored).sum() / scored.sum().clamp(min=1)
        loss = action + self.config.embedding_weight * (embedded + contrastive)
        return {
            "loss": loss,
            "action": action.detach(),
            "embedding": embedded.detach(),
            "contrastive": contrastive.detach(),
        }


def online_detector(config: OnlineConfig) -> OnlineDetector:
    return {"lstm": LSTMDetector, "trn": TRN, "idn": IDN}[config.arch](config)
