"""`deepzoo check`: the loss at initialization against chance, overfitting a few examples, and a
coarse sweep of learning rates, each on the recipe's own model, data and trainer."""

import json
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from deepzoo.cli import main
from deepzoo.recipes import get_recipe, load_run
from deepzoo.recipes.check import chance_loss, initial_loss, learning_rates, overfit

CPU = dict(progress=False, device="cpu", precision="fp32")


def _config(name: str, model: dict | None = None, **train):
    default = get_recipe(name).default
    return replace(
        default, model=replace(default.model, **(model or {})), train=replace(default.train, **CPU | train)
    )


def test_the_chance_loss_is_log_k_for_softmax_and_k_minus_one_margins_for_the_svm():
    softmax, svm = get_recipe("linear-softmax-mnist"), get_recipe("linear-svm-mnist")
    assert chance_loss(softmax, softmax.build(softmax.default)) == pytest.approx(math.log(10))
    wide = _config("linear-svm-mnist", {"margin": 2.0})
    assert chance_loss(svm, svm.build(wide)) == 18.0
    vae = get_recipe("vae-mnist")
    assert chance_loss(vae, vae.build(vae.default)) is None  # not a classifier


def test_the_initial_loss_is_the_fresh_models_loss_on_the_first_batch(mnist_small):
    from deepzoo.data import load_mnist

    config = _config("two-layer-mnist", batch_size=64)
    report = initial_loss(get_recipe("two-layer-mnist"), config)
    torch.manual_seed(config.train.seed)
    model = get_recipe("two-layer-mnist").build(config)
    first = load_mnist("train")[slice(0, 64)]
    with torch.no_grad():
        expected = F.cross_entropy(model(first["x"]), first["y"])
    assert report["loss"] == pytest.approx(float(expected), rel=1e-5)
    assert report["ok"] and abs(report["loss"] - math.log(10)) < 0.1 * math.log(10)
    blown_up = _config("two-layer-mnist", {"input_std": 0.003}, batch_size=64)  # inputs 100x too large
    assert not initial_loss(get_recipe("two-layer-mnist"), blown_up)["ok"]


def test_overfitting_memorises_the_examples_and_reports_their_accuracy(tmp_path):
    from deepzoo.data import load_mnist
    from deepzoo.metrics.classification import classification_metrics

    recipe = get_recipe("two-layer-mnist")
    # weight decay turned off; a warm-up longer than the check cut to a tenth of its steps; no
    # best-weights bookkeeping or early stopping on the one evaluation
    decayed = _config(
        "two-layer-mnist", weight_decay=0.1, warmup_steps=500, keep_best="accuracy:max", patience=1
    )
    report = overfit(recipe, decayed, examples=20, steps=60, out=tmp_path / "fit")
    assert report["ok"] and report["accuracy"] == 1.0 and report["loss"] < 0.05
    run = load_run(tmp_path / "fit")
    assert run.config.train.weight_decay == 0.0 and run.config.train.batch_size == 20
    assert (
        run.config.train.warmup_steps == 6
        and run.config.train.keep_best == ""
        and run.config.train.patience == 0
    )
    twenty = load_mnist("train")
    metrics, _ = classification_metrics(run.model, type(twenty)(twenty[slice(0, 20)]))
    assert metrics["accuracy"] == report["accuracy"]
    stuck = overfit(
        recipe, _config("two-layer-mnist", lr=1e-9), examples=20, steps=20, out=tmp_path / "stuck"
    )
    assert not stuck["ok"] and stuck["accuracy"] < 0.5


def test_each_rate_trains_at_that_constant_rate_from_the_same_start(tmp_path):
    recipe = get_recipe("linear-softmax-mnist")
    config = _config("linear-softmax-mnist", batch_size=64, warmup_steps=20)  # the sweep has none
    report = learning_rates(recipe, config, [1e4, 1e-2, 1e-9], steps=40, out=tmp_path)
    rates = report["rates"]
    assert rates["10000"]["status"] == "stopped: diverged"
    assert rates["0.01"]["last"] < rates["0.01"]["first"] / 2
    assert rates["1e-09"]["last"] == pytest.approx(rates["1e-09"]["first"], rel=0.05)
    assert report["suggested"] == "0.01"
    for rate in ("0.01", "1e-09"):
        records = [
            json.loads(line) for line in (tmp_path / f"lr-{rate}" / "metrics.jsonl").read_text().splitlines()
        ]
        lrs = {
            value
            for r in records
            if r["split"] == "train"
            for key, value in r.items()
            if key.startswith("lr")
        }
        assert lrs == {float(rate)}, "no warm-up, no decay"
    first = [load_run(tmp_path / f"lr-{rate}").model for rate in ("0.01", "1e-09")]
    torch.manual_seed(config.train.seed)
    fresh = recipe.build(config)
    assert torch.allclose(first[1].weight, fresh.weight, atol=1e-6)  # 40 steps of 1e-9: still the start


def test_check_prints_the_three_checks_and_refuses_what_it_cannot_check(capsys):
    argv = ["check", "linear-softmax-mnist", "--examples", "10", "--steps", "30", "--lrs", "0.01", "0.001"]
    main(
        argv
        + ["--lr-steps", "10", "--train.no-progress", "--train.device", "cpu", "--train.precision", "fp32"]
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("1. loss at initialization: ") and out[0].endswith("(chance: 2.3026) ok")
    assert "training accuracy 100.00% ok" in out[1]
    report = json.loads(out[-1])
    assert set(report["learning_rates"]["rates"]) == {"0.01", "0.001"}
    for argv, complaint in [
        (["check", "knn-mnist"], "trained by gradient steps on one loss"),
        (["check", "cnn-mnist", "--lrs", "-1"], "--lrs must be positive"),
        (["check", "cnn-mnist", "--examples", "0"], "must be >= 1"),
        (["check", "cnn-mnist", "--train.nope", "1"], "unknown option --train.nope"),
        (
            [
                "check",
                "linear-softmax-mnist",
                "--train-limit",
                "16",
                "--examples",
                "20",
                "--train.device",
                "cpu",
            ],
            "has only 16 training examples, fewer than --examples 20",
        ),
    ]:
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err.strip()
        assert info.value.code == 2 and complaint in err and len(err.splitlines()) == 1, err


def test_the_verdicts_are_within_ten_percent_of_chance_and_every_example_memorised(monkeypatch, tmp_path):
    """The rules themselves, on scripted losses and accuracies: the initial loss may be 10% of the
    chance loss away from it (log 10 = 2.303: 0.230), and overfitting must reach 100%."""
    from types import SimpleNamespace

    import deepzoo.recipes.check as check

    recipe, config = get_recipe("linear-softmax-mnist"), _config("linear-softmax-mnist")
    for loss, ok in (
        (1.05 * math.log(10), True),
        (0.93 * math.log(10), True),
        (1.12 * math.log(10), False),
        (0.85 * math.log(10), False),  # too low is as suspect as too high
    ):
        monkeypatch.setattr(check, "mean_terms", lambda *a, loss=loss, **k: {"loss": loss})
        assert initial_loss(recipe, config)["ok"] is ok
    for accuracy, ok in ((1.0, True), (0.95, False)):
        result = SimpleNamespace(metrics={"loss": 0.1, "accuracy": accuracy})
        monkeypatch.setattr(check, "train_variant_of", lambda *a, result=result, **k: result)
        assert overfit(recipe, config, examples=20, steps=5, out=tmp_path)["ok"] is ok


def test_the_initial_loss_is_taken_in_training_mode(mnist_small):
    """BatchNorm in training mode normalizes with the batch's statistics, as the first step will."""
    from deepzoo.data import load_mnist

    recipe = get_recipe("resnet-mnist")
    config = _config("resnet-mnist", batch_size=32)
    report = initial_loss(recipe, config)
    torch.manual_seed(config.train.seed)
    model = recipe.build(config).train()
    first = load_mnist("train")[slice(0, 32)]
    with torch.no_grad():
        expected = float(model.loss(first)["loss"])
        in_eval = float(model.eval().loss(first)["loss"])
    assert report["loss"] == pytest.approx(expected, rel=1e-4) and abs(expected - in_eval) > 1e-3


def test_what_check_cannot_check_is_refused_by_name():
    """A model without trainable parameters, and training data that is not a tensor dataset."""
    recipe = get_recipe("linear-softmax-mnist")
    frozen = replace(recipe, build=lambda config: recipe.build(config).requires_grad_(False))
    with pytest.raises(ValueError, match="trained by gradient steps on one loss"):
        initial_loss(frozen, _config("linear-softmax-mnist"))
    streamed = replace(recipe, data=lambda config, device: (iter(()), None))
    with pytest.raises(ValueError, match="needs a recipe trained on a tensor dataset"):
        initial_loss(streamed, _config("linear-softmax-mnist"))


def test_each_rate_reports_its_last_loss_and_why_it_stopped(monkeypatch, tmp_path):
    """Scripted runs: a rate whose loss fell then rose reports where it ended (and is not suggested
    for its dip); a diverged and a non-finite run say which."""
    import deepzoo.recipes.check as check
    from deepzoo.train.errors import DivergedError, NonFiniteLossError

    losses = {0.1: [2.0, 0.5, 1.5], 0.01: [2.0, 1.2, 1.1]}

    def train(recipe, config, run_dir, evaluate):
        rate = config.train.lr
        if rate == 1.0:
            raise DivergedError("the loss diverged")
        if rate == 10.0:
            raise NonFiniteLossError("the loss is nan")
        run_dir.mkdir(parents=True)
        records = [{"step": i, "split": "train", "loss": v} for i, v in enumerate(losses[rate])]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    monkeypatch.setattr(check, "train_variant_of", train)
    recipe = get_recipe("linear-softmax-mnist")
    report = learning_rates(recipe, _config("linear-softmax-mnist"), [10.0, 1.0, 0.1, 0.01], 30, tmp_path)
    assert report["rates"] == {
        "10": {"first": None, "last": None, "status": "stopped: non-finite loss"},
        "1": {"first": None, "last": None, "status": "stopped: diverged"},
        "0.1": {"first": 2.0, "last": 1.5, "status": "done"},
        "0.01": {"first": 2.0, "last": 1.1, "status": "done"},
    }
    assert report["suggested"] == "0.01"
    stopped = learning_rates(recipe, _config("linear-softmax-mnist"), [10.0, 1.0], 30, tmp_path / "none")
    assert stopped["suggested"] is None  # no rate to suggest when every one stopped


def test_the_printout_flags_a_failed_check_and_shows_each_rates_fall_or_fate(monkeypatch, capsys):
    """On a scripted report: CHECK where a check failed; a rate's loss as first -> last tenth,
    or its status when it stopped."""
    import deepzoo.recipes.check as check

    report = {
        "recipe": "linear-softmax-mnist",
        "initial_loss": {"loss": 3.1, "chance": math.log(10), "ok": False},
        "overfit": {"examples": 20, "steps": 200, "loss": 0.4, "accuracy": 0.85, "ok": False},
        "learning_rates": {
            "steps": 100,
            "rates": {
                "1.0": {"first": None, "last": None, "status": "stopped: the loss diverged"},
                "0.01": {"first": 2.31234, "last": 0.51234, "status": "done"},
            },
            "suggested": "0.01",
        },
    }
    monkeypatch.setattr(check, "check", lambda *a: report)
    main(["check", "linear-softmax-mnist", "--lrs", "1.0", "0.01"])
    out = capsys.readouterr().out.splitlines()
    assert out[:6] == [
        "1. loss at initialization: 3.1000 (chance: 2.3026) CHECK",
        "2. 20 examples, 200 steps, no weight decay: loss 0.4, training accuracy 85.00% CHECK",
        "3. 100 steps at a constant rate, loss over the first / last tenth:",
        "   lr      1.0: stopped: the loss diverged",
        "   lr     0.01: 2.312 -> 0.5123",
        "   lowest last loss: lr 0.01",
    ]
    assert json.loads(out[6]) == report
