"""The exact online posterior of the synthetic streams: the Bayes-optimal online action detector.

The stream generator (data/streams.py) is a hidden semi-Markov process, and with the state
written as "what is left to show" it is a finite Markov chain:

    action (k, i, r): primitive i of action k's sequence on screen, r frames of it left;
    gap, before the distractor (a, v, h, b): a background frames, then h frames of primitive v,
        then b background frames left;
    gap, distractor (h, v, b): primitive v on screen, h frames of it left, then b background;
    gap, after the distractor or without one (b): b background frames left.

Each state shows one primitive (or none) and has one label (k, or 0 in a gap). Within a
segment the next state is fixed; at a segment's end the next one is drawn as the generator
draws it (a primitive's hold uniform, an action uniform, a gap's length, distractor, hold,
place and primitive). A stream starts a uniform number of frames into the endless sequence,
which starts with a gap. Forward filtering,

    alpha_t(s) = p(x_t | s) sum_s' alpha_{t-1}(s') P(s' -> s),    alpha_0(s) = p(x_0 | s) pi(s),

gives p(label_t = c | x_0..t) = sum_{s: label(s) = c} alpha_t(s) / sum_s alpha_t(s): the best
scores any causal model can give (under every proper scoring rule, e.g. the log-loss the models
are trained on), so their per-frame mAP is the ceiling of the models trained on these streams
(AP, a ranking over all frames, is not exactly maximised by the posterior, but nearly). Frames
enter through their log-likelihoods under each primitive (`gaussian_log_likelihoods` for the
synthetic features), so a detector of the primitives (a digit classifier on digit frames) can
stand in for the noise model.
"""

from __future__ import annotations

import math

import torch

from deepzoo.data.streams import StreamConfig, stream_grammar


class StreamChain:
    """The Markov chain of `config`'s streams: per state `head` (S,) the primitive shown (-1:
    none) and `label` (S,) in 0..K; transitions as edges (`source`, `target`, `probability`)
    (E,); `prior` (S,) the distribution of a stream's first state. States are keyed as in the
    module docstring: ("action", k, i, r), ("before", a, v, h, b), ("distractor", h, v, b),
    ("after", b)."""

    def __init__(self, config: StreamConfig) -> None:
        self.config = config
        self._sequences = stream_grammar(config)[1]
        self._holds = range(config.min_hold, config.max_hold + 1)
        self._index: dict[tuple, int] = {}
        self._keys: list[tuple] = []
        self._action_start = {
            self._state(("action", k, 0, h)): 1 / (config.actions * len(self._holds))
            for k in range(1, config.actions + 1)
            for h in self._holds
        }
        self._gap_start = self._gap_starts()
        edges: list[tuple[int, int, float]] = []
        source = 0
        while source < len(self._keys):  # every state reachable from the starts, breadth first
            edges.extend((source, t, p) for t, p in self._successors(self._keys[source]).items())
            source += 1

        shown = [self._shows(key) for key in self._keys]
        self.head = torch.tensor([head for head, _ in shown])
        self.label = torch.tensor([label for _, label in shown])
        self.source = torch.tensor([e[0] for e in edges])
        self.target = torch.tensor([e[1] for e in edges])
        self.probability = torch.tensor([e[2] for e in edges], dtype=torch.float64)
        start = torch.zeros(len(self._keys), dtype=torch.float64)
        for s, p in self._gap_start.items():
            start[s] += p
        prior = torch.zeros_like(start)
        for _ in range(config.max_gap):  # offset uniform in [0, max_gap)
            prior += start / config.max_gap
            start = self.step(start[None])[0]
        self.prior = prior

    def _state(self, key: tuple) -> int:
        """The index of the state `key`, added on first sight."""
        if key not in self._index:
            self._index[key] = len(self._keys)
            self._keys.append(key)
        return self._index[key]

    def _shows(self, key: tuple) -> tuple[int, int]:
        """(primitive shown or -1, label) of the state `key`."""
        if key[0] == "action":
            return int(self._sequences[key[1] - 1, key[2]]), key[1]
        return (key[2] if key[0] == "distractor" else -1), 0

    def _gap_starts(self) -> dict[int, float]:
        """The first state of a gap and its probability: length g uniform; with probability
        `distractor` a primitive v held h = min(hold, g) frames from a uniform place in it."""
        config = self.config
        gaps = range(config.min_gap, config.max_gap + 1)
        starts: dict[int, float] = {}

        def add(key: tuple, p: float) -> None:
            s = self._state(key)
            starts[s] = starts.get(s, 0.0) + p

        for g in gaps:
            add(("after", g), (1 - config.distractor) / len(gaps))
            for h0 in self._holds:
                h = min(h0, g)
                for place in range(g - h + 1):
                    for v in range(config.primitives):
                        p = config.distractor / (
                            len(gaps) * len(self._holds) * (g - h + 1) * config.primitives
                        )
                        add(
                            ("before", place, v, h, g - place - h) if place else ("distractor", h, v, g - h),
                            p,
                        )
        return starts

    def _successors(self, key: tuple) -> dict[int, float]:
        """The states that follow `key` and their probabilities."""
        kind = key[0]
        if kind == "action":
            _, k, i, r = key
            if r > 1:
                return {self._state(("action", k, i, r - 1)): 1.0}
            if i + 1 < self.config.steps:
                return {self._state(("action", k, i + 1, h)): 1 / len(self._holds) for h in self._holds}
            return self._gap_start
        if kind == "before":
            _, a, v, h, b = key
            return {self._state(("before", a - 1, v, h, b) if a > 1 else ("distractor", h, v, b)): 1.0}
        if kind == "distractor":
            _, h, v, b = key
            if h > 1:
                return {self._state(("distractor", h - 1, v, b)): 1.0}
            return {self._state(("after", b)): 1.0} if b else self._action_start
        _, b = key
        return {self._state(("after", b - 1)): 1.0} if b > 1 else self._action_start

    def __len__(self) -> int:
        return len(self.head)

    def step(self, alpha: torch.Tensor) -> torch.Tensor:
        """(n, S) -> (n, S): sum_s' alpha(s') P(s' -> s)."""
        moved = alpha[:, self.source] * self.probability.to(alpha.dtype)
        return torch.zeros_like(alpha).index_add_(1, self.target, moved)


def gaussian_log_likelihoods(x: torch.Tensor, config: StreamConfig) -> torch.Tensor:
    """x (..., D) synthetic frame features -> (..., V + 1) log p(x | nothing shown) and
    log p(x | primitive v) for v = 0..V-1: x ~ N(mu, noise^2 I), mu = 0 or the prototype mu_v."""
    if config.noise <= 0:
        raise ValueError(f"the Gaussian likelihood needs noise > 0, got {config.noise}")
    prototypes, _ = stream_grammar(config)
    means = torch.cat([torch.zeros(1, config.dim), prototypes]).to(x.device, torch.float64)
    squared = torch.cdist(x.double().reshape(-1, x.shape[-1]), means).square().reshape(*x.shape[:-1], -1)
    return -squared / (2 * config.noise**2) - config.dim / 2 * math.log(2 * math.pi * config.noise**2)


def primitive_log_likelihoods(primitives: torch.Tensor, config: StreamConfig) -> torch.Tensor:
    """(n, T) primitives shown (-1: none) -> (n, T, V + 1) log-likelihoods of frames whose
    primitive is read without error: 0 for the primitive shown, -inf for every other."""
    log_likelihoods = torch.full((*primitives.shape, config.primitives + 1), -math.inf, dtype=torch.float64)
    return log_likelihoods.scatter_(-1, (primitives + 1)[..., None].to(torch.int64), 0.0)


def stream_posterior(
    log_likelihoods: torch.Tensor, config: StreamConfig, chain: StreamChain | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward filtering (module docstring). log_likelihoods (n, T, V + 1): per frame log p(x_t |
    nothing shown) then log p(x_t | primitive v) (-inf allowed where not all are). Returns the
    posterior of each frame's label given the frames so far, (n, T, K + 1) float64, and the log
    evidence log p(x_0..T-1) (n,)."""
    chain = chain or StreamChain(config)
    if log_likelihoods.ndim != 3 or log_likelihoods.shape[-1] != config.primitives + 1:
        raise ValueError(
            f"need log-likelihoods (n, T, {config.primitives + 1}), got {tuple(log_likelihoods.shape)}"
        )
    log_likelihoods = log_likelihoods.double()
    n, T, _ = log_likelihoods.shape
    posterior = log_likelihoods.new_zeros(n, T, config.actions + 1)
    evidence = log_likelihoods.new_zeros(n)
    alpha = chain.prior.to(log_likelihoods.device).expand(n, -1)
    for t in range(T):
        if t:
            alpha = chain.step(alpha)
        shift = log_likelihoods[:, t].max(1, keepdim=True).values
        alpha = alpha * torch.exp(log_likelihoods[:, t] - shift)[:, chain.head + 1]
        total = alpha.sum(1, keepdim=True)
        if not (total > 0).all():  # 0, or NaN from a frame impossible under every primitive
            raise ValueError(f"frame {t} is impossible under the stream model (zero likelihood)")
        alpha = alpha / total
        evidence += (total.log() + shift).squeeze(1)
        posterior[:, t].index_add_(1, chain.label, alpha)
    return posterior, evidence
