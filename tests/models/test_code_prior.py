"""The stage-2 prior reads any tokenizer through its interface (encode, decode, num_codes, grid)."""

import pytest
import torch
from torch import nn

from deepzoo.models.code_prior import CodePrior, CodePriorConfig
from deepzoo.models.gpt import GPTConfig


class GridTokenizer(nn.Module):
    """A tokenizer of a 3 x 5 grid of 7 codes: decode paints code k as the grey level k / 6."""

    num_codes, grid = 7, (3, 5)

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, 0] * 6).round().long()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return (codes.float() / 6 * self.scale)[:, None]


def _prior(**kw) -> CodePrior:
    torch.manual_seed(0)
    config = CodePriorConfig(GPTConfig(vocab_size=0, block_size=0, layers=1, heads=2, dim=16), **kw)
    return CodePrior(config, GridTokenizer())


def test_vocabulary_and_context_come_from_the_tokenizer():
    prior = _prior(num_classes=4, condition_length=2)
    assert prior.gpt.config.vocab_size == 7 + 4 and prior.gpt.config.block_size == 2 + 15 - 1
    with pytest.raises(ValueError, match="block_size"):
        CodePrior(CodePriorConfig(GPTConfig(vocab_size=0, block_size=49)), GridTokenizer())
    assert not any(p.requires_grad for p in prior.tokenizer.parameters())


def test_condition_tokens_are_given_and_only_the_codes_are_scored():
    prior = _prior(num_classes=4, condition_length=2)
    codes, y = torch.randint(0, 7, (3, 3, 5)), torch.tensor([[0, 3], [1, 1], [2, 0]])
    tokens = prior.tokens(codes, y)
    assert tokens[:, :2].tolist() == [[7, 10], [8, 8], [9, 7]] and torch.equal(
        tokens[:, 2:], codes.flatten(1)
    )
    logits = prior.gpt(tokens[:, :-1])
    expected = nn.functional.cross_entropy(logits[:, 1:].flatten(0, 1), codes.flatten())
    assert prior.loss({"codes": codes, "y": y})["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="condition labels"):
        prior.loss({"codes": codes, "y": torch.tensor([0, 1, 2])})


def test_samples_are_valid_code_grids_decoded_by_the_tokenizer():
    prior = _prior(num_classes=4, condition_length=2, condition_bank=3).eval()
    with pytest.raises(ValueError, match="labels"):
        _prior(num_classes=4, condition_length=2).sample(2)
    prior.remember_conditions(torch.tensor([[0, 3], [1, 1], [2, 0], [3, 3]]))
    assert prior.conditions.tolist() == [[0, 3], [1, 1], [2, 0]]
    with torch.no_grad():
        prior.gpt.embed.weight[7:] += 5.0  # make the condition ids the likeliest: they must not be drawn
    codes = prior.sample_codes(40, generator=torch.Generator().manual_seed(0))
    assert codes.shape == (40, 3, 5) and codes.min() >= 0 and codes.max() < 7
    images = prior.sample(4, generator=torch.Generator().manual_seed(0))
    assert images.shape == (4, 1, 3, 5)
    torch.testing.assert_close(
        prior.tokenizer.encode(images), prior.sample_codes(4, generator=torch.Generator().manual_seed(0))
    )


def test_sampling_is_the_gpts_generation_at_the_configs_temperature_and_top_k_in_raster_order():
    """Codes are drawn by gpt.generate after the condition tokens, under the config's temperature
    and top-k, only ids < K, and laid out row by row; without labels the remembered condition
    rows are cycled. (Seeds 0-199: the draws at temperature 1 or without top-k differ, and so
    does the column-by-column layout.)"""
    prior = _prior(num_classes=4, condition_length=2, condition_bank=3, temperature=0.5, top_k=3).eval()
    with torch.no_grad():
        prior.gpt.embed.weight.mul_(3)  # (tied head) logits away from uniform: temperature matters
    prior.remember_conditions(torch.tensor([[0, 3], [1, 1], [2, 0]]))
    labels = prior.default_labels(5, torch.device("cpu"))
    assert labels.tolist() == [[0, 3], [1, 1], [2, 0], [0, 3], [1, 1]]
    codes = prior.sample_codes(5, generator=torch.Generator().manual_seed(0))

    def generate(temperature: float, top_k: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        return prior.gpt.generate(7 + labels, 15, temperature, top_k, generator=generator, max_token=7)[:, 2:]

    expected = generate(0.5, 3)
    assert torch.equal(codes, expected.view(5, 3, 5))
    assert not torch.equal(codes, expected.view(5, 5, 3).transpose(1, 2))  # the test can tell the layout
    assert not torch.equal(expected, generate(1.0, 3)) and not torch.equal(expected, generate(0.5, 0))


def test_training_the_prior_leaves_the_tokenizer_in_eval_mode():
    prior = _prior().train()
    assert prior.training and prior.gpt.training and not prior.tokenizer.training


def test_one_condition_token_cycles_the_classes_by_default():
    prior = _prior(num_classes=3)
    assert prior.default_labels(5, torch.device("cpu")).tolist() == [0, 1, 2, 0, 1]


def test_a_short_run_learns_the_code_distribution():
    """Codes that copy the condition (every code = y) are learned to near certainty."""
    prior = _prior(num_classes=7)
    optimizer = torch.optim.Adam(prior.gpt.parameters(), lr=1e-2)
    y = torch.arange(64) % 7
    codes = y[:, None, None].expand(64, 3, 5)
    for _ in range(60):
        loss = prior.loss({"codes": codes, "y": y})["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1  # from log 11 = 2.4 nats per code at the start
    # mean p(right code) >= exp(-0.1) = 0.905 (Jensen); 210 draws have a standard deviation of 0.02
    drawn = prior.eval().sample_codes(14, generator=torch.Generator().manual_seed(0))
    assert (drawn == (torch.arange(14) % 7)[:, None, None]).float().mean() > 0.8


def test_a_float64_prior_keeps_its_loss_in_float64():
    prior = _prior(num_classes=4, condition_length=2).double()
    codes, y = torch.randint(0, 7, (3, 3, 5)), torch.tensor([[0, 3], [1, 1], [2, 0]])
    logits = prior.gpt(prior.tokens(codes, y)[:, :-1])
    expected = nn.functional.cross_entropy(logits[:, 1:].flatten(0, 1), codes.flatten())
    loss = prior.loss({"codes": codes, "y": y})["loss"]
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, expected, rtol=1e-14, atol=0)
