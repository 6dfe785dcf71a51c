import pytest
import torch

from deepzoo.train.schedules import lr_factor


def test_cosine_equals_torch_cosine_annealing():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=50, eta_min=0.1)
    for step in range(50):
        assert lr_factor(step, 50, "cosine", 0, min_ratio=0.1) == pytest.approx(
            optimizer.param_groups[0]["lr"]
        )
        optimizer.step()
        scheduler.step()


def test_linear_warmup_then_linear_decay_equals_torch_linear_lr():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.0, total_iters=40)
    for step in range(40):
        assert lr_factor(step, 40, "linear") == pytest.approx(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert [lr_factor(t, 100, "linear", warmup_steps=4) for t in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_inverse_sqrt_matches_the_transformer_paper_after_warmup():
    warmup = 16
    for step in range(warmup, 200):
        assert lr_factor(step, 1000, "inverse-sqrt", warmup) == pytest.approx((warmup / (step + 1)) ** 0.5)


def test_unknown_schedule_is_rejected():
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(0, 10, "step")
