"""`TrainConfig.horizon="time"`: the learning-rate decay ends when the time budget does, at the
steps max_seconds allows at the measured speed. Time is a fake clock that each training step
advances by a fixed amount, so the horizon is known exactly."""

import json
import shutil
import textwrap

import pytest
import torch

from deepzoo.train import TrainConfig, Trainer
from deepzoo.train import trainer as trainer_module
from deepzoo.train.logging import read_metrics
from deepzoo.train.schedules import lr_factor
from tests.conftest import FakeClock, TwoPlayer, two_player_data
from tests.torchrun import torchrun
from tests.train.test_step_contract import CPU, TWO_GROUPS


class Timed(TwoPlayer):
    """TwoPlayer whose every training step takes `seconds` of the fake clock."""

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        super().__init__()
        self.clock, self.seconds = clock, seconds

    def train_step(self, batch, step, opt):
        self.clock.now += self.seconds
        return super().train_step(batch, step, opt)


def _fit(tmp_path, monkeypatch, seconds, resume=False, **fields):
    clock = FakeClock()
    monkeypatch.setattr(trainer_module, "time", clock)
    defaults = {"steps": 1000, "max_seconds": 10.0}
    cfg = TrainConfig(batch_size=32, optim=TWO_GROUPS, **(CPU | defaults | fields))
    torch.manual_seed(0)
    result = Trainer(Timed(clock, seconds), two_player_data(), cfg, tmp_path, resume=resume).fit()
    train = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["split"] == "train"]
    return result, {r["step"]: r["lr_g"] for r in train}


@pytest.mark.parametrize("seconds,budget_steps", [(0.125, 80), (0.25, 40)])
def test_the_decay_ends_where_the_time_budget_does(tmp_path, monkeypatch, seconds, budget_steps):
    """g's linear decay spans the 10 s budget (80 or 40 steps here), not train.steps (1000): the
    lr logged at step s is that of step s - 1 under horizon 80 (40), from the first log point on
    (the first window's rates are set before any speed is measured: horizon train.steps)."""
    result, lrs = _fit(tmp_path, monkeypatch, seconds, horizon="time")
    assert result.step == budget_steps
    assert lrs[5] == pytest.approx(0.01 * lr_factor(4, 1000, "linear"))
    for step, lr in lrs.items():
        if step > 5:
            assert lr == pytest.approx(0.01 * lr_factor(step - 1, budget_steps, "linear")), step
    assert lrs[budget_steps] == pytest.approx(0.01 / budget_steps)  # the decay's last step
    _, by_steps = _fit(tmp_path / "steps", monkeypatch, seconds)  # the default: train.steps
    assert by_steps[budget_steps] == pytest.approx(0.01 * lr_factor(budget_steps - 1, 1000, "linear"))


def test_a_budget_longer_than_the_run_keeps_the_decay_over_train_steps(tmp_path, monkeypatch):
    """At 0.125 s a step the 10 s budget allows 80 steps, but the run has 60: it decays over
    those 60 (lr_factor(step - 1, 60)) and ends at step 60 with the decay's last rate."""
    result, lrs = _fit(tmp_path, monkeypatch, 0.125, horizon="time", steps=60)
    assert result.step == 60
    for step, lr in lrs.items():
        assert lr == pytest.approx(0.01 * lr_factor(step - 1, 60, "linear")), step


def test_a_resumed_run_estimates_the_horizon_from_the_saved_time(tmp_path, monkeypatch):
    """Stopped by a 5 s budget at step 40 (0.125 s a step), then resumed with 10 s: the steps
    after the resume decay over 10 * 40 / 5 = 80 steps from the first one on."""
    first, _ = _fit(tmp_path, monkeypatch, 0.125, horizon="time", max_seconds=5.0)
    assert first.step == 40
    result, lrs = _fit(tmp_path, monkeypatch, 0.125, resume=True, horizon="time")
    assert result.step == 80
    assert lrs[45] == pytest.approx(0.01 * lr_factor(44, 80, "linear"))


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"horizon": "time"}, "needs a time budget"),
        ({"horizon": "epochs", "max_seconds": 1.0}, "train.horizon must be steps or time"),
    ],
)
def test_bad_horizons_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**fields)


RANKS_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from tests.conftest import FakeClock
    from tests.train.test_horizon import Timed
    from tests.train.test_step_contract import TWO_GROUPS
    from tests.conftest import two_player_data
    from deepzoo.train import TrainConfig, Trainer, distributed
    from deepzoo.train import trainer as trainer_module

    info = distributed.setup("cpu")
    clock = FakeClock()
    trainer_module.time = clock
    cfg = TrainConfig(steps=1000, batch_size=64, optim=TWO_GROUPS, max_seconds=10.0, horizon="time",
                      log_every=5, eval_every=1000, progress=False, precision="fp32", device="cpu")
    torch.manual_seed(0)
    trainer = Trainer(Timed(clock, 0.125 * (info.rank + 1)), two_player_data(), cfg, sys.argv[1], dist=info)
    step = trainer.fit().step
    with open(f"{sys.argv[1]}.rank{info.rank}.json", "w") as f:
        json.dump({"step": step, "horizon": trainer.opt.horizon, "lrs": trainer.opt.lrs()}, f)
    distributed.teardown()
    """
)


def test_ranks_of_different_speeds_set_the_same_rates_from_the_slowest(tmp_path):
    """Rank 0 takes 0.125 s a step, rank 1 0.25 s: both stop at step 40 (the slowest rank's
    budget) and decay over 40 steps, with equal rates (the gradients are averaged over ranks)."""
    script = tmp_path / "ranks.py"
    script.write_text(RANKS_SCRIPT)
    torchrun(
        2,
        [str(script), str(tmp_path / "run")],
        before_retry=lambda: shutil.rmtree(tmp_path / "run", ignore_errors=True),
    )
    ranks = [json.loads((tmp_path / f"run.rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]
    assert ranks[0]["step"] == 40 and ranks[0]["horizon"] == 40
    assert ranks[0]["lrs"]["lr_g"] == pytest.approx(0.01 * lr_factor(39, 40, "linear"))
