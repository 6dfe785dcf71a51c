"""The ensemble's averaged probabilities against their definition."""

import pytest
import torch

from deepzoo.models.ensemble import Ensemble


class Fixed(torch.nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits


def test_an_ensemble_returns_the_log_of_its_members_mean_probabilities():
    generator = torch.Generator().manual_seed(0)
    logits = [torch.randn(5, 4, generator=generator) * 3 for _ in range(3)]
    ensemble = Ensemble([Fixed(z) for z in logits])
    mean = sum(z.double().softmax(-1) for z in logits) / 3
    out = ensemble(torch.zeros(5))
    torch.testing.assert_close(out.double(), mean.log(), rtol=0, atol=1e-6)
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(5))  # a distribution
    # not the softmax of the mean logits (another, sharper rule)
    assert not torch.allclose(out, (sum(logits) / 3).log_softmax(-1), atol=1e-3)
    torch.testing.assert_close(Ensemble([Fixed(logits[0])])(torch.zeros(5)), logits[0].log_softmax(-1))
    with pytest.raises(ValueError, match="at least one"):
        Ensemble([])
