import math

import pytest
import torch

from deepzoo.data.tensors import TensorData
from deepzoo.metrics.likelihood import bits_per_dim, importance_weighted_bound, iwae_nll


def _linear_gaussian(q_mean_scale: float, q_var: float):
    """z ~ N(0, 1), x | z ~ N(z, 1), so p(x) = N(0, 2) exactly; q(z|x) = N(q_mean_scale x, q_var).
    The true posterior is N(x / 2, 1 / 2)."""

    def log_weights(x, k, y=None):
        z = q_mean_scale * x + math.sqrt(q_var) * torch.randn(k, len(x), dtype=torch.float64)
        log_n = lambda v, mean, var: -0.5 * (math.log(2 * math.pi * var) + (v - mean) ** 2 / var)  # noqa: E731
        return log_n(z, 0.0, 1.0) + log_n(x, z, 1.0) - log_n(z, q_mean_scale * x, q_var)

    return log_weights


def _log_px(x):
    return -0.5 * (math.log(2 * math.pi * 2) + x**2 / 2)


def test_exact_posterior_gives_the_exact_likelihood_for_every_k():
    x = torch.linspace(-3, 3, 7, dtype=torch.float64)
    bound, elbo = importance_weighted_bound(_linear_gaussian(0.5, 0.5), x, k=5)
    torch.testing.assert_close(bound, _log_px(x))
    torch.testing.assert_close(elbo, _log_px(x))


def test_bound_tightens_with_k_and_approaches_log_px_from_below():
    torch.manual_seed(0)
    x = torch.linspace(-2, 2, 1000, dtype=torch.float64)  # 1,000 points: the mean's noise << the gaps
    log_weights = _linear_gaussian(0.0, 1.0)  # the prior as proposal: a poor q
    bounds = {}
    for k in (1, 10, 100, 2000):
        bound, _ = importance_weighted_bound(log_weights, x, k, chunk=64)
        bounds[k] = bound.mean().item()
    # measured over seeds 0-9 (gaps to log p(x)): L_1 -0.39..-0.59, L_10 -0.018..-0.032,
    # L_100 -0.007..+0.001, L_2000 -0.0007..+0.0004. Beyond k = 100 the gap is below the noise
    # of the estimate, so the order is asserted up to k = 100 and L_2000 is asserted at log p(x)
    assert bounds[1] < bounds[10] < bounds[100]
    log_px = _log_px(x).mean().item()
    assert log_px - 0.005 < bounds[2000] <= log_px + 0.002


def test_chunking_accumulates_logsumexp_exactly():
    weights = torch.randn(37, 5, dtype=torch.float64) * 30
    served = iter(weights.split(8))

    def log_weights(x, k, y=None):
        return next(served)[:k]

    bound, elbo = importance_weighted_bound(log_weights, torch.zeros(5), k=37, chunk=8)
    torch.testing.assert_close(bound, torch.logsumexp(weights, 0) - math.log(37))
    torch.testing.assert_close(elbo, weights.mean(0))


def test_bits_per_dim():
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)


def test_no_samples_or_chunks_of_none_are_refused():
    def log_weights(x, k, y=None):
        assert k >= 1, "asked for no samples"
        return torch.zeros(k, len(x), dtype=torch.float64)

    for k, chunk in ((0, 10), (5, 0)):
        with pytest.raises(ValueError, match="k >= 1 and chunk >= 1"):
            importance_weighted_bound(log_weights, torch.zeros(3), k, chunk)


@pytest.mark.parametrize("conditional", [False, True])
def test_iwae_nll_is_the_mean_negative_bound_per_example_over_uneven_batches(conditional):
    """-L_k and -ELBO averaged over 7 examples in batches of 3 (3 + 3 + 1); the labels reach the
    weights only when the model is conditional."""
    torch.manual_seed(0)
    x = torch.linspace(-3, 3, 7, dtype=torch.float64)
    labels = torch.arange(7)
    exact, poor, seen, last = _linear_gaussian(0.5, 0.5), _linear_gaussian(0.0, 1.0), [], []

    def log_weights(x, k, y=None):
        seen.append(y)
        if len(x) == 3:
            return exact(x, k)
        last.append(poor(x, k))  # the last batch with a poor q: the bounds lie below log p(x)
        return last[-1]

    result = iwae_nll(
        log_weights, TensorData({"x": x, "y": labels}), k=4, batch_size=3, conditional=conditional
    )
    (w,) = last
    bound, elbo = torch.logsumexp(w, 0).item() - math.log(4), w.mean().item()
    assert result["nll"] == pytest.approx((-_log_px(x[:6]).sum().item() - bound) / 7)
    assert result["neg_elbo"] == pytest.approx((-_log_px(x[:6]).sum().item() - elbo) / 7)
    assert result["nll"] < result["neg_elbo"]
    if conditional:
        assert torch.equal(torch.cat(seen), labels)
    else:
        assert seen == [None, None, None]
