import math

import pytest
import torch

from deepzoo.metrics.likelihood import importance_weighted_bound
from deepzoo.models.autoencoder import Autoencoder, AutoencoderConfig, gaussian_kl, gaussian_log_prob
from deepzoo.train.trainer import TrainConfig, Trainer


def _model(**kw) -> Autoencoder:
    torch.manual_seed(0)
    return Autoencoder(AutoencoderConfig(**({"latent": 8, "hidden": 64} | kw)))


def test_kl_equals_torch_closed_form_and_its_monte_carlo_estimate():
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(gaussian_kl(mu, logvar), torch.distributions.kl_divergence(q, p).sum(-1))
    z = q.sample((200_000,))
    monte_carlo = (gaussian_log_prob(z, mu, logvar) - gaussian_log_prob(z, 0 * mu, 0 * logvar)).mean(0)
    torch.testing.assert_close(monte_carlo, gaussian_kl(mu, logvar), atol=0.02, rtol=0.01)
    torch.testing.assert_close(gaussian_log_prob(z[:3], mu, logvar), q.log_prob(z[:3]).sum(-1))


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_loss_is_reconstruction_plus_kl_in_nats_per_image(arch, mnist_small):
    model = _model(arch=arch).eval()
    batch = mnist_small[slice(0, 16)]
    batch["x"] = torch.bernoulli(batch["x"], generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    out = model.loss(batch)
    assert out["loss"].item() == pytest.approx(out["recon"].item() + out["kl"].item(), rel=1e-6)
    torch.manual_seed(1)
    mu, logvar = model.encode(batch["x"])
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(model.decode(z), batch["x"], reduction="sum")
    assert out["recon"].item() == pytest.approx(bce.item() / 16, rel=1e-5)
    assert out["kl"].item() == pytest.approx(gaussian_kl(mu, logvar).mean().item(), rel=1e-6)


def test_training_binarizes_dynamically_and_evaluation_does_not(mnist_small):
    model = _model()
    batch = mnist_small[slice(0, 8)]
    torch.manual_seed(0)
    model.train()
    a = model.loss(batch)["recon"].item()
    model.eval()
    torch.manual_seed(0)
    b = model.loss(batch)["recon"].item()
    assert a != b  # the same noise, but binary targets in training


def test_gaussian_likelihood_is_the_normal_density():
    model = _model(likelihood="gaussian")
    with torch.no_grad():
        model.log_scale.fill_(-1.0)
    x, mean = torch.rand(2, 1, 28, 28), torch.rand(2, 1, 28, 28)
    expected = torch.distributions.Normal(mean, torch.tensor(-1.0).exp()).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(model.log_likelihood(x, mean), expected)


def test_iwae_bound_tightens_with_k(mnist_small):
    """E L_k grows with k. The untrained q(z|x) is close to its posterior, so the gaps are smaller
    than the bound's noise (L_200 - L_10 = 0.01-0.15 nats, standard error 0.06 over 20 images);
    widening q (log variance + 3) makes more samples matter: gaps of 40-70 and 17-24 nats at
    4-6 standard errors for seeds 0-4."""
    model = _model().eval()
    with torch.no_grad():
        model.encoder.head.bias[model.config.latent :] += 3.0
    x = torch.bernoulli(mnist_small.tensors["x"][:20], generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    means = {}
    with torch.no_grad():
        for k in (1, 10, 200):
            bound, _ = importance_weighted_bound(model.log_importance_weights, x, k, chunk=50)
            means[k] = bound.mean().item()
    assert means[1] < means[10] < means[200]


def test_cvae_needs_labels_and_samples_the_asked_digits():
    model = _model(kind="cvae").eval()
    with pytest.raises(ValueError, match="labels"):
        model.encode(torch.rand(2, 1, 28, 28))
    samples = model.sample(12, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (12, 1, 28, 28) and 0 <= samples.min() and samples.max() <= 1
    labels = torch.tensor([3, 3])
    torch.manual_seed(0)
    a = model.sample(2, labels=labels, generator=torch.Generator().manual_seed(0))
    b = model.sample(2, labels=torch.tensor([4, 4]), generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(a, b)  # the same z, another digit


def test_ae_samples_from_the_gaussian_of_its_training_codes(mnist_small):
    model = _model(kind="ae", arch="conv")
    with pytest.raises(ValueError, match="no likelihood"):
        model.log_importance_weights(torch.rand(2, 1, 28, 28), 2)
    model.train().loss(mnist_small[slice(0, 64)])
    assert not torch.equal(model.code_mean, torch.zeros(8))
    assert model.sample(4).shape == (4, 1, 28, 28)


@pytest.mark.parametrize("kind", ["vae", "cvae"])
def test_a_short_run_lowers_the_negative_elbo(kind, mnist_small, tmp_path):
    model = _model(kind=kind, hidden=128)
    batch = mnist_small[slice(0, 500)]
    batch["x"] = torch.bernoulli(batch["x"], generator=torch.Generator().manual_seed(0))
    before = model.eval().loss(batch)["loss"].item()
    cfg = TrainConfig(steps=150, batch_size=64, lr=2e-3, device="cpu", progress=False, eval_every=1000)
    Trainer(model, mnist_small, cfg, tmp_path).fit()
    after = model.eval().loss(batch)["loss"].item()
    assert after < before - 200  # from ~545 nats (random) to well below 345


def test_the_importance_proposal_draws_with_the_standard_deviation():
    """With the decoder term removed, mean_i log w_i = E_q[log p(z) - log q(z|x)] = -KL(q || p).
    The encoder is pinned to sigma = 0.5 (variance 0.25), where a proposal drawn with the variance
    instead of the standard deviation gives a visibly different mean."""
    model = _model().eval()
    latent = model.config.latent
    mu = torch.tensor([[0.3] * latent, [-1.0] * latent])
    logvar = torch.full_like(mu, math.log(0.25))
    model.encode = lambda x, y=None: (mu, logvar)
    model.log_likelihood = lambda x, out: torch.zeros(out.shape[:2])
    k = 20_000
    torch.manual_seed(0)
    with torch.no_grad():
        log_w = model.log_importance_weights(torch.zeros(2, 1, 28, 28), k)
    kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(1)  # KL(N(mu, sigma^2) || N(0, I))
    tolerance = 5 * log_w.std(0) / k**0.5  # five Monte Carlo standard errors
    assert ((log_w.mean(0) + kl).abs() < tolerance).all()


def test_each_cvae_importance_sample_is_decoded_with_its_own_images_label():
    """z is (k, B, latent), decoded flat (k B rows, k-major): row i B + j holds image j's label."""
    model = _model(kind="cvae").eval()
    y, k, seen = torch.tensor([3, 7, 1]), 4, []
    decode = model.decode
    model.decode = lambda z, labels: seen.append(labels) or decode(z, labels)
    with torch.no_grad():
        model.log_importance_weights(torch.rand(3, 1, 28, 28), k, y)
    assert torch.equal(seen[0].reshape(k, 3), y.expand(k, 3))


def test_the_ae_draws_codes_from_the_gaussian_it_tracks():
    """code_mean and code_var are exponential moving averages (momentum 0.01) of the batch codes'
    mean and variance; `sample` decodes z ~ N(code_mean, diag code_var). 20,000 draws at variance
    9: the sample variance is within 5 standard errors (5 * 9 sqrt(2 / 20000) = 0.45) of 9."""
    model = _model(kind="ae")
    codes = torch.randn(500, 8, generator=torch.Generator().manual_seed(0)) * 3 + 2
    model._track_codes(codes)
    torch.testing.assert_close(model.code_mean, 0.01 * codes.mean(0))
    torch.testing.assert_close(model.code_var, 0.99 + 0.01 * codes.var(0))
    model.code_mean.fill_(2.0)
    model.code_var.fill_(9.0)
    model.decode, model.mean_image = (lambda z, y=None: z), (lambda out: out)  # sample returns z
    z = model.sample(20_000, generator=torch.Generator().manual_seed(1))
    assert (z.mean(0) - 2).abs().max() < 5 * 3 / 20_000**0.5
    assert (z.var(0) - 9).abs().max() < 0.45


def test_the_ae_reconstructs_the_binarized_image_it_encoded(mnist_small):
    """In training a Bernoulli AE draws x_b ~ Bernoulli(x) once and scores -log p(x_b | dec(enc(x_b)))."""
    model = _model(kind="ae").train()
    x = mnist_small.tensors["x"][:16]
    torch.manual_seed(5)
    recon = model.loss({"x": x})["recon"]
    torch.manual_seed(5)
    x_b = torch.bernoulli(x)
    with torch.no_grad():
        expected = -model.log_likelihood(x_b, model.decode(model.encode(x_b)[0])).mean()
    torch.testing.assert_close(recon.detach(), expected)


def test_a_reconstruction_decodes_the_posterior_mean_with_the_images_label():
    model = _model(kind="cvae").eval()
    x, y, seen = torch.rand(3, 1, 28, 28), torch.tensor([3, 7, 1]), []
    decode = model.decode
    model.decode = lambda z, labels: seen.append((z, labels)) or decode(z, labels)
    out = model.reconstruct(x, y)
    with torch.no_grad():
        mu, _ = model.encode(x, y)
        torch.testing.assert_close(out, torch.sigmoid(decode(mu, y)))
    torch.testing.assert_close(seen[0][0], mu)
    assert torch.equal(seen[0][1], y)


def test_cvae_samples_default_to_digits_zero_to_nine_repeating():
    model = _model(kind="cvae").eval()
    seen = []
    decode = model.decode
    model.decode = lambda z, y: seen.append(y) or decode(z, y)
    model.sample(12)
    assert seen[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def test_mean_images_and_posterior_variances_are_not_clipped_early():
    """A Gaussian decoder's mean is clamped to [0, 1] (not squashed by a sigmoid); the posterior
    log-variance is only clamped far out, to [-30, 20], for exp's sake (sigma^2 = e^-10 stays)."""
    gaussian = _model(likelihood="gaussian")
    out = torch.tensor([-0.5, 0.3, 1.5]).reshape(3, 1, 1, 1)
    assert gaussian.mean_image(out).flatten().tolist() == pytest.approx([0.0, 0.3, 1.0])
    model = _model()
    with torch.no_grad():
        model.encoder.head.weight.zero_()
        model.encoder.head.bias.copy_(torch.cat([torch.zeros(8), torch.full((8,), -10.0)]))
        _, logvar = model.encode(torch.rand(2, 1, 28, 28))
    assert torch.equal(logvar, torch.full((2, 8), -10.0))
