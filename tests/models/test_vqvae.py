from dataclasses import replace

import pytest
import torch

from deepzoo.data.mnist import STD
from deepzoo.models.code_prior import CodePrior, CodePriorConfig
from deepzoo.models.gpt import GPT, GPTConfig
from deepzoo.models.vqvae import VQVAE, VQVAEConfig
from deepzoo.train.trainer import TrainConfig, Trainer

SMALL = VQVAEConfig(hidden=32, res_hidden=16, res_layers=1, num_codes=32, code_dim=8, dead_threshold=1.0)


def test_loss_is_scaled_reconstruction_plus_the_quantizer_terms(mnist_small):
    torch.manual_seed(0)
    model = VQVAE(SMALL).eval()
    x = mnist_small.tensors["x"][:16]
    out = model.loss({"x": x})
    q = model.quantizer(model.encoder(x))
    recon = ((model.decoder(q.z_q) - x) ** 2).mean() / STD**2
    assert out["recon"].item() == pytest.approx(recon.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx((recon + 0.25 * q.commit).item(), rel=1e-5)
    assert {"vq", "commit", "perplexity", "usage"} <= out.keys()
    assert model.encode(x).shape == (16, 7, 7)
    assert model.decode(model.encode(x)).shape == x.shape
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert torch.equal(model.train().encode(x), model.eval().encode(x))  # training mode updates nothing
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


# every seed 0-4 in fp32; the bf16 path once, on the mode that used to collapse (bf16 autocast is
# emulated, 20 s a run, on CPUs without AMX)
RUNS = [(ema, seed, "fp32") for ema in (True, False) for seed in range(5)] + [(False, 0, "bf16")]


@pytest.mark.seeds_covered
@pytest.mark.parametrize("ema,seed,precision", RUNS)
def test_a_short_run_learns_to_reconstruct_and_uses_many_codes(ema, seed, precision, mnist_small, tmp_path):
    """Every seed 0-4 learns under the cosine schedule. The loss-trained codebook is its own
    parameter group at 10x the learning rate (one shared Adam rate lets the encoder outrun it:
    see VQVAE.param_groups); with EMA the codebook has no parameters to train."""
    torch.manual_seed(seed)
    model = VQVAE(replace(SMALL, ema=ema))
    x = mnist_small.tensors["x"][:500]
    before = ((model.eval().reconstruct(x) - x) ** 2).mean().item()
    cfg = TrainConfig(
        steps=150, batch_size=64, lr=2e-3, device="cpu", progress=False, eval_every=1000,
        seed=seed, precision=precision,
    )  # fmt: skip
    if not ema:
        cfg = cfg.with_group("codebook", lr=2e-2)
    Trainer(model, mnist_small, cfg, tmp_path).fit()
    after = ((model.eval().reconstruct(x) - x) ** 2).mean().item()
    assert after < 0.6 * before
    assert model.encode(x).unique().numel() >= 16  # dead-code restart keeps the codebook in use


def test_the_codebook_is_its_own_parameter_group_only_when_loss_trained():
    assert set(VQVAE(replace(SMALL, ema=False)).param_groups()) == {"model", "codebook"}
    assert set(VQVAE(SMALL).param_groups()) == {"model"}


def test_prior_reads_class_token_then_codes_and_samples_only_codes():
    torch.manual_seed(0)
    config = CodePriorConfig(gpt=GPTConfig(vocab_size=0, block_size=0, layers=1, heads=2, dim=16))
    prior = CodePrior(config, VQVAE(SMALL))
    assert prior.gpt.config.vocab_size == 32 + 10 and prior.gpt.config.block_size == 49
    codes = torch.randint(0, 32, (3, 7, 7))
    y = torch.tensor([0, 5, 9])
    tokens = prior.tokens(codes, y)
    assert tokens[:, 0].tolist() == [32, 37, 41] and torch.equal(tokens[:, 1:], codes.flatten(1))
    assert prior.loss({"codes": codes, "y": y})["loss"].item() == pytest.approx(
        prior.gpt.loss({"tokens": tokens})["loss"].item()
    )
    prior.train()
    assert not prior.tokenizer.training and not any(p.requires_grad for p in prior.tokenizer.parameters())
    images = prior.eval().sample(4, generator=torch.Generator().manual_seed(0))
    assert images.shape == (4, 1, 28, 28) and 0 <= images.min() and images.max() <= 1


def test_the_encoder_and_decoder_are_the_papers_layers_and_the_quantizer_takes_the_config():
    """Encoder: stride-2 4x4 convolutions, each followed by a ReLU (1 -> hidden / 2 -> hidden ...),
    a 3x3 convolution, the residual stack, a 1x1 convolution to the code dimension. Decoder: a 3x3
    convolution from the codes, the residual stack, stride-2 4x4 transposed convolutions with a
    ReLU between them and none after the last (its output is the image; `decode` clamps it)."""
    from torch import nn

    from deepzoo.nn.residual import ResidualStack

    model = VQVAE(replace(SMALL, image_size=64, downsamples=3))
    down = [nn.Conv2d, nn.ReLU] * 3
    assert [type(m) for m in model.encoder] == down + [nn.Conv2d, ResidualStack, nn.Conv2d]
    convs = [m for m in model.encoder if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.stride) for m in convs] == [
        (1, 16, (4, 4), (2, 2)), (16, 32, (4, 4), (2, 2)), (32, 32, (4, 4), (2, 2)),
        (32, 32, (3, 3), (1, 1)), (32, 8, (1, 1), (1, 1)),
    ]  # fmt: skip
    up = [nn.ConvTranspose2d, nn.ReLU, nn.ConvTranspose2d, nn.ReLU, nn.ConvTranspose2d]
    assert [type(m) for m in model.decoder] == [nn.Conv2d, ResidualStack] + up
    assert model.decoder[-1].out_channels == 1
    config = replace(SMALL, beta=0.5, ema=False, decay=0.9, dead_threshold=2.0, kmeans_init=True)
    q = VQVAE(config).quantizer
    taken = (q.num_codes, q.dim, q.beta, q.ema, q.decay, q.dead_threshold, q.kmeans_init)
    assert taken == (32, 8, 0.5, False, 0.9, 2.0, True)


def test_vqvae_downsamples_to_any_grid():
    model = VQVAE(replace(SMALL, image_size=64, downsamples=3)).eval()
    x = torch.rand(2, 1, 64, 64)
    assert model.grid == (8, 8) and model.encode(x).shape == (2, 8, 8)
    assert model.reconstruct(x).shape == x.shape
    with pytest.raises(ValueError, match="divide"):
        VQVAEConfig(image_size=28, downsamples=3)


def test_generate_draws_only_ids_below_max_token():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=12, block_size=16, layers=1, heads=2, dim=16))
    with torch.no_grad():
        gpt.embed.weight[10:] += 5.0  # make the forbidden ids the likeliest
    out = gpt.generate(torch.full((64, 1), 10), 15, max_token=10)
    assert out[:, 1:].max() < 10
    assert gpt.generate(torch.full((64, 1), 10), 15)[:, 1:].max() >= 10


def test_the_papers_settings_are_the_defaults():
    """van den Oord et al. (2017): commitment weight beta = 0.25 and, for the EMA codebook, decay
    gamma = 0.99 (their appendix)."""
    config = VQVAEConfig()
    assert (config.beta, config.ema, config.decay) == (0.25, True, 0.99)
