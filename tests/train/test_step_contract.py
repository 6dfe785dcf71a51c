"""The step contract (ARCHITECTURE.md): named parameter groups with their own optimizers,
`train_step(batch, step, opt)` with `opt.update`, batch sources, EMA of a submodule, and what
resume, DDP, non-finite values, divergence and interrupts guarantee, proven on a two-optimizer
toy model that alternates updates."""

import itertools
import shutil
import signal
import textwrap

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from deepzoo.train import (
    DivergedError,
    GeneratedBatches,
    NonFiniteLossError,
    OptimConfig,
    ShuffledBatches,
    TrainConfig,
    Trainer,
    TrainingInterrupted,
    TrainingStopped,
    distributed,
)
from deepzoo.train import checkpoint as ckpt
from deepzoo.train.batches import batch_indices, permutation
from deepzoo.train.logging import read_metrics
from deepzoo.train.rundir import RunDirError
from deepzoo.train.schedules import lr_factor
from deepzoo.train.step import Optimizers, named_groups
from tests.conftest import TinyNet, TwoPlayer, one_thread, two_player_data
from tests.torchrun import torchrun

CPU = dict(progress=False, precision="fp32", device="cpu", log_every=5, eval_every=1000)
TWO_GROUPS = {
    "g": OptimConfig(optimizer="adamw", lr=0.01, schedule="linear"),
    "d": OptimConfig(optimizer="sgd", lr=0.1, schedule="constant"),
}


def _opt(model, **cfg):
    return Optimizers(named_groups(model), TrainConfig(**cfg), distributed.setup("cpu"))


def test_an_update_changes_only_its_groups_and_discards_the_others_gradients():
    torch.manual_seed(0)
    model = TwoPlayer()
    opt = _opt(model, optim=TWO_GROUPS)
    g_before = [p.detach().clone() for p in model.g.parameters()]
    d_before = [p.detach().clone() for p in model.d.parameters()]
    loss = model.d(model.g(torch.randn(8, 4))).mean()  # reaches both groups
    norms = opt.update("d", loss)
    assert set(norms) == {"grad_norm_d"} and norms["grad_norm_d"] > 0
    assert all(torch.equal(p, b) for p, b in zip(model.g.parameters(), g_before))
    assert not all(torch.equal(p, b) for p, b in zip(model.d.parameters(), d_before))
    assert all(p.grad is None for p in model.parameters())  # g's gradient is never applied later
    # SGD without momentum: the step is exactly -lr * grad
    model2 = TwoPlayer()
    model2.load_state_dict({k: v for k, v in zip(model.state_dict(), [*g_before, *d_before])})
    loss2 = model2.d(model2.g(torch.randn(8, 4, generator=torch.Generator().manual_seed(1)))).mean()
    grads = torch.autograd.grad(loss2, list(model2.d.parameters()))
    opt2 = _opt(model2, optim=TWO_GROUPS | {"d": OptimConfig(optimizer="sgd", lr=0.1, momentum=0.0)})
    before2 = [p.detach().clone() for p in model2.d.parameters()]
    loss2 = model2.d(model2.g(torch.randn(8, 4, generator=torch.Generator().manual_seed(1)))).mean()
    opt2.update("d", loss2)
    for p, b, g in zip(model2.d.parameters(), before2, grads):
        torch.testing.assert_close(p.detach(), b - 0.1 * g)


def test_groups_must_partition_the_trainable_parameters_and_overrides_must_name_groups():
    class Overlapping(TwoPlayer):
        def param_groups(self):
            return {"g": list(self.g.parameters()), "all": list(self.parameters())}

    class Partial(TwoPlayer):
        def param_groups(self):
            return {"g": list(self.g.parameters())}

    class OneLeftOut(TwoPlayer):
        def param_groups(self):
            return {"g": list(self.g.parameters()), "d": list(self.d.parameters())[:-1]}

    class Foreign(TwoPlayer):
        def param_groups(self):
            d = list(self.d.parameters())
            return {"g": list(self.g.parameters()), "d": d[:-1] + [nn.Parameter(torch.zeros(1))]}

    with pytest.raises(ValueError, match="both group"):
        named_groups(Overlapping())
    for uncovered in (Partial(), OneLeftOut(), Foreign()):  # the last: as many, one not the model's
        with pytest.raises(ValueError, match="cover every trainable"):
            named_groups(uncovered)
    with pytest.raises(ValueError, match=r"train.optim names \['gen'\]"):
        _opt(TwoPlayer(), optim={"gen": OptimConfig(lr=1e-3)})
    assert list(named_groups(TinyNet())) == ["model"]
    saved = _opt(TinyNet()).state_dict()  # a one-group checkpoint cannot resume a two-group model
    with pytest.raises(
        ValueError, match=r"holds optimizers \['model'\], the model's groups are \['d', 'g'\]"
    ):
        _opt(TwoPlayer()).load_state_dict(saved)
    only_g = {"g": _opt(TwoPlayer()).state_dict()["g"]}  # nor one that lost a group's optimizer
    with pytest.raises(ValueError, match=r"holds optimizers \['g'\], the model's groups are \['d', 'g'\]"):
        _opt(TwoPlayer()).load_state_dict(only_g)


def test_group_settings_fall_back_to_the_train_defaults():
    cfg = TrainConfig(lr=3e-4, betas=(0.5, 0.9), grad_clip=1.0, optim={"d": OptimConfig(lr=1e-3)})
    assert (
        cfg.group("d").lr == 1e-3 and cfg.group("d").betas == (0.5, 0.9) and cfg.group("d").grad_clip == 1.0
    )
    assert cfg.group("g").lr == 3e-4
    assert cfg.with_group("g", lr=5e-5).group("g").lr == 5e-5
    # with_group adds to a group's overrides; an override of 0 or False is an override, not "unset"
    both = cfg.with_group("d", betas=(0.0, 0.5)).with_group("d", grad_clip=0.0, nesterov=False)
    assert (
        both.group("d").lr == 1e-3 and both.group("d").betas == (0.0, 0.5) and both.group("d").grad_clip == 0
    )
    sgd = TrainConfig(optimizer="sgd", momentum=0.9, nesterov=True, weight_decay=0.1, warmup_steps=50)
    zeros = sgd.with_group("d", momentum=0.0, nesterov=False, weight_decay=0.0, warmup_steps=0).group("d")
    assert (zeros.momentum, zeros.nesterov, zeros.weight_decay, zeros.warmup_steps) == (0.0, False, 0.0, 0)
    opt = _opt(TwoPlayer(), optim={"d": OptimConfig(optimizer="rmsprop", lr=5e-5)})
    assert isinstance(opt.optimizers["d"], torch.optim.RMSprop)
    assert isinstance(opt.optimizers["g"], torch.optim.AdamW)
    assert opt.optimizers["d"].defaults["momentum"] == 0  # plain RMSProp, as WGAN uses it
    opt = _opt(TwoPlayer(), eps=1e-5, optim={"d": OptimConfig(optimizer="rmsprop", eps=1e-3)})
    assert opt.optimizers["g"].defaults["eps"] == 1e-5 and opt.optimizers["d"].defaults["eps"] == 1e-3
    with pytest.raises(ValueError, match="eps"):
        TrainConfig(eps=0.0)


def test_a_groups_step_decay_takes_its_own_milestones_and_factor():
    step_d = {"d": OptimConfig(schedule="step", lr_milestones=(0.2, 0.6), lr_gamma=0.5)}
    opt = _opt(TwoPlayer(), steps=10, lr=0.1, schedule="step", optim=step_d)
    rates = []
    for step in range(10):
        opt.set_step(step)
        rates.append((opt.lrs()["lr_g"], opt.lrs()["lr_d"]))
    # g: the defaults (x0.1 at 50% and 75%); d: x0.5 at 20% and 60%
    assert [g for g, _ in rates] == pytest.approx([0.1] * 5 + [0.01] * 3 + [0.001] * 2)
    assert [d for _, d in rates] == pytest.approx([0.1] * 2 + [0.05] * 4 + [0.025] * 4)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_a_groups_rate_is_lr_factor_of_every_schedule_setting_it_has(schedule):
    """The warm-up, the floor and the warm restarts all reach the optimizer: g's rate is
    lr * lr_factor(step, T, schedule, W, r, cycles=C) at every step; d has its own floor and
    inherits the rest."""
    settings = dict(schedule=schedule, warmup_steps=2, min_lr_ratio=0.2, lr_cycles=2)
    d = {"d": OptimConfig(lr=0.3, schedule=schedule, min_lr_ratio=0.5)}
    opt = _opt(TwoPlayer(), steps=12, lr=0.1, optim=d, **settings)
    factors = []
    for step in range(12):
        opt.set_step(step)
        expected_g = 0.1 * lr_factor(step, 12, schedule, 2, 0.2, cycles=2)
        assert opt.lrs()["lr_g"] == pytest.approx(expected_g, rel=1e-12)
        expected_d = 0.3 * lr_factor(step, 12, schedule, 2, 0.5, cycles=2)
        assert opt.lrs()["lr_d"] == pytest.approx(expected_d, rel=1e-12)
        factors.append((opt.lrs()["lr_g"] / 0.1, opt.lrs()["lr_d"] / 0.3))
    assert min(g for g, _ in factors) < 0.5 <= min(d for _, d in factors)  # each its own floor


def test_each_group_follows_its_own_schedule_and_alternating_terms_average_over_their_steps(tmp_path):
    cfg = TrainConfig(steps=10, batch_size=32, optim=TWO_GROUPS, **(CPU | {"log_every": 2}))
    torch.manual_seed(0)
    model, seen = TwoPlayer(), []
    step_of = model.train_step

    def recorded(batch, step, opt):
        out = step_of(batch, step, opt)
        seen.append({k: float(v.detach()) for k, v in out.items()})
        return out

    model.train_step = recorded
    Trainer(model, two_player_data(), cfg, tmp_path).fit()
    records = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["split"] == "train"]
    assert [r["step"] for r in records] == [2, 4, 6, 8, 10]
    for r in records:  # the lr logged is the one of the window's last step
        assert r["lr_d"] == pytest.approx(0.1)
        assert r["lr_g"] == pytest.approx(0.01 * lr_factor(r["step"] - 1, 10, "linear"))
        assert {"loss_d", "loss_g", "grad_norm_d", "grad_norm_g"} <= r.keys()
        window = seen[r["step"] - 2 : r["step"]]  # loss_d on both steps, loss_g on the second only
        for key in ("loss_d", "loss_g", "grad_norm_g"):
            values = [terms[key] for terms in window if key in terms]
            assert r[key] == pytest.approx(sum(values) / len(values), rel=1e-6)


def test_the_default_step_equals_a_plain_adamw_loop(tmp_path, mnist_small):
    """A model with only loss() trains exactly as the textbook loop: same batches, AdamW over
    weights (decayed) and biases (not), the cosine schedule."""
    cfg = TrainConfig(steps=12, batch_size=50, lr=0.01, weight_decay=0.1, warmup_steps=3, **CPU)
    torch.manual_seed(0)
    model = TinyNet(dropout=0.0)
    reference = TinyNet(dropout=0.0)
    reference.load_state_dict(model.state_dict())
    Trainer(model, mnist_small, cfg, tmp_path).fit()

    params = list(reference.parameters())
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.1},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=0.01,
    )
    for step in range(12):
        for group in optimizer.param_groups:
            group["lr"] = 0.01 * lr_factor(step, 12, "cosine", 3)
        batch = mnist_small[batch_indices(step, len(mnist_small), 50, seed=0)]
        reference.loss(batch)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_resume_of_a_two_optimizer_model_is_bit_exact(tmp_path):
    cfg = TrainConfig(
        steps=20, batch_size=32, optim=TWO_GROUPS, ema_decay=0.8, ema_of="g", checkpoint_every=5, **CPU
    )
    data = two_player_data()
    torch.manual_seed(0)
    Trainer(TwoPlayer(dropout=0.3), data, cfg, tmp_path / "a").fit()

    class Crash(Exception):
        pass

    class CrashesAtStep8(TwoPlayer):
        def train_step(self, batch, step, opt):
            if step == 8:
                raise Crash
            return super().train_step(batch, step, opt)

    torch.manual_seed(0)
    with pytest.raises(Crash):
        Trainer(CrashesAtStep8(dropout=0.3), data, cfg, tmp_path / "b").fit()
    assert ckpt.file_step(tmp_path / "b" / ckpt.STATE) == 5
    torch.manual_seed(1)  # another initialisation: resume must replace it
    Trainer(TwoPlayer(dropout=0.3), data, cfg, tmp_path / "b", resume=True).fit()
    for name in (ckpt.WEIGHTS, ckpt.EMA_WEIGHTS):
        a, b = load_file(tmp_path / "a" / name), load_file(tmp_path / "b" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    state_a = ckpt.load_state(tmp_path / "a" / ckpt.STATE)["optimizers"]
    state_b = ckpt.load_state(tmp_path / "b" / ckpt.STATE)["optimizers"]
    assert set(state_a) == {"g", "d"}
    for group in state_a:
        for slot, values in state_a[group]["state"].items():
            for key, value in values.items():
                assert torch.equal(
                    torch.as_tensor(value), torch.as_tensor(state_b[group]["state"][slot][key])
                )


def test_ema_of_a_submodule_averages_it_and_copies_the_rest(tmp_path):
    decay, steps = 0.7, 9
    cfg = TrainConfig(steps=steps, batch_size=32, optim=TWO_GROUPS, ema_decay=decay, ema_of="g", **CPU)
    torch.manual_seed(0)
    model = TwoPlayer()
    history = [{k: v.double().clone() for k, v in model.g.state_dict().items()}]
    step_fn = model.train_step

    def recording(batch, step, opt):
        out = step_fn(batch, step, opt)
        history.append({k: v.double().clone() for k, v in model.g.state_dict().items()})
        return out

    model.train_step = recording
    Trainer(model, two_player_data(), cfg, tmp_path).fit()
    ema = load_file(tmp_path / ckpt.EMA_WEIGHTS)
    for name in history[0]:
        expected = history[0][name]
        for weights in history[1:]:  # theta_ema <- d theta_ema + (1 - d) theta
            expected = decay * expected + (1 - decay) * weights[name]
        torch.testing.assert_close(ema[f"g.{name}"].double(), expected, rtol=0, atol=1e-6)
        assert not torch.allclose(ema[f"g.{name}"], model.g.state_dict()[name])
    for name, live in model.d.state_dict().items():
        assert torch.equal(ema[f"d.{name}"], live)  # the discriminator is not averaged


@pytest.mark.parametrize("group", ["g", "d"])
def test_a_non_finite_loss_stops_at_the_next_log_point_naming_its_group_keeping_the_last_good_checkpoint(
    tmp_path, group
):
    class NaNAtStep14(TwoPlayer):
        def train_step(self, batch, step, opt):
            if step != 13:
                return super().train_step(batch, step, opt)
            scored = self.d(self.g(batch["z"]) if group == "g" else batch["x"])
            loss = nn.functional.softplus(-scored).mean() * float("nan")
            return {f"loss_{group}": loss, **opt.update(group, loss)}

    cfg = TrainConfig(steps=30, batch_size=32, optim=TWO_GROUPS, checkpoint_every=10, **CPU)
    torch.manual_seed(0)
    with pytest.raises(NonFiniteLossError, match=rf"non-finite loss at step 14 \(group '{group}'\).*step 10"):
        Trainer(NaNAtStep14(), two_player_data(), cfg, tmp_path).fit()
    assert ckpt.file_step(tmp_path / ckpt.WEIGHTS) == ckpt.file_step(tmp_path / ckpt.STATE) == 10
    assert all(torch.isfinite(t).all() for t in load_file(tmp_path / ckpt.WEIGHTS).values())
    assert max(r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")) == 10


def test_a_finite_loss_with_a_non_finite_gradient_is_reported_as_the_gradient(tmp_path):
    """At step 3 the loss sqrt(|0 w|) is 0 and its gradient (inf x 0) NaN."""

    class InfiniteSlope(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))
            self.calls = 0

        def loss(self, batch):
            self.calls += 1
            w = self.w * 0 if self.calls == 3 else self.w
            return {"loss": w.abs().sqrt().sum()}

    cfg = TrainConfig(steps=10, batch_size=32, optimizer="sgd", lr=1e-3, **CPU)
    with pytest.raises(NonFiniteLossError, match=r"non-finite gradient at step 3;"):
        Trainer(InfiniteSlope(), two_player_data(64), cfg, tmp_path).fit()


class ScriptedLoss(nn.Module):
    """A model whose loss at each step is the next of `losses` (one parameter, zero gradient)."""

    def __init__(self, losses):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.losses = iter(losses)

    def loss(self, batch):
        return {"loss": (self.w * 0).sum() + float(next(self.losses))}


def test_a_diverging_loss_stops_the_run(tmp_path):
    """loss = 1, 2, 3, ... (a run whose loss climbs without becoming infinite)."""
    data = two_player_data(64)
    cfg = TrainConfig(steps=400, batch_size=32, checkpoint_every=50, diverge_factor=100, **CPU)
    with pytest.raises(DivergedError, match=r"more than 100 times the first step's \|loss\| 1.*step 100"):
        Trainer(ScriptedLoss(itertools.count(1)), data, cfg, tmp_path / "a").fit()
    assert ckpt.file_step(tmp_path / "a" / ckpt.WEIGHTS) == 100  # the window 101-105 crossed 100
    no_check = TrainConfig(**(vars(cfg) | {"diverge_factor": 0.0}))
    Trainer(ScriptedLoss(itertools.count(1)), data, no_check, tmp_path / "b").fit()


def test_divergence_is_measured_against_the_first_steps_absolute_loss(tmp_path):
    """First loss -2 (a likelihood or critic loss may be negative), factor 3: the bar is 3 x |-2| =
    6. A window whose mean loss is exactly 6 goes on; the window 11-15, at 6.5, stops the run."""
    losses = [-2.0, 6.0, 6.0, 6.0, 6.0] + [6.0] * 5 + [6.5] * 10
    cfg = TrainConfig(steps=20, batch_size=32, checkpoint_every=5, diverge_factor=3, **CPU)
    with pytest.raises(DivergedError, match=r"6.5 over steps 11-15, more than 3 times .* \|loss\| 2 "):
        Trainer(ScriptedLoss(losses), two_player_data(64), cfg, tmp_path).fit()
    assert ckpt.file_step(tmp_path / ckpt.WEIGHTS) == 10


def test_a_huge_learning_rate_ends_in_a_clear_stop_not_a_finished_run(tmp_path, mnist_small):
    cfg = TrainConfig(steps=60, batch_size=50, optimizer="sgd", lr=1e6, checkpoint_every=100, **CPU)
    torch.manual_seed(0)
    with pytest.raises(TrainingStopped, match="last good checkpoint \\(step 0\\)"):
        Trainer(TinyNet(dropout=0.0), mnist_small, cfg, tmp_path).fit()


def test_an_interrupt_saves_the_step_and_resuming_equals_the_uninterrupted_run(tmp_path):
    cfg = TrainConfig(steps=16, batch_size=32, optim=TWO_GROUPS, checkpoint_every=100, **CPU)
    data = two_player_data()
    torch.manual_seed(0)
    Trainer(TwoPlayer(dropout=0.3), data, cfg, tmp_path / "a").fit()

    class CtrlCAtStep7(TwoPlayer):
        def train_step(self, batch, step, opt):
            if step == 6:
                signal.raise_signal(signal.SIGINT)  # the step in flight still completes
            return super().train_step(batch, step, opt)

    torch.manual_seed(0)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match=r"SIGINT at step 7.*--resume"):
        Trainer(CtrlCAtStep7(dropout=0.3), data, cfg, tmp_path / "b").fit()
    assert ckpt.file_step(tmp_path / "b" / ckpt.STATE) == 7
    assert signal.getsignal(signal.SIGINT) is handler  # the caller's handler is restored
    Trainer(TwoPlayer(dropout=0.3), data, cfg, tmp_path / "b", resume=True).fit()
    a, b = load_file(tmp_path / "a" / ckpt.WEIGHTS), load_file(tmp_path / "b" / ckpt.WEIGHTS)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_directory_has_one_writer_and_is_not_overwritten_silently(tmp_path):
    cfg = TrainConfig(steps=4, batch_size=32, optim=TWO_GROUPS, **CPU)
    data = two_player_data()
    first = Trainer(TwoPlayer(), data, cfg, tmp_path / "run")  # holds the lock until fit() ends
    with pytest.raises(RunDirError, match="is in use"):
        Trainer(TwoPlayer(), data, cfg, tmp_path / "run", resume=True)
    first.fit()
    with pytest.raises(RunDirError, match="already holds a run.*--resume.*--overwrite"):
        Trainer(TwoPlayer(), data, cfg, tmp_path / "run")
    Trainer(
        TwoPlayer(), data, TrainConfig(**(vars(cfg) | {"steps": 2})), tmp_path / "run", overwrite=True
    ).fit()
    assert max(r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")) == 2
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("precious")
    with pytest.raises(RunDirError, match="holds no deepzoo run"):
        Trainer(TwoPlayer(), data, cfg, tmp_path / "notes", overwrite=True)
    assert (tmp_path / "notes" / "thesis.tex").read_text() == "precious"


def test_shuffled_batches_shard_the_global_batch_and_generated_batches_depend_only_on_the_step():
    data = two_player_data(100)
    whole = ShuffledBatches(data, 20, seed=3).next(7)
    ranks = [ShuffledBatches(data, 20, seed=3, rank=r, world_size=2).next(7) for r in range(2)]
    assert torch.equal(torch.cat([ranks[0]["x"], ranks[1]["x"]]).sort(0).values, whole["x"].sort(0).values)
    assert torch.equal(whole["x"], data[batch_indices(7, 100, 20, 3)]["x"])
    for r in range(2):  # rank r of 2 takes every other example of the global batch, from the r-th
        assert torch.equal(ranks[r]["x"], whole["x"][r::2])
    source = ShuffledBatches(data, 20, seed=3)  # one source stepping through three epochs
    for step in range(13):
        assert torch.equal(source.next(step)["x"], data[batch_indices(step, 100, 20, 3)]["x"]), step
    assert not torch.equal(batch_indices(0, 100, 20, 3), batch_indices(5, 100, 20, 3))  # a new order
    with pytest.raises(ValueError, match="batch_size 40 exceeds the dataset size 30"):
        ShuffledBatches(two_player_data(30), 40, seed=3)

    def draw(n, generator):
        return {"x": torch.randn(n, 2, generator=generator)}

    source = GeneratedBatches(draw, 16, seed=0)
    assert torch.equal(source.next(5)["x"], GeneratedBatches(draw, 16, seed=0).next(5)["x"])
    assert not torch.equal(source.next(5)["x"], source.next(6)["x"])
    with pytest.raises(ValueError, match="not divisible"):
        GeneratedBatches(draw, 15, seed=0, rank=0, world_size=2)
    placed = source.placed(1, 2, "cpu")  # what the trainer makes of it on rank 1 of 2
    assert torch.equal(
        placed.next(5)["x"], GeneratedBatches(draw, 16, seed=0, rank=1, world_size=2).next(5)["x"]
    )
    assert len(placed.next(5)["x"]) == 8 and not torch.equal(placed.next(5)["x"], source.next(5)["x"][:8])


def test_every_seed_and_epoch_has_its_own_order_and_leftovers_wait_for_the_next_epoch():
    """110 examples in batches of 20: 5 full batches an epoch (the 10 left over are not a short
    sixth batch); batch 5 opens epoch 1. No two (seed, epoch) pairs share an order (a seed offset by
    one must not replay the next epoch's order)."""
    orders = {(seed, epoch): permutation(50, seed, epoch) for seed in range(3) for epoch in range(3)}
    assert len({tuple(order.tolist()) for order in orders.values()}) == 9
    assert torch.equal(batch_indices(5, 110, 20, seed=1), permutation(110, 1, 1)[:20])
    source = ShuffledBatches(two_player_data(110), 20, seed=1)
    assert all(len(source.next(step)["x"]) == 20 for step in range(12))
    assert torch.equal(source.next(5)["x"], two_player_data(110)[permutation(110, 1, 1)[:20]]["x"])
    with pytest.raises(ValueError, match="batch_size 20 exceeds the dataset size 19"):
        ShuffledBatches(two_player_data(19), 20, seed=0)
    with pytest.raises(ValueError, match="batch_size 20 exceeds the dataset size 19"):
        batch_indices(0, 19, 20, seed=0)
    assert len(ShuffledBatches(two_player_data(20), 20, seed=0).next(3)["x"]) == 20  # the whole set


def test_generated_batches_arrive_on_the_sources_device():
    def draw(n, generator):
        return {"x": torch.randn(n, 2, generator=generator)}

    batch = GeneratedBatches(draw, 8, seed=0, device="meta").next(0)
    assert batch["x"].device.type == "meta" and batch["x"].shape == (8, 2)
    assert GeneratedBatches(draw, 8, seed=0).placed(0, 1, "meta").next(1)["x"].device.type == "meta"


def test_the_trainer_reads_a_generated_batch_source(tmp_path):
    def draw(n, generator):
        x = torch.randn(n, 2, generator=generator) * 0.5 + torch.tensor([2.0, -1.0])
        return {"x": x, "z": torch.randn(n, 4, generator=generator)}

    cfg = TrainConfig(steps=6, batch_size=16, optim=TWO_GROUPS, **CPU)
    trainer = Trainer(TwoPlayer(), GeneratedBatches(draw, 16, seed=0, device="meta"), cfg, tmp_path)
    assert trainer.batches.device == trainer.device  # placed on the trainer's rank and device
    assert trainer.fit().step == 6


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("steps", -5, "train.steps must be >= 0"),
        ("batch_size", 0, "train.batch-size must be >= 1"),
        ("lr", 0.0, "train.lr must be > 0, got 0.0"),
        ("lr", float("nan"), "train.lr must be a finite number > 0"),
        ("lr", float("inf"), "train.lr must be a finite number > 0"),
        ("ema_decay", 1.0, r"train.ema-decay must be in \[0, 1\)"),
        ("log_every", 0, "train.log-every must be >= 1"),
        ("betas", (0.9, 1.5), r"train.betas must be each in \[0, 1\)"),
        ("betas", (0.9,), "train.betas must be two numbers"),
        ("lr_gamma", 0.0, r"train.lr-gamma must be in \(0, 1\], got 0.0"),
        ("lr_milestones", (0.5, 1.5), r"train.lr-milestones must be each in \[0, 1\]"),
        ("min_lr_ratio", 1.5, r"train.min-lr-ratio must be in \[0, 1\]"),
        (
            "optimizer",
            "lion",
            "train.optimizer must be one of sgd, adam, adamw, adagrad, rmsprop, got 'lion'",
        ),
        ("precision", "fp16", "train.precision must be auto, bf16 or fp32, got 'fp16'"),
        ("schedule", "exponential", "train.schedule must be one of constant, .*, got 'exponential'"),
    ],
)
def test_bad_train_settings_are_refused_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def test_every_number_a_train_config_or_a_group_holds_refuses_a_negative_value():
    """No count, rate, time or factor of training is negative: each numeric field (and each number
    of a tuple field) set to -1 is refused, naming the field as its flag."""
    from dataclasses import fields

    for config_class, prefix in ((TrainConfig, "train."), (OptimConfig, "train.optim.GROUP.")):
        numeric = [
            f.name for f in fields(TrainConfig) if type(getattr(TrainConfig(), f.name)) in (int, float, tuple)
        ]
        if config_class is OptimConfig:
            numeric = [name for name in numeric if name in {f.name for f in fields(OptimConfig)}]
        assert len(numeric) >= (10 if config_class is OptimConfig else 20)
        for name in numeric:
            default = getattr(TrainConfig(), name)
            bad = tuple(-1.0 for _ in default) if isinstance(default, tuple) else type(default)(-1)
            with pytest.raises(ValueError, match=rf"^{prefix}{name.replace('_', '-')} must be"):
                config_class(**{name: bad})


def test_the_defaults_the_training_guide_states_are_the_configs():
    """docs/training.md writes a default as `field` (value), e.g. `diverge_factor` (100)."""
    import re
    from pathlib import Path

    guide = (Path(__file__).parents[2] / "docs" / "training.md").read_text()
    stated = re.findall(r"`(\w+)` \(([0-9.e+-]+)\)", guide)
    assert stated
    for name, value in stated:
        assert getattr(TrainConfig(), name) == float(value), name


def test_the_optimizer_defaults_are_torch_optims_and_the_step_schedule_resnets():
    """Adam(W)'s betas and eps and RMSProp's alpha are torch.optim's defaults; the step schedule's
    milestones are ResNet's (lr / 10 at 32k and 48k of 64k iterations: He et al., 2016, CIFAR-10)."""
    import inspect

    adam = inspect.signature(torch.optim.Adam).parameters
    rmsprop = inspect.signature(torch.optim.RMSprop).parameters
    config = TrainConfig()
    assert config.betas == adam["betas"].default and config.eps == adam["eps"].default
    assert config.alpha == rmsprop["alpha"].default
    assert config.lr_milestones == (32_000 / 64_000, 48_000 / 64_000) and config.lr_gamma == 0.1


def test_bad_group_settings_are_refused_naming_the_field():
    with pytest.raises(ValueError, match=r"train.optim.GROUP.lr must be > 0, got -1.0"):
        OptimConfig(lr=-1.0)
    with pytest.raises(ValueError, match=r"train.optim.GROUP.schedule must be one of"):
        OptimConfig(schedule="exponential")
    assert OptimConfig(lr=None).lr is None  # unset: the shared value


def test_a_groups_warm_restarts_are_checked_against_the_schedule_it_resolves_to():
    """A group's lr_cycles without its own schedule takes the train config's: refused only once
    that resolves to a schedule without cycles."""
    assert OptimConfig(lr_cycles=3).lr_cycles == 3
    assert TrainConfig(schedule="cosine").with_group("g", lr_cycles=3).group("g").lr_cycles == 3
    with pytest.raises(ValueError, match=r"GROUP.lr-cycles 3 \(warm restarts\) needs a cosine .*, not step"):
        TrainConfig(schedule="step").with_group("g", lr_cycles=3).group("g")
    with pytest.raises(
        ValueError,
        match=r"train.lr-cycles 2 \(warm restarts\) needs a cosine or linear train.schedule, not constant",
    ):
        TrainConfig(schedule="constant", lr_cycles=2)


def _train_two_player(run_dir, batch_size: int) -> None:
    """The run every process of the DDP test makes (one process: in this one)."""
    groups = {"g": OptimConfig(lr=0.05), "d": OptimConfig(lr=0.1)}
    cfg = TrainConfig(
        steps=12, batch_size=batch_size, optimizer="sgd", optim=groups, checkpoint_every=6,
        progress=False, precision="fp32", device="cpu",
    )  # fmt: skip
    torch.manual_seed(0)
    Trainer(TwoPlayer(), two_player_data(), cfg, run_dir).fit()


DDP_SCRIPT = textwrap.dedent(
    """
    import sys
    from tests.train.test_step_contract import _train_two_player
    from deepzoo.train import distributed

    _train_two_player(sys.argv[1], int(sys.argv[2]))
    distributed.teardown()
    """
)


def _ddp_run(run_dir, nproc, batch_size):
    if nproc == 1:
        with one_thread():
            _train_two_player(run_dir, batch_size)
        return load_file(run_dir / ckpt.WEIGHTS)
    script = run_dir.parent / f"{run_dir.name}.py"
    script.write_text(DDP_SCRIPT)
    torchrun(
        nproc,
        [str(script), str(run_dir), str(batch_size)],
        before_retry=lambda: shutil.rmtree(run_dir, ignore_errors=True),
    )
    return load_file(run_dir / ckpt.WEIGHTS)


def test_two_gloo_processes_train_a_two_optimizer_model_like_one(tmp_path):
    single = _ddp_run(tmp_path / "one", 1, 64)
    double = _ddp_run(tmp_path / "two", 2, 64)
    for name in single:
        torch.testing.assert_close(double[name], single[name], rtol=1e-5, atol=1e-6)
    half = _ddp_run(tmp_path / "half", 1, 32)  # one rank's shard alone is visibly different
    assert max((half[k] - double[k]).abs().max().item() for k in double) > 1e-3


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_weight_decay_shrinks_weight_matrices_only_never_biases_or_norms(optimizer):
    """A zero-gradient step: AdamW's decoupled decay multiplies a matrix by 1 - lr wd; SGD's L2
    term gives the same first step. Biases and LayerNorm weights must not move."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    model.loss = lambda batch: {"loss": sum((p * 0).sum() for p in model.parameters())}
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = _opt(model, optimizer=optimizer, lr=0.1, weight_decay=0.5, momentum=0.0)
    opt.update("model", model.loss(None)["loss"])
    for name, p in model.named_parameters():
        expected = before[name] * (1 - 0.1 * 0.5) if p.ndim >= 2 else before[name]
        torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=0, msg=name)


def test_compiled_training_equals_eager_and_saves_the_plain_module(tmp_path):
    from deepzoo.data import TensorData

    generator = torch.Generator().manual_seed(0)
    x, y = torch.rand(256, 1, 28, 28, generator=generator), torch.randint(0, 10, (256,), generator=generator)
    data = TensorData({"x": x, "y": y})
    weights = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        cfg = TrainConfig(steps=6, batch_size=32, compile=compiled, **CPU)
        Trainer(TinyNet(dropout=0.0), data, cfg, tmp_path / str(compiled)).fit()
        weights[compiled] = load_file(tmp_path / str(compiled) / ckpt.WEIGHTS)
    assert weights[True].keys() == weights[False].keys()  # no "_orig_mod." prefixes
    torch.manual_seed(0)
    start = TinyNet(dropout=0.0).state_dict()
    # inductor may fuse differently: fp32 rounding, not bits. Adam's step m / sqrt(v) turns a
    # rounding difference in a near-zero gradient into an O(lr) one in that element (seed 7: one of
    # 25,088 weights off by 3e-6), so compare each tensor's whole update, not its worst element
    for name in weights[False]:
        moved = (weights[False][name] - start[name]).norm()
        assert moved > 0, name
        assert (weights[True][name] - weights[False][name]).norm() < 1e-3 * moved, name
    with pytest.raises(ValueError, match="compile"):
        Trainer(TwoPlayer(), two_player_data(), TrainConfig(compile=True, **CPU), tmp_path / "gan")


def test_a_run_without_evaluation_ignores_keep_best(tmp_path, mnist_small):
    """Speed measurements train a recipe with its keep_best but no evaluation: nothing to watch."""
    cfg = TrainConfig(steps=4, batch_size=50, keep_best="val_loss:min", **CPU)
    assert Trainer(TinyNet(), mnist_small, cfg, tmp_path).fit().step == 4


def test_the_ema_of_a_submodule_leaves_a_sibling_with_a_longer_name_and_copies_buffers():
    """ema_of="g" averages g.* only, not gate.* (a name that merely starts with g); buffers
    (BatchNorm statistics) are copied as they are; a decay outside (0, 1) is refused."""
    from deepzoo.train.ema import EMA

    model = nn.ModuleDict({"g": nn.Linear(3, 3), "gate": nn.Linear(3, 3), "norm": nn.BatchNorm1d(3)})
    ema = EMA(model, 0.5, of="g")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model["norm"](torch.randn(8, 3))  # training mode: the running statistics move
    ema.update()
    averaged = ema.module.state_dict()
    assert torch.allclose(averaged["g.weight"], before["g.weight"] + 0.5)
    assert torch.equal(averaged["gate.weight"], before["gate.weight"])  # outside `of`: copied by copy_rest
    ema.copy_rest()
    assert torch.equal(ema.module.state_dict()["gate.weight"], model["gate"].weight)
    whole = EMA(model, 0.5)
    model["norm"](torch.randn(8, 3))
    whole.update()
    assert torch.equal(whole.module.state_dict()["norm.running_mean"], model["norm"].running_mean)
    for decay in (0.0, 1.0):
        with pytest.raises(ValueError, match="decay"):
            EMA(model, decay)


def test_the_ema_is_torchs_averaged_model_with_an_ema_average_started_at_the_initial_weights():
    """torch.optim.swa_utils.AveragedModel with get_ema_multi_avg_fn(d) copies the weights at its
    first update and averages from then on; ours starts from the weights it is built with (as
    timm's ModelEmaV2 and the EDM code do), so the reference is given those weights once."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from deepzoo.train.ema import EMA

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    ema = EMA(model, 0.9)
    reference = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    reference.update_parameters(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(20):
        opt.zero_grad()
        model(torch.randn(16, 4)).square().mean().backward()
        opt.step()
        ema.update()
        reference.update_parameters(model)
    for ours, theirs in zip(ema.module.parameters(), reference.module.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(ema.module[0].weight, model[0].weight, atol=1e-3)  # it does trail


def test_a_lock_names_its_holder_and_overwriting_removes_links_not_their_targets(tmp_path):
    import os

    from deepzoo.train.rundir import RunDirLock, claim_new_run

    run = tmp_path / "run"
    RunDirLock(run).release()  # an earlier holder's name must not linger in the lock file
    held = RunDirLock(run)
    with pytest.raises(RunDirError, match=rf"is in use: process {os.getpid()} is training there;"):
        RunDirLock(run)
    (run / "config.json").write_text("{}")
    kept = tmp_path / "data"
    kept.mkdir()
    (kept / "digits.bin").write_bytes(b"12")
    (run / "data").symlink_to(kept, target_is_directory=True)
    (run / "samples").mkdir()
    claim_new_run(run, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == [".lock"] and (kept / "digits.bin").read_bytes() == b"12"
    held.release()
