"""Random search: the draws follow their distributions, the classifiers' validation split is held
out of training, and `deepzoo search` ranks honest, resumable trials."""

import json
import math
import re
from dataclasses import replace

import pytest
import torch

from deepzoo.cli import main
from deepzoo.recipes import get_recipe
from deepzoo.recipes.search import Dimension, draw_trials, parse_dimension, rank, trial_metric
from tests.conftest import SEED_OFFSET

N = 6000  # draws per distribution test: a mean's standard error is sd / 77


def _values(spec: str, n: int = N) -> list[str]:
    dimension = parse_dimension(spec)
    return [trial[dimension.flag] for trial in draw_trials([dimension], n, seed=SEED_OFFSET)]


def test_log_uniform_draws_are_uniform_in_the_logarithm():
    """log10 of log:1e-4:1e-1 is U(-4, -1): mean -2.5, variance 3^2 / 12; a third fall below 1e-3
    (a uniform draw on [1e-4, 0.1] would put 0.9% there)."""
    logs = torch.tensor(
        [math.log10(float(v)) for v in _values("train.lr=log:1e-4:1e-1")], dtype=torch.float64
    )
    assert logs.min() >= -4 and logs.max() <= -1
    sd = 3 / math.sqrt(12)
    assert abs(logs.mean() + 2.5) < 5 * sd / math.sqrt(N)
    assert abs(logs.var() - sd**2) < 5 * math.sqrt(3**4 / 80 / N)  # Var of s^2 ~ (mu4 - sd^4) / n
    share = (logs < -3).double().mean()
    assert abs(share - 1 / 3) < 5 * math.sqrt(2 / 9 / N)


def test_uniform_draws_have_the_uniform_mean_and_variance():
    values = torch.tensor(
        [float(v) for v in _values("train.weight-decay=uniform:0.2:0.6")], dtype=torch.float64
    )
    assert values.min() >= 0.2 and values.max() <= 0.6
    assert len(set(values.tolist())) == N  # full precision: no two of 6,000 draws coincide
    sd = 0.4 / math.sqrt(12)
    assert abs(values.mean() - 0.4) < 5 * sd / math.sqrt(N)
    assert abs(values.var() - sd**2) < 5 * math.sqrt(0.4**4 / 80 / N)


@pytest.mark.parametrize(
    ("spec", "outcomes"),
    [
        ("model.regularize.translate=int:0:3", ["0", "1", "2", "3"]),
        ("train.optimizer=choice:sgd,adam,adamw", ["sgd", "adam", "adamw"]),
    ],
)
def test_integer_and_choice_draws_take_every_value_equally_often(spec, outcomes):
    values = _values(spec)
    assert set(values) == set(outcomes)  # both ends of an integer range included
    p = 1 / len(outcomes)
    for outcome in outcomes:
        assert abs(values.count(outcome) / N - p) < 5 * math.sqrt(p * (1 - p) / N)


def test_a_trials_values_depend_only_on_the_seed_and_its_index():
    dimensions = [
        parse_dimension("train.lr=log:1e-4:1e-1"),
        parse_dimension("train.optimizer=choice:sgd,adamw"),
    ]
    short, longer = draw_trials(dimensions, 5, seed=3), draw_trials(dimensions, 9, seed=3)
    assert longer[:5] == short  # a longer search begins with the shorter one's trials
    assert draw_trials(dimensions, 5, seed=4) != short
    # searches under neighbouring seeds are independent, not one sequence shifted by a trial
    rates = {seed: {t["train.lr"] for t in draw_trials(dimensions, 9, seed)} for seed in (3, 4)}
    assert not rates[3] & rates[4]


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ("train.lr", "write FIELD=KIND"),
        ("train.lr=gauss:0:1", "write FIELD=KIND"),
        ("train.lr=log:0:1", "bounds must be > 0"),
        ("train.lr=log:1e-2:1e-3", "LOW < HIGH"),
        ("train.lr=uniform:0:inf", "LOW < HIGH"),
        ("train.lr=uniform:0", "LOW < HIGH"),
        ("train.lr=uniform:a:b", "LOW < HIGH"),
        ("train.lr=uniform:0:1:2", "LOW < HIGH"),
        ("train.lr=uniform:0.5:0.5", "LOW < HIGH"),
        ("=uniform:0:1", "write FIELD=KIND"),
        (" =uniform:0:1", "write FIELD=KIND"),
        ("model.regularize.translate=int:0:2.5", "must be integers"),
        ("train.optimizer=choice:sgd,sgd", "distinct values"),
        ("train.optimizer=choice:sgd,", "distinct values"),
    ],
)
def test_a_malformed_space_is_refused_saying_what_is_wrong(spec, complaint):
    with pytest.raises(ValueError, match=complaint):
        parse_dimension(spec)


def test_a_dimension_reads_back_from_its_own_spelling():
    for spec in (
        "train.lr=log:1e-4:0.1",
        "train.weight_decay=uniform:0:0.3",
        "model.k=int:1:9",
        "train.optimizer=choice:sgd,adamw",
    ):
        dimension = parse_dimension(spec)
        assert parse_dimension(str(dimension)) == dimension
    assert str(parse_dimension("model.k=int:1:9")) == "model.k=int:1:9"  # not 1.0:9.0
    assert parse_dimension("--train.weight_decay=uniform:0:1") == Dimension(
        "train.weight-decay", "uniform", 0, 1
    )


def test_validation_holds_out_the_last_training_images_and_never_trains_on_them():
    from deepzoo.data import load_mnist

    recipe, full = get_recipe("linear-softmax-mnist"), load_mnist("train")
    x, y = full.tensors["x"], full.tensors["y"]
    held = replace(recipe.default, validation=100)
    train, val = recipe.data(held, torch.device("cpu"))
    assert torch.equal(val.tensors["x"], x[-100:]) and torch.equal(val.tensors["y"], y[-100:])
    assert torch.equal(train.tensors["x"], x[:-100])
    train, val = recipe.data(replace(held, train_limit=64), torch.device("cpu"))
    assert torch.equal(train.tensors["x"], x[:64]) and len(val) == 100
    assert recipe.split(held) == "val" and recipe.split(recipe.default) == "test"
    with pytest.raises(ValueError, match="must leave some"):
        recipe.data(replace(recipe.default, validation=len(full)), torch.device("cpu"))
    with pytest.raises(ValueError, match="exceeds the 59900 training images"):
        recipe.data(replace(held, train_limit=59_950), torch.device("cpu"))


def test_every_recipe_knows_which_way_its_metric_improves():
    from deepzoo.recipes import RECIPES
    from deepzoo.recipes.registry import HIGHER_IS_BETTER, LOWER_IS_BETTER

    directions = {name: recipe.maximize for name, recipe in RECIPES.items()}
    assert directions["cnn-mnist"] and directions["a2c-cartpole"] and directions["faster-rcnn-scenes"]
    assert (
        not directions["dcgan-mnist"] and not directions["gpt-shakespeare"] and not directions["glow-mnist"]
    )
    assert get_recipe("gpt-shakespeare").metric_key == "val_loss"
    scores = re.compile(r"accuracy|match|recall|return|reward|map|iou|bas")  # else an error, loss, distance
    assert {name: scores.search(r.metric_key) is not None for name, r in RECIPES.items()} == directions
    assert not set(HIGHER_IS_BETTER) & set(LOWER_IS_BETTER)
    unknown = replace(get_recipe("cnn-mnist"), metric="elbo (nats)")  # it may train, but cannot rank
    with pytest.raises(ValueError, match="metric 'elbo' has no known direction"):
        _ = unknown.maximize


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "cnn-mnist"}, "registered twice"),
        ({"samples": "grid"}, "samples 'grid' is not one of"),
        ({"samples": "predictions", "draw": None}, "samples 'predictions' needs `draw`"),
    ],
)
def test_a_recipe_sample_or_search_could_not_use_is_refused_at_registration(monkeypatch, fields, message):
    from deepzoo.recipes import RECIPES
    from deepzoo.recipes.registry import register

    monkeypatch.setattr("deepzoo.recipes.registry.RECIPES", dict(RECIPES))
    base = replace(get_recipe("cnn-mnist"), name="cnn-mnist-copy")
    register(base)  # the copy itself is fine
    with pytest.raises(ValueError, match=re.escape(message)):
        register(replace(base, **({"name": "another"} | fields)))


def _trial(index, value):
    return {"trial": index, "values": {}, "accuracy": value, "val_loss": value}


def test_trials_rank_best_first_in_the_metrics_direction_with_stopped_ones_last():
    trials = [_trial(0, 0.5), _trial(1, None), _trial(2, 0.9), _trial(3, 0.7), _trial(4, 0.9)]
    assert [t["trial"] for t in rank(trials, get_recipe("cnn-mnist"))] == [2, 4, 3, 0, 1]
    assert [t["trial"] for t in rank(trials, get_recipe("gpt-shakespeare"))] == [0, 3, 2, 4, 1]


def test_a_trial_scores_its_best_evaluation_when_it_keeps_the_best_weights(tmp_path):
    records = [{"step": s, "split": "eval", "val_loss": v} for s, v in ((1, 2.0), (2, 1.5), (3, 1.7))]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    recipe = get_recipe("gpt-shakespeare")
    assert recipe.default.train.keep_best == "val_loss:min"
    assert trial_metric(tmp_path, recipe, recipe.default) == 1.5
    plain = replace(recipe.default, train=replace(recipe.default.train, keep_best=""))
    assert trial_metric(tmp_path, recipe, plain) == 1.7
    # a classifier logs the training batches' accuracy too: only evaluations score a trial
    records = [{"step": 1, "split": "train", "accuracy": 0.99}, {"step": 1, "split": "eval", "accuracy": 0.8}]
    records += [
        {"step": 2, "split": "eval", "accuracy": 0.85},
        {"step": 3, "split": "train", "accuracy": 1.0},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    classifier = get_recipe("cnn-mnist")
    best = replace(classifier.default, train=replace(classifier.default.train, keep_best="accuracy:max"))
    assert trial_metric(tmp_path, classifier, best) == 0.85
    last = replace(classifier.default, train=replace(classifier.default.train, keep_best=""))
    assert trial_metric(tmp_path, classifier, last) == 0.85
    records.insert(2, {"step": 1, "split": "eval", "accuracy": 0.9})  # the best is no longer the last
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    spaced = replace(classifier.default, train=replace(classifier.default.train, keep_best="accuracy : max"))
    assert trial_metric(tmp_path, classifier, spaced) == 0.9
    other = replace(classifier.default, train=replace(classifier.default.train, keep_best="val_loss:min"))
    assert trial_metric(tmp_path, classifier, other) == 0.85  # best by another metric: the last


FAST = ["--train-limit", "2000", "--validation", "1000", "--train.steps", "40", "--train.eval-every", "40"]
FAST += [
    "--train.batch-size",
    "64",
    "--train.no-progress",
    "--train.precision",
    "fp32",
    "--train.device",
    "cpu",
]


def _search(capsys, out, trials, *space, extra=()):
    argv = ["search", "linear-softmax-mnist", "--out", str(out), "--trials", str(trials), *FAST, *extra]
    main(argv + [a for spec in space for a in ("--space", spec)])
    return capsys.readouterr().out


def test_search_ranks_trials_by_their_validation_accuracy_and_resumes(tmp_path, capsys, monkeypatch):
    """Each trial trains with its drawn values; its recorded accuracy is what `deepzoo eval` of its
    run gives on the validation split; a rerun with more trials trains only the new ones."""
    import deepzoo.recipes.search as search

    trained = []
    real_train = search.train_recipe
    monkeypatch.setattr(search, "train_recipe", lambda *a, **k: trained.append(a[2]) or real_train(*a, **k))
    space = ("train.lr=log:1e-4:1e-1", "model.reg-strength=choice:0,0.001")
    out = tmp_path / "search"
    _search(capsys, out, 3, *space)
    first = json.loads((out / "search.json").read_text())
    _search(capsys, out, 5, *space)
    assert [p.name for p in trained] == [f"trial-00{i}" for i in range(5)]  # 0-2 not trained twice
    record = json.loads((out / "search.json").read_text())
    assert record["trials"][:3] == first["trials"]
    assert (out / "search.png").stat().st_size > 0
    for trial in record["trials"]:
        config = json.loads((out / f"trial-{trial['trial']:03d}" / "config.json").read_text())["config"]
        assert config["train"]["lr"] == float(trial["values"]["train.lr"])
        assert config["model"]["reg_strength"] == float(trial["values"]["model.reg-strength"])
        main(["eval", trial["run_dir"], "--device", "cpu"])
        evaluated = json.loads(capsys.readouterr().out)
        assert evaluated["split"] == "val" and evaluated["accuracy"] == trial["accuracy"]
    accuracies = [t["accuracy"] for t in record["trials"]]
    printed = [line.split() for line in _search(capsys, out, 5, *space).splitlines()[1:6]]
    ranked = sorted(range(5), key=lambda i: (-accuracies[i], i))
    values = [record["trials"][i]["values"] for i in ranked]  # a rate to 4 digits, a choice as drawn
    assert printed == [
        [str(i), f"{accuracies[i]:.4f}", f"{float(v['train.lr']):.4g}", v["model.reg-strength"]]
        for i, v in zip(ranked, values)
    ]
    assert len(trained) == 5
    shorter = _search(capsys, out, 3, *space).splitlines()[1:-1]  # ranks its own 3 trials only
    assert sorted(int(line.split()[0]) for line in shorter) == [0, 1, 2]
    assert len(json.loads((out / "search.json").read_text())["trials"]) == 5  # the others are kept


def test_a_diverging_trial_is_recorded_and_the_search_goes_on(tmp_path, capsys):
    out = tmp_path / "search"
    text = _search(capsys, out, 4, "train.lr=choice:1000,0.01", extra=["--train.log-every", "10"])
    trials = json.loads((out / "search.json").read_text())["trials"]
    lrs = [t["values"]["train.lr"] for t in trials]
    assert set(lrs) == {"1000", "0.01"}, "seed 0 draws both rates in four trials"
    for trial, lr in zip(trials, lrs):
        assert (trial["accuracy"] is None) == (lr == "1000") and trial["status"].startswith(
            "stopped: the loss diverged" if lr == "1000" else "done"
        )
    assert text.splitlines()[-2].split()[1] == "stopped"  # ranked last
    assert text.splitlines()[-1].startswith("best: ")
    text = _search(
        capsys, tmp_path / "all-stop", 1, "train.lr=choice:1000", extra=["--train.log-every", "10"]
    )
    assert text.splitlines()[-1].startswith("every trial stopped; all trials in ")


def test_a_trial_stopped_by_a_non_finite_loss_is_recorded_and_the_search_goes_on(tmp_path, monkeypatch):
    import deepzoo.recipes.search as search
    from deepzoo.recipes.search import run_search
    from deepzoo.train.errors import NonFiniteLossError

    def train(name, config, run_dir):
        if config.train.lr > 1:
            raise NonFiniteLossError("the loss is nan at step 3")
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.jsonl").write_text(
            json.dumps({"step": 9, "split": "eval", "accuracy": 0.5}) + "\n"
        )

    monkeypatch.setattr(search, "train_recipe", train)
    recipe = get_recipe("linear-softmax-mnist")
    base = replace(recipe.default, validation=1000)
    trials = [({"train.lr": lr}, replace(base, train=replace(base.train, lr=lr))) for lr in (10.0, 0.01)]
    ranked = run_search(recipe, trials, tmp_path, {"recipe": recipe.name})
    assert [(t["trial"], t["accuracy"]) for t in ranked] == [(1, 0.5), (0, None)]
    assert ranked[1]["status"] == "stopped: the loss is nan at step 3"


SEARCH = ["search", "linear-softmax-mnist", "--out", "S"]
LR = ["--space", "train.lr=log:1e-4:1e-1"]


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (SEARCH, "give the space"),
        (SEARCH + LR, "test set: hold out"),
        (SEARCH + ["--space", "train.lr=log:0:1", "--validation", "9"], "> 0"),
        (SEARCH + LR + ["--train.lr", "1"], "--train.lr is searched twice, or searched and also fixed"),
        (
            SEARCH + ["--space", "train.rate=log:1e-4:1e-1", "--validation", "9"],
            "unknown option --train.rate",
        ),
        (SEARCH + LR + ["--trials", "0"], "--trials must be >= 1"),
        (SEARCH + LR + ["--space", "validation=int:100:200"], "ranked on different images"),
    ],
)
def test_search_refuses_a_bad_command_line_in_one_line(argv, complaint, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and complaint in err and len(err.splitlines()) == 1
    assert not (tmp_path / "S" / "trial-000").exists()


def test_a_search_directory_refuses_another_search(tmp_path, capsys):
    out = tmp_path / "search"
    _search(capsys, out, 1, "train.lr=log:1e-3:1e-2")
    with pytest.raises(SystemExit) as info:
        _search(capsys, out, 1, "train.lr=log:1e-3:1e-1")
    assert info.value.code == 2 and "holds another search (a different space)" in capsys.readouterr().err
    recorded = json.loads((out / "search.json").read_text())["trials"]
    shown = [a for a in FAST if a != "--train.no-progress"] + ["--train.progress"]  # only the display differs
    argv = ["search", "linear-softmax-mnist", "--out", str(out), "--trials", "1", *shown]
    main([*argv, "--space", "train.lr=log:1e-3:1e-2"])
    assert capsys.readouterr().out.splitlines()[-1].startswith("best: ")
    # a search stopped after its trial finished but before recording it resumes the trial's run
    (out / "search.json").unlink()
    main([*argv, "--space", "train.lr=log:1e-3:1e-2"])
    capsys.readouterr()
    again = json.loads((out / "search.json").read_text())["trials"]
    assert again[0]["accuracy"] == recorded[0]["accuracy"] and again[0]["run_dir"] == recorded[0]["run_dir"]
