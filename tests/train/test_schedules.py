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


@pytest.mark.parametrize("warmup", [0, 5])
def test_step_decay_equals_torch_multistep_lr_after_the_warmup(warmup):
    """Milestones 0.3, 0.5, 0.75 of the 40 steps after warm-up: steps W + 12, W + 20, W + 30."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [12, 20, 30], gamma=0.2)
    for step in range(40):
        factor = lr_factor(warmup + step, warmup + 40, "step", warmup, milestones=(0.3, 0.5, 0.75), gamma=0.2)
        assert factor == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-12)
        optimizer.step()
        scheduler.step()
    assert lr_factor(39, 40, "step") == pytest.approx(0.01)  # ResNet's two drops by 10 (the default)
    # a milestone between steps falls at the next step: 0.33 of 40 is 13.2 -> step 14
    assert [lr_factor(t, 40, "step", milestones=(0.33,)) for t in (13, 14)] == [1.0, pytest.approx(0.1)]


def test_unknown_schedule_is_rejected():
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(0, 10, "exponential")


def test_warm_restarts_equal_torch_cosine_annealing_warm_restarts():
    """Three cycles of 20 steps after no warm-up: torch's CosineAnnealingWarmRestarts(T_0=20)."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=20, eta_min=0.1)
    for step in range(60):
        factor = lr_factor(step, 60, "cosine", 0, min_ratio=0.1, cycles=3)
        assert factor == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-9)
        optimizer.step()
        scheduler.step()


def test_each_cycle_repeats_the_decay_after_the_warm_up_and_ends_where_cycle_ends_says():
    """Linear decay, 4 warm-up steps, then 3 cycles over 30 steps: each is the 10-step decay."""
    from deepzoo.train.schedules import cycle_ends

    one = [lr_factor(t, 10, "linear") for t in range(10)]
    cycled = [lr_factor(4 + t, 34, "linear", warmup_steps=4, cycles=3) for t in range(30)]
    assert cycled == pytest.approx(one * 3)
    assert cycle_ends(34, 4, 3) == [14, 24, 34]
    assert cycle_ends(100, 0, 3) == [34, 67, 100]  # steps done: cycle k holds t < k 100 / 3
    restarts = [
        t + 1
        for t in range(99)
        if lr_factor(t + 1, 100, "cosine", cycles=3) > lr_factor(t, 100, "cosine", cycles=3)
    ]
    assert restarts == cycle_ends(100, 0, 3)[:-1]  # the first step of each new cycle is the full rate
    assert lr_factor(99, 100, "cosine", cycles=1) == lr_factor(99, 100, "cosine")


def test_warm_restarts_need_a_decay_that_restarts():
    from deepzoo.train.config import TrainConfig

    with pytest.raises(ValueError, match="cosine or linear"):
        lr_factor(5, 10, "step", cycles=2)
    with pytest.raises(ValueError, match="train.lr-cycles 2 .warm restarts. needs a cosine or linear"):
        TrainConfig(schedule="constant", lr_cycles=2)
    with pytest.raises(ValueError, match="train.snapshots needs"):
        TrainConfig(snapshots=True, horizon="time", max_seconds=10)


def test_linear_decay_to_a_floor_equals_torch_linear_lr_with_that_end_factor():
    """f(t) = r + (1 - r)(1 - t / T) is torch's LinearLR(1, r, T)."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.2, total_iters=30)
    for step in range(30):
        assert lr_factor(step, 30, "linear", min_ratio=0.2) == pytest.approx(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()


def test_inverse_sqrt_without_warm_up_starts_at_the_full_rate():
    assert [lr_factor(t, 100, "inverse-sqrt") for t in (0, 3, 99)] == pytest.approx([1.0, 0.5, 0.1])


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
@pytest.mark.parametrize("cycles", [1, 3])
def test_steps_past_the_end_stay_at_the_floor(schedule, cycles):
    """A run may step past its planned total (a time horizon's estimate): the decay has ended
    there, and a warm restart must not begin."""
    for step in (40, 41, 60):
        assert lr_factor(step, 40, schedule, 4, min_ratio=0.1, cycles=cycles) == pytest.approx(0.1)
    assert lr_factor(39, 40, schedule, 4, min_ratio=0.1, cycles=cycles) < 0.2


def test_more_cycles_than_steps_end_each_step_once():
    from deepzoo.train.schedules import cycle_ends

    assert cycle_ends(5, 0, 8) == [1, 2, 3, 4, 5]
    assert cycle_ends(12, 10, 3) == [11, 12]
    assert cycle_ends(5, 10, 3) == [5]  # a warm-up as long as the run: no cycle but the end


def _transformers_factor(make, **kwargs):
    """The multiplier of a transformers schedule (a LambdaLR) as a function of the step."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return make(optimizer, **kwargs).lr_lambdas[0]


@pytest.mark.parametrize("warmup", [0, 1, 10])
def test_the_schedules_equal_transformers_after_the_warm_up_and_one_step_later_during_it(warmup):
    """Our warm-up counts the first step as 1 (Vaswani et al.'s step_num), (t + 1) / W, so no step
    runs at rate 0; transformers' counts it as 0, t / W. After the warm-up the decays agree step by
    step; the inverse-sqrt rule is transformers' one step later at every step."""
    from transformers import optimization as hf

    T = 120
    schedules = {
        ("cosine", 0.0, 1): _transformers_factor(
            hf.get_cosine_schedule_with_warmup, num_warmup_steps=warmup, num_training_steps=T
        ),
        ("cosine", 0.2, 1): _transformers_factor(
            hf.get_cosine_with_min_lr_schedule_with_warmup,
            num_warmup_steps=warmup,
            num_training_steps=T,
            min_lr_rate=0.2,
        ),  # fmt: skip
        ("linear", 0.0, 1): _transformers_factor(
            hf.get_linear_schedule_with_warmup, num_warmup_steps=warmup, num_training_steps=T
        ),
        ("cosine", 0.0, 3): _transformers_factor(
            hf.get_cosine_with_hard_restarts_schedule_with_warmup,
            num_warmup_steps=warmup,
            num_training_steps=T,
            num_cycles=3,
        ),  # fmt: skip
    }
    for (name, floor, cycles), theirs in schedules.items():
        for t in range(T + 1):  # past T transformers' cosine rises again, ours stays at the floor
            ours = lr_factor(t, T, name, warmup, min_ratio=floor, cycles=cycles)
            expected = theirs(t + 1) if t < warmup else theirs(t)
            assert ours == pytest.approx(expected, rel=1e-12, abs=1e-15), (name, floor, cycles, t)
    scale = max(
        warmup, 1
    )  # no warm-up reads as W = 1: the full rate at the first step, then sqrt(1 / (t + 1))
    theirs = _transformers_factor(hf.get_inverse_sqrt_schedule, num_warmup_steps=scale, timescale=scale)
    for t in range(T):
        assert lr_factor(t, T, "inverse-sqrt", warmup) == pytest.approx(theirs(t + 1), rel=1e-12)
