"""The exact online posterior of the synthetic streams (data/stream_filter.py), checked against
the stream generator itself: the probabilities of primitive sequences and of the label given
them, estimated from sampled layouts, must match the chain's within sampling error."""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math

import pytest
import torch

from deepzoo.data.stream_filter import (
    StreamChain,
    gaussian_log_likelihoods,
    primitive_log_likelihoods,
    stream_posterior,
)
from deepzoo.data.streams import StreamConfig, stream_layout, synthetic_streams

SMALL = StreamConfig(
    actions=2, primitives=3, steps=2, dim=4, min_hold=1, max_hold=2, min_gap=1, max_gap=3, distractor=0.3
)
"""Short holds and gaps: a window of 6 frames crosses several segments (gap -> action -> gap)."""


@pytest.mark.parametrize(("config", "frames"), [(SMALL, 6), (StreamConfig(), 4)], ids=["small", "default"])
def test_the_chain_gives_the_generators_probabilities(config, frames):
    """For every window of primitives the generator shows often enough, P(window) (the filter's
    evidence with exact observations) equals its frequency in 20,000 sampled stream starts within 5
    standard errors, and so does P(label of the last frame | window) for windows seen 200 times;
    every sampled window is possible under the chain."""
    n = 20_000
    generator = torch.Generator().manual_seed(5)
    windows: collections.Counter = collections.Counter()
    last_labels: collections.Counter = collections.Counter()
    for _ in range(n):
        layout = stream_layout(frames, config, generator)
        window = tuple(layout.primitive.tolist())
        windows[window] += 1
        last_labels[window, int(layout.label[-1])] += 1
    seen = list(windows)
    posterior, evidence = stream_posterior(primitive_log_likelihoods(torch.tensor(seen), config), config)
    p = evidence.exp()
    counts = torch.tensor([windows[w] for w in seen], dtype=torch.float64)
    frequent = n * p >= 50
    assert frequent.sum() >= 20
    z = (counts - n * p) / torch.sqrt(n * p * (1 - p))
    assert z[frequent].abs().max() < 5
    assert p.sum() <= 1 + 1e-9
    common = torch.nonzero(counts >= 200).squeeze(1).tolist()
    assert len(common) >= 3
    for i in common:
        for label in range(config.actions + 1):
            q = float(posterior[i, -1, label])
            frequency = last_labels[seen[i], label] / counts[i]
            assert abs(frequency - q) <= 5 * math.sqrt(max(q * (1 - q), 1e-4) / counts[i])


def test_the_prior_and_every_state_are_distributions():
    chain = StreamChain(StreamConfig())
    assert torch.allclose(chain.prior.sum(), torch.tensor(1.0, dtype=torch.float64))
    outgoing = torch.zeros(len(chain), dtype=torch.float64).index_add_(0, chain.source, chain.probability)
    assert torch.allclose(outgoing, torch.ones_like(outgoing))


def test_gaussian_log_likelihoods_are_the_generators_noise_model():
    config = StreamConfig(dim=8, noise=0.7)
    data = synthetic_streams(2, 30, seed=3, config=config)
    x = data.tensors["x"]
    from deepzoo.data.streams import stream_grammar

    prototypes, _ = stream_grammar(config)
    means = torch.cat([torch.zeros(1, config.dim), prototypes]).double()
    expected = torch.distributions.Normal(means, config.noise).log_prob(x.double()[..., None, :]).sum(-1)
    assert torch.allclose(gaussian_log_likelihoods(x, config), expected, atol=1e-9)


def test_the_posterior_is_causal_and_normalised():
    config = StreamConfig()
    x = synthetic_streams(2, 80, seed=4, config=config).tensors["x"]
    changed = x.clone()
    changed[:, 40:] = torch.randn(2, 40, config.dim)
    chain = StreamChain(config)
    posterior, _ = stream_posterior(gaussian_log_likelihoods(x, config), config, chain)
    posterior_changed, _ = stream_posterior(gaussian_log_likelihoods(changed, config), config, chain)
    assert torch.equal(posterior[:, :40], posterior_changed[:, :40])
    assert not torch.allclose(posterior[:, 40:], posterior_changed[:, 40:])
    assert torch.allclose(posterior.sum(-1), torch.ones(2, 80, dtype=torch.float64))


def test_an_impossible_stream_and_a_wrong_shape_are_refused():
    config = StreamConfig()
    # at most an action's last primitive, a gap filled by one distractor and an action's first
    # primitive show the same primitive in a row: 3 * max_hold frames
    run = torch.zeros(1, 3 * config.max_hold + 1, dtype=torch.int64)
    with pytest.raises(ValueError, match="impossible"):
        stream_posterior(primitive_log_likelihoods(run, config), config)
    nothing_fits = torch.zeros(1, 4, config.primitives + 1, dtype=torch.float64)
    nothing_fits[0, 2] = -math.inf  # a frame no state can show
    with pytest.raises(ValueError, match="impossible"):
        stream_posterior(nothing_fits, config)
    with pytest.raises(ValueError, match="log-likelihoods"):
        stream_posterior(torch.zeros(1, 5, 3), config)
    with pytest.raises(ValueError, match="noise"):
        gaussian_log_likelihoods(torch.zeros(1, 4), StreamConfig(dim=4, noise=0.0))


def test_the_evidence_sums_the_sequences_and_follows_a_shift_of_the_likelihoods():
    """log p(x_0..T-1) with Gaussian frames equals log sum over primitive sequences q of P(q)
    prod_t p(x_t | q_t) (P(q) the exact-observation evidence, 0 for impossible q); adding c_t to
    every log-likelihood of frame t adds sum_t c_t to it and leaves the posterior unchanged."""
    config = dataclasses.replace(SMALL, noise=1.5)  # frames that fit several primitives
    frames = 4
    chain = StreamChain(config)
    x = synthetic_streams(2, frames, seed=6, config=config).tensors["x"]
    log_likelihoods = gaussian_log_likelihoods(x, config)
    sequences = torch.tensor(list(itertools.product(range(-1, config.primitives), repeat=frames)))
    log_p = torch.full((len(sequences),), -math.inf, dtype=torch.float64)
    for i, sequence in enumerate(sequences):
        try:
            log_p[i] = stream_posterior(primitive_log_likelihoods(sequence[None], config), config, chain)[1]
        except ValueError:  # an impossible sequence
            pass
    assert torch.isfinite(log_p).sum() >= 20
    observed = log_likelihoods[:, torch.arange(frames), sequences + 1].sum(-1)  # (2, sequences)
    expected = torch.logsumexp(log_p + observed, dim=1)
    posterior, evidence = stream_posterior(log_likelihoods, config, chain)
    assert torch.allclose(evidence, expected, rtol=0, atol=1e-9)
    offsets = torch.tensor([[3.0, -40.0, 7.5, 0.25], [-2.0, 11.0, -0.5, 60.0]], dtype=torch.float64)
    shifted_posterior, shifted = stream_posterior(log_likelihoods + offsets[..., None], config, chain)
    assert torch.allclose(shifted, evidence + offsets.sum(1), rtol=0, atol=1e-9)
    assert torch.allclose(shifted_posterior, posterior, rtol=0, atol=1e-12)
