import json
import os
import subprocess
import sys

import pytest
import torch

import deepzoo
from deepzoo.cli import main
from tests.conftest import REPO

TINY = [
    "--model.channels",
    "8",
    "16",
    "--model.feature-dim",
    "32",
    "--train.steps",
    "6",
    "--train.batch-size",
    "32",
    "--train.eval-every",
    "6",
    "--train.checkpoint-every",
    "3",
    "--train.no-progress",
]


def _error_of(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err.strip()
    return info.value.code, err


def test_list_shows_recipes_with_metric_and_reference(capsys):
    main(["list"])
    out = capsys.readouterr().out
    for name in ("cnn-mnist", "resnet-mnist", "mnist-features"):
        assert name in out
    assert "metric: accuracy" in out and "reference:" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "no-such-recipe"], "unknown recipe 'no-such-recipe'"),
        (["train", "cnn-mnist", "--train.lrr", "3"], "unknown option --train.lrr"),
        (["train", "cnn-mnist", "--train.lr", "fast"], "could not convert string to float"),
        (["train", "cnn-mnist", "--train.progress", "False"], "--train.progress is a switch"),
        (["train", "cnn-mnist", "--train.no-compile=1"], "write --train.compile or --train.no-compile"),
        (["train", "cnn-mnist", "--train.lr", "1", "2"], "unexpected argument 2"),
        (
            ["train", "cnn-mnist", "--train.optimizer", "foo"],
            "invalid choice 'foo' for argument '--train.optimizer'. Expected one of ('sgd', 'adam', "
            "'adamw', 'adagrad', 'rmsprop'). (see",
        ),
        (["train", "cnn-mnist", "--train.betas", "0.9"], "--train.betas'. Expected 2 values. (see"),
        (["train", "cnn-mnist", "--train.steps", "1.5"], "base 10: '1.5' (see `deepzoo train cnn-mnist"),
        (["train"], "name a recipe"),
        (["eval", "/nonexistent/run"], "not a deepzoo run directory"),
        (["sample", "."], ". is not a deepzoo run directory (it has no config.json)"),
        (["train", "--resume", "/nonexistent/run"], "not a deepzoo run directory"),
        (["frobnicate"], "invalid choice"),
        (["bench", "no-such-bench"], "unknown benchmark"),
        (
            ["train", "gpt-shakespeare", "--model.heads", "5"],
            "model.heads must be a divisor of dim (128)",
        ),
        (
            ["train", "gpt-shakespeare", "--model.dim", "42", "--model.heads", "6"],
            "dim / heads is even for rope",
        ),
        (["train", "vqgan-prior-scenes", "--model.gpt.heads", "3"], "model.gpt.heads must be a divisor"),
        (
            ["train", "gpt-shakespeare", "--data.block-size", "128"],
            "data.block_size 128 exceeds model.block_size 64",
        ),
        (
            ["train", "ddpm-mnist", "--model.net.heads", "3"],
            "net.heads must be a divisor of channels[2]",
        ),
        (
            ["train", "ddpm-mnist", "--model.net.attention-levels", "3"],
            "levels in [0, 3)",
        ),
        (["train", "vqgan-scenes", "--model.heads", "7"], "model.heads must be a divisor of channels[-1]"),
        (
            ["train", "clip-mnist", "--model.text-heads", "5"],
            "text_heads must be a divisor of text_width",
        ),
    ],
)
def test_user_errors_are_one_line_with_status_2(capsys, argv, message):
    code, err = _error_of(capsys, argv)
    assert code == 2
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_train_eval_load_and_resume_round_trip(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    main(["train", "cnn-mnist", *TINY, "--run-dir", str(run_dir)])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 6 and summary["split"] == "test"
    for name in (
        "config.json",
        "metrics.jsonl",
        "model.safetensors",
        "state.pt",
        "curves.png",
        "confusion.json",
    ):
        assert (run_dir / name).is_file(), name

    main(["eval", str(run_dir)])
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["accuracy"] == pytest.approx(summary["accuracy"])
    assert json.loads((run_dir / "eval.json").read_text()) == evaluated
    import deepzoo.train.trainer as trainer  # eval runs in the precision the run was trained in

    evaluation_mode, asked = trainer.evaluation_mode, []
    monkeypatch.setattr(trainer, "use_bf16", lambda precision, device: f"{precision} on {device}")

    def recorded(model, device, bf16):
        asked.append(bf16)
        return evaluation_mode(model, device, False)

    monkeypatch.setattr(trainer, "evaluation_mode", recorded)
    main(["eval", str(run_dir), "--device", "cpu"])
    assert asked == ["auto on cpu"]
    monkeypatch.undo()
    capsys.readouterr()
    assert (run_dir / "confusion.png").is_file()
    confusion = torch.tensor(json.loads((run_dir / "confusion.json").read_text()))
    assert confusion.sum() == 10000
    assert confusion.diag().sum() / 10000 == pytest.approx(evaluated["accuracy"])

    model = deepzoo.load(run_dir)
    assert not model.training and model(torch.rand(2, 1, 28, 28)).shape == (2, 10)

    main(["train", "--resume", str(run_dir)])  # already finished: resumes at step 6, stops
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 6


def test_sampling_a_classifier_run_is_a_clear_error(tmp_path, capsys):
    main(["train", "cnn-mnist", *TINY, "--train.steps", "1", "--run-dir", str(tmp_path / "r")])
    capsys.readouterr()
    code, err = _error_of(capsys, ["sample", str(tmp_path / "r")])
    assert code == 2 and "does not sample" in err


def test_the_console_script_runs_as_a_module():
    proc = subprocess.run(
        [sys.executable, "-m", "deepzoo", "train", "nope"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "unknown recipe" in proc.stderr


def test_knn_recipe_trains_without_steps_and_reloads_its_memory(tmp_path, capsys):
    run_dir = tmp_path / "knn"
    limit = ["--train-limit", "10000"]  # 10k remembered images: 94.6% at k = 1 (all 60k: 96.9%)
    main(["train", "knn-mnist", "--model.k", "1", *limit, "--run-dir", str(run_dir), "--train.no-progress"])
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert trained["step"] == 0 and trained["k"] == 1 and trained["accuracy"] > 0.94
    main(["eval", str(run_dir)])
    assert json.loads(capsys.readouterr().out)["accuracy"] == trained["accuracy"]
    from deepzoo.recipes import load_run

    assert load_run(run_dir).model.train_x.shape[0] == 10_000  # the limit holds when reloaded too


def test_a_knn_evaluation_reports_the_k_that_cross_validation_chose(mnist_small, tmp_path):
    from deepzoo.data import TensorData
    from deepzoo.models.knn import KNN, KNNConfig
    from deepzoo.recipes.classifiers import _evaluate_classifier

    model = KNN(KNNConfig(candidates=(3, 5), folds=2))
    model.fit(mnist_small.tensors["x"][:500], mnist_small.tensors["y"][:500])
    metrics = _evaluate_classifier(model, TensorData(mnist_small[slice(500, 700)]), tmp_path)
    assert metrics["k"] == model.k in (3, 5) and 0.5 < metrics["accuracy"] <= 1
    assert (tmp_path / "confusion.json").exists()


def test_steps_for_a_model_without_parameters_fail_before_it_is_fitted(tmp_path, capsys, monkeypatch):
    from deepzoo.models.knn import KNN

    monkeypatch.setattr(KNN, "fit", lambda *a: pytest.fail("fitted before the error"))
    for steps in ("1", "2"):
        argv = ["train", "knn-mnist", "--train.steps", steps, "--run-dir", str(tmp_path / "k")]
        code, err = _error_of(capsys, argv)
        assert code == 2 and "no trainable parameters" in err and not (tmp_path / "k").exists()


def test_sampling_a_language_model_prints_and_saves_text(tmp_path, capsys):
    tiny = [
        "--model.hidden",
        "16",
        "--model.embed-dim",
        "8",
        "--model.layers",
        "1",
        "--data.block-size",
        "32",
        "--data.stride",
        "512",
        "--train.steps",
        "2",
        "--train.eval-every",
        "2",
        "--train.no-progress",
    ]
    main(["train", "char-lstm-shakespeare", *tiny, "--run-dir", str(tmp_path / "lm")])
    capsys.readouterr()
    main(["sample", str(tmp_path / "lm"), "--n", "2"])
    out = capsys.readouterr().out
    saved = tmp_path / "lm" / "samples" / "sample-seed0.txt"
    assert out.splitlines()[-1] == str(saved)  # the text is saved in the run, then its path printed
    text = saved.read_text()
    assert text.startswith("=== sample 1 ===\n") and "\n=== sample 2 ===\n" in text
    assert out.startswith(text) and len(text) >= 2 * 300
    for seed in (0, 1):  # --seed seeds the sampling: seed 0 again draws the same text, seed 1 other
        out = str(tmp_path / f"s{seed}")
        main(["sample", str(tmp_path / "lm"), "--n", "2", "--seed", str(seed), "--out", out])
    capsys.readouterr()
    assert (tmp_path / "s0.txt").read_text() == text != (tmp_path / "s1.txt").read_text()


def test_gpt_and_seq2seq_recipes_run_end_to_end(tmp_path, capsys):
    gpt = [
        "--model.layers",
        "1",
        "--model.dim",
        "16",
        "--model.heads",
        "2",
        "--data.block-size",
        "16",
        "--data.stride",
        "4096",
        "--train.steps",
        "2",
        "--train.eval-every",
        "2",
        "--train.no-progress",
    ]
    main(["train", "gpt-shakespeare", *gpt, "--run-dir", str(tmp_path / "gpt")])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "val_loss" in summary and summary["split"] == "val"  # held-out text, not a test set
    main(["sample", str(tmp_path / "gpt"), "--n", "1"])
    assert len(capsys.readouterr().out) >= 300
    s2s = [
        "--model.dim",
        "16",
        "--model.heads",
        "2",
        "--model.encoder-layers",
        "1",
        "--model.decoder-layers",
        "1",
        "--train.steps",
        "2",
        "--train.eval-every",
        "2",
        "--train.no-progress",
    ]
    main(["train", "sort-digits", *s2s, "--run-dir", str(tmp_path / "s2s")])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # two steps teach nothing; what is checked is that `deepzoo eval` of the saved run (greedy
    # decoding, deterministic) reproduces the training run's final evaluation
    main(["eval", str(tmp_path / "s2s")])
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["exact_match"] == summary["exact_match"]


def test_a_flag_may_spell_its_field_with_underscores():
    from deepzoo.cli import parse_overrides
    from deepzoo.recipes import get_recipe

    default = get_recipe("cnn-mnist").default
    config = parse_overrides("cnn-mnist", default, ["--train.batch_size", "8", "--train.no_progress"])
    assert config.train.batch_size == 8 and config.train.progress is False
    with pytest.raises(Exception, match="--train.compile is a switch"):
        parse_overrides("cnn-mnist", default, ["--train.no_compile", "1"])


@pytest.mark.parametrize("recipe", ["wgan-gp-mnist", "vqgan-scenes"])
def test_a_parameter_groups_own_settings_are_flags(recipe):
    from deepzoo.cli import parse_overrides
    from deepzoo.recipes import get_recipe

    default = get_recipe(recipe).default
    config = parse_overrides(
        recipe, default, ["--train.optim.d.lr", "2e-4", "--train.optim.d.nesterov", "True"]
    )
    assert config.train.optim["d"].lr == 2e-4 and config.train.optim["d"].nesterov is True
    assert config.train.lr == default.train.lr  # the other groups keep the shared value
    with pytest.raises(Exception, match="unknown option --train.optim.e.lr"):
        parse_overrides(recipe, default, ["--train.optim.e.lr", "2e-4"])


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--train.steps", "-5", "train.steps must be >= 0, got -5"),
        ("--train.batch-size", "0", "train.batch-size must be >= 1, got 0"),
        ("--train.lr", "-1", "train.lr must be > 0, got -1.0"),
        ("--train.lr", "nan", "train.lr must be a finite number > 0, got nan"),
        ("--train.lr", "1e38", "too large for AdamW"),
    ],
)
def test_bad_values_are_one_line_naming_the_field(capsys, tmp_path, flag, value, message):
    run_dir = tmp_path / "run"
    code, err = _error_of(capsys, ["train", "cnn-mnist", flag, value, "--run-dir", str(run_dir)])
    assert code == 2 and message in err and err.count("\n") == 0
    assert not run_dir.exists()  # refused before any work
    if "too large" not in message:  # a range of the field's type: the command line's own check
        assert err.endswith("(see `deepzoo train cnn-mnist --help`)")


def test_an_existing_run_is_refused_unless_overwritten_and_the_summary_names_its_files(tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["train", "cnn-mnist", *TINY, "--train.steps", "3", "--run-dir", str(run_dir)]
    main(argv)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["split"] == "test" and "accuracy" in summary
    assert {"config.json", "metrics.jsonl", "model.safetensors", "state.pt", "confusion.png"} <= set(
        summary["files"]
    )
    assert (run_dir / ".lock").exists() and not any(name.startswith(".") for name in summary["files"])
    code, err = _error_of(capsys, argv)
    assert code == 2 and "already holds a run" in err and "--overwrite" in err and "--resume" in err
    main([*argv, "--overwrite"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 3


def test_damaged_run_files_are_one_line_naming_the_file(tmp_path, capsys):
    run_dir = tmp_path / "run"
    main(["train", "cnn-mnist", *TINY, "--train.steps", "2", "--run-dir", str(run_dir)])
    capsys.readouterr()
    weights = (run_dir / "model.safetensors").read_bytes()
    (run_dir / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    code, err = _error_of(capsys, ["eval", str(run_dir)])
    assert code == 2 and "model.safetensors is damaged" in err and err.count("\n") == 0
    from safetensors.torch import load, save

    tensors = load(weights)  # in no fixed order: safetensors returns a hash map
    counter, conv = sorted(k for k in tensors if k.endswith("num_batches_tracked"))[0], sorted(tensors)[0]
    for changed, complaint in (
        ({**tensors, "net.extra": torch.zeros(2)}, "unexpected ['net.extra']"),  # another model's file
        ({k: v for k, v in tensors.items() if k != conv}, f"missing ['{conv}']"),
        # torch's BatchNorm would refill this one silently (its courtesy to old checkpoints)
        ({k: v for k, v in tensors.items() if k != counter}, f"missing ['{counter}']"),
        ({**tensors, conv: torch.zeros(3, 3)}, f"shapes ['{conv} (3, 3) for {tuple(tensors[conv].shape)}']"),
    ):
        (run_dir / "model.safetensors").write_bytes(save(changed, metadata={"step": "2"}))
        code, err = _error_of(capsys, ["eval", str(run_dir)])
        assert code == 2 and "does not match the model" in err and complaint in err and err.count("\n") == 0
    (run_dir / "model.safetensors").write_bytes(weights)
    state = (run_dir / "state.pt").read_bytes()
    (run_dir / "state.pt").write_bytes(state[:100])
    code, err = _error_of(capsys, ["train", "--resume", str(run_dir)])
    assert code == 2 and "state.pt is damaged" in err and "deepzoo eval" in err
    (run_dir / "config.json").write_text('{"recipe": "cnn-mnist",\n')
    code, err = _error_of(capsys, ["eval", str(run_dir)])
    assert code == 2 and "config.json is damaged" in err


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xfe not text",  # not UTF-8
        b"[1, 2]",  # JSON, but not a record
        b'"cnn-mnist"',
        b'{"recipe": "cnn-mnist"}',  # no config
        b'{"recipe": "cnn-mnist", "config": 3}',  # a config that is not a dict
        b'{"recipe": "cnn-mnist", "config": {"train": {"lr": "fast"}}}',  # a field of the wrong type
        b'{"recipe": "cnn-mnist", "config": {"widht": 3}}',  # a field this recipe lacks
    ],
)
def test_a_damaged_run_config_is_refused_naming_the_file(tmp_path, content):
    from deepzoo.recipes import read_run_config
    from deepzoo.train.checkpoint import DamagedRunFile

    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(DamagedRunFile, match=r"config\.json is damaged"):
        read_run_config(tmp_path)


def test_a_run_config_naming_an_unknown_recipe_or_not_a_file_is_refused(tmp_path):
    from deepzoo.recipes import read_run_config
    from deepzoo.train.checkpoint import DamagedRunFile

    (tmp_path / "config.json").write_text('{"recipe": "no-such-recipe", "config": {}}')
    with pytest.raises(DamagedRunFile, match=r"config\.json names recipe 'no-such-recipe', which"):
        read_run_config(tmp_path)
    (tmp_path / "config.json").unlink()
    (tmp_path / "config.json").mkdir()  # a directory of that name is no run's config
    with pytest.raises(FileNotFoundError, match="is not a deepzoo run directory"):
        read_run_config(tmp_path)


def test_a_run_without_weights_says_which_file_it_lacks(tmp_path):
    from deepzoo.config import to_dict
    from deepzoo.recipes import get_recipe, load_run

    record = {"recipe": "cnn-mnist", "config": to_dict(get_recipe("cnn-mnist").default)}
    (tmp_path / "config.json").write_text(json.dumps(record))
    with pytest.raises(FileNotFoundError, match=r"holds no weights \(model\.safetensors\)"):
        load_run(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"holds no weights \(step-4\.safetensors\)"):
        load_run(tmp_path, weights=tmp_path / "snapshots" / "step-4.safetensors")


def test_debug_shows_the_traceback_of_an_error(tmp_path, capsys, monkeypatch):
    """Without --debug one line and exit status 2; with it (or DEEPZOO_DEBUG=1) the exception
    itself, whose traceback the interpreter prints."""
    from deepzoo.train.checkpoint import DamagedRunFile

    (tmp_path / "config.json").write_text("{not json")
    code, err = _error_of(capsys, ["eval", str(tmp_path)])
    assert code == 2 and "--debug" in err and err.count("\n") == 0 and "config.json is damaged" in err
    with pytest.raises(DamagedRunFile, match="config.json is damaged"):
        main(["--debug", "eval", str(tmp_path)])
    with pytest.raises(DamagedRunFile, match="config.json is damaged"):  # anywhere on the line
        main(["eval", str(tmp_path), "--debug"])
    monkeypatch.setenv("DEEPZOO_DEBUG", "1")
    with pytest.raises(DamagedRunFile):
        main(["eval", str(tmp_path)])
    monkeypatch.setenv("DEEPZOO_DEBUG", "0")
    assert _error_of(capsys, ["eval", str(tmp_path)])[0] == 2


def _help_of(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code in (0, None)
    return capsys.readouterr().out


def test_help_lists_run_options_and_benchmarks_and_a_closed_pipe_is_quiet(capsys):
    train_help = _help_of(capsys, ["train", "cnn-mnist", "--help"])
    assert "--run-dir" in train_help and "--resume" in train_help and "--overwrite" in train_help
    assert _help_of(capsys, ["train", "cnn-mnist", "-h"]) == train_help
    assert "vq-speed" in (bench_help := _help_of(capsys, ["bench", "--help"])) and "gpu" in bench_help
    assert "how many samples" in _help_of(capsys, ["sample", "--help"])
    # a real process (`python -m deepzoo`, the console script's entry) writing into a closed pipe
    piped = subprocess.run(
        f"{sys.executable} -m deepzoo train cnn-mnist --help | head -1",
        shell=True, capture_output=True, text=True, cwd=REPO, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )  # fmt: skip
    assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr
    # a command whose reader goes away mid-output: exit status 0, nothing on stderr
    script = (
        "import deepzoo.cli as cli\n"
        "def closed(argv, debug):\n"
        "    raise BrokenPipeError\n"
        "cli._main = closed\n"
        "cli.main(['list'])\n"
    )
    reader_gone = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )  # fmt: skip
    assert reader_gone.returncode == 0 and reader_gone.stderr == ""


def test_a_two_stage_recipe_refuses_a_parent_run_of_another_recipe(tmp_path, capsys):
    from deepzoo.recipes import load_parent

    run_dir = tmp_path / "cnn"
    main(["train", "cnn-mnist", *TINY, "--train.steps", "1", "--run-dir", str(run_dir)])
    with pytest.raises(ValueError, match="is a 'cnn-mnist' run, not a vqvae-mnist run"):
        load_parent(run_dir, ("vqvae-mnist",), "vqvae-run")
    assert load_parent(run_dir, ("cnn-mnist",), "parent").recipe.name == "cnn-mnist"
    for missing in ("", tmp_path / "empty"):  # unset, or a directory that holds no run
        (tmp_path / "empty").mkdir(exist_ok=True)
        with pytest.raises(FileNotFoundError, match="^--vqvae-run must name a trained vqvae-mnist run"):
            load_parent(missing, ("vqvae-mnist",), "vqvae-run")


def test_a_classifier_trains_on_the_first_train_limit_images(capsys):
    from dataclasses import replace

    from deepzoo.data import load_mnist
    from deepzoo.recipes import get_recipe

    recipe = get_recipe("cnn-mnist")
    train, test = recipe.data(replace(recipe.default, train_limit=64), torch.device("cpu"))
    full = load_mnist("train")
    assert len(train) == 64 and len(test) == 10_000
    assert torch.equal(train.tensors["x"], full.tensors["x"][:64])
    assert torch.equal(train.tensors["y"], full.tensors["y"][:64])
    assert len(recipe.data(recipe.default, torch.device("cpu"))[0]) == 60_000
    code, err = _error_of(capsys, ["train", "cnn-mnist", "--train-limit", "16", "--train.batch-size", "32"])
    assert code == 2 and "exceeds the dataset size 16" in err


def test_an_ensemble_of_classifier_runs_averages_their_probabilities(tmp_path, capsys, mnist_test):
    from deepzoo.data.tensors import EVAL_BATCH

    runs = [tmp_path / f"r{seed}" for seed in (0, 1)]
    for seed, run_dir in enumerate(runs):
        fp32 = ["--train.precision", "fp32"]  # the recomputation below is fp32, on AMX machines too
        main(["train", "cnn-mnist", *TINY, *fp32, "--train.seed", str(seed), "--run-dir", str(run_dir)])
    capsys.readouterr()
    code, err = _error_of(capsys, ["eval", *map(str, runs)])
    assert code == 2 and "needs --out DIR" in err
    code, err = _error_of(capsys, ["eval", str(runs[0]), "--out", str(tmp_path / "one")])
    assert code == 2 and "--out is for ensembles" in err and not (tmp_path / "one").exists()
    main(["eval", *map(str, runs), "--out", str(tmp_path / "ensemble")])
    result = json.loads(capsys.readouterr().out)
    assert json.loads((tmp_path / "ensemble" / "eval.json").read_text()) == result
    assert (tmp_path / "ensemble" / "confusion.png").is_file()
    # members as `deepzoo eval` of each alone reports them
    for member, run_dir in zip(result["members"], runs):
        main(["eval", str(run_dir)])
        assert member["accuracy"] == json.loads(capsys.readouterr().out)["accuracy"]
    # the ensemble: argmax of the mean of the members' softmax
    models = [deepzoo.load(run_dir) for run_dir in runs]
    x, y = mnist_test.tensors["x"], mnist_test.tensors["y"]
    with torch.no_grad():
        # in the evaluation's own batches, so the same kernels give the same rounding on any CPU
        mean = sum(torch.cat([m(b).softmax(-1) for b in x.split(EVAL_BATCH)]) for m in models) / 2
    assert result["accuracy"] == pytest.approx((mean.argmax(1) == y).float().mean().item(), abs=1e-4)


def test_a_snapshot_ensemble_averages_the_weights_saved_at_the_end_of_each_cycle(
    tmp_path, capsys, mnist_test
):
    """--train.lr-cycles 3 --train.snapshots: snapshots after steps 2, 4 and 6, the last equal to the
    run's final weights; `deepzoo eval RUN --snapshots` averages the three snapshots' probabilities."""
    from safetensors.torch import load_file

    from deepzoo.data.tensors import EVAL_BATCH
    from deepzoo.recipes import load_run

    run_dir = tmp_path / "run"
    flags = [
        "--train.lr-cycles",
        "3",
        "--train.snapshots",
        "--train.log-every",
        "1",
        "--train.precision",
        "fp32",
    ]
    main(["train", "cnn-mnist", *TINY, *flags, "--train.warmup-steps", "0", "--run-dir", str(run_dir)])
    capsys.readouterr()
    files = sorted((run_dir / "snapshots").iterdir())
    assert [f.name for f in files] == [f"step-{s:06d}.safetensors" for s in (2, 4, 6)]
    last, final = load_file(files[-1]), load_file(run_dir / "model.safetensors")
    assert all(torch.equal(last[k], final[k]) for k in final)
    assert not all(torch.equal(load_file(files[0])[k], final[k]) for k in final)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in records if r["split"] == "train"]
    assert lrs[0] == lrs[2] == lrs[4] > lrs[1]  # steps 1, 3, 5 start a cycle at the full rate
    code, err = _error_of(capsys, ["eval", str(run_dir), "--snapshots"])
    assert code == 2 and "needs --out DIR" in err
    main(["eval", str(run_dir), "--snapshots", "--out", str(tmp_path / "ensemble"), "--device", "cpu"])
    result = json.loads(capsys.readouterr().out)
    assert [m["step"] for m in result["members"]] == [2, 4, 6]
    assert [m["snapshot"] for m in result["members"]] == [str(f) for f in files]
    models = [load_run(run_dir, "cpu", path).model for path in files]
    x, y = mnist_test.tensors["x"], mnist_test.tensors["y"]
    with torch.no_grad():
        mean = sum(torch.cat([m(b).softmax(-1) for b in x.split(EVAL_BATCH)]) for m in models) / 3
    assert result["accuracy"] == pytest.approx((mean.argmax(1) == y).float().mean().item(), abs=1e-4)
    plain = tmp_path / "plain"
    main(["train", "cnn-mnist", *TINY, "--run-dir", str(plain)])
    capsys.readouterr()
    code, err = _error_of(capsys, ["eval", str(plain), "--snapshots", "--out", str(tmp_path / "e2")])
    assert code == 2 and "saved no snapshots" in err
    one = tmp_path / "one-cycle"
    main(["train", "cnn-mnist", *TINY, "--train.snapshots", "--run-dir", str(one)])
    capsys.readouterr()
    code, err = _error_of(capsys, ["eval", str(one), "--snapshots", "--out", str(tmp_path / "e3")])
    assert code == 2 and "saved one snapshot; an ensemble needs two or more" in err


def test_an_ensemble_refuses_a_run_that_is_not_a_classifier(tmp_path, capsys, tiny_recipe_run):
    from deepzoo.recipes.common import SampleEval

    autoencoder, _ = tiny_recipe_run("ae-mnist", eval=SampleEval(samples=16, iwae_k=2, iwae_examples=16))
    classifier = tmp_path / "cnn"
    main(["train", "cnn-mnist", *TINY, "--run-dir", str(classifier)])
    capsys.readouterr()
    code, err = _error_of(capsys, ["eval", str(classifier), str(autoencoder), "--out", str(tmp_path / "e")])
    assert code == 2 and f"{autoencoder} (ae-mnist) is not a classifier" in err
    assert not (tmp_path / "e" / "eval.json").exists()
    some_digits = tmp_path / "some-digits"  # a classifier scored on the test images of 0, 1 and 2 only
    main(["train", "cnn-mnist", *TINY, "--classes", "0", "1", "2", "--run-dir", str(some_digits)])
    capsys.readouterr()
    code, err = _error_of(capsys, ["eval", str(classifier), str(some_digits), "--out", str(tmp_path / "e")])
    assert code == 2 and "must share one evaluation split" in err
    code, err = _error_of(capsys, ["sample", str(autoencoder), "--wav", str(tmp_path / "song.wav")])
    assert code == 2 and "--wav is for dance runs; 'ae-mnist' does not dance" in err


@pytest.fixture
def bare_run(tmp_path):
    """A directory that passes the run-directory check (it has a config.json) and nothing more:
    the command-line checks that come before loading the run must refuse first."""
    run_dir = tmp_path / "bare"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")
    return str(run_dir)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sample", "RUN", "--n", "0"], "--n must be >= 1, got 0"),
        (["eval", "RUN", "--out", "OUT"], "--out is for ensembles"),
        (["train", "--resume", "RUN", "--overwrite"], "takes no recipe, overrides or --overwrite"),
        (["train", "--resume", "RUN", "--train.lr", "0.1"], "takes no recipe, overrides or --overwrite"),
        (["check", "cnn-mnist", "--lr-steps", "0"], "--lr-steps must be >= 1"),
        (["check", "cnn-mnist", "--examples", "0"], "--examples, --steps and --lr-steps must be >= 1"),
        (["check", "cnn-mnist", "--lrs", "nan"], "--lrs must be positive rates"),
        (["check", "cnn-mnist", "--lrs", "inf"], "--lrs must be positive rates"),
        (["check", "cnn-mnist", "--lrs", "0.1", "0"], "--lrs must be positive rates"),
        (["list", "cnn-mnist"], "deepzoo list: unrecognized arguments: cnn-mnist"),
        (["report", "--bench", "OUT"], "no such results directory"),
        (
            [
                *("search", "linear-softmax-mnist", "--out", "OUT", "--validation", "9"),
                *("--space", "train.lr=log:1e-4:1e-1", "--space", "train.lr=log:1e-3:1e-2"),
            ],
            "--train.lr is searched twice",
        ),
    ],
)
def test_a_bad_command_line_is_refused_before_any_work(capsys, bare_run, tmp_path, argv, message):
    """Each refused in one line with status 2 before anything is loaded, trained or written."""
    out = tmp_path / "out"
    argv = [{"RUN": bare_run, "OUT": str(out)}.get(a, a) for a in argv]
    code, err = _error_of(capsys, argv)
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("error", "status"),
    [
        ("DivergedError", 1),
        ("NonFiniteLossError", 1),
        ("TrainingInterrupted", 130),
        ("KeyboardInterrupt", 130),
        ("ValueError", 2),
    ],
)
def test_how_a_run_ends_is_its_exit_status(capsys, monkeypatch, error, status):
    """The module's contract: a run stopped on a non-finite or diverging loss exits with 1, an
    interrupted one with 130, a user's mistake with 2; each as one line on stderr."""
    import builtins

    from deepzoo import cli
    from deepzoo.train import errors

    kind = getattr(errors, error, None) or getattr(builtins, error)

    def stopped(ns, rest):
        raise kind(f"what happened to the run ({error})")

    monkeypatch.setattr(cli, "cmd_train", stopped)
    code, err = _error_of(capsys, ["train", "cnn-mnist"])
    assert code == status and len(err.splitlines()) == 1 and "Traceback" not in err
    assert ("interrupted" if error == "KeyboardInterrupt" else f"({error})") in err


def test_a_default_run_directory_never_reuses_one_from_the_same_second(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from deepzoo.recipes import runs

    monkeypatch.setattr(runs, "time", SimpleNamespace(strftime=lambda fmt: "20261206-031500"))
    made = []
    for _ in range(3):
        made.append(runs.default_run_dir("cnn-mnist", tmp_path))
        made[-1].mkdir(parents=True)
    assert made[0].parent == tmp_path / "cnn-mnist"
    assert [p.name for p in made] == ["20261206-031500", "20261206-031500-1", "20261206-031500-2"]


def test_every_rank_trains_into_the_run_directory_rank_0_chose(tmp_path, monkeypatch):
    """Two ranks may start in different seconds: the default run directory is chosen once and
    broadcast, so each rank writes into rank 0's."""
    from deepzoo.recipes import runs

    chosen, fitted = tmp_path / "rank-0-chose-this", []
    monkeypatch.setattr(runs.distributed, "broadcast_object", lambda value, info: str(chosen))
    monkeypatch.setattr(runs, "_fit", lambda recipe, config, run_dir, **kw: fitted.append(run_dir))
    runs.train_recipe("cnn-mnist")
    assert fitted == [chosen]


@pytest.mark.parametrize("entry", ["train_recipe", "train_variant_of"])
def test_a_config_outside_its_ranges_is_refused_before_training(monkeypatch, tmp_path, entry):
    import dataclasses

    from deepzoo.recipes import get_recipe, runs

    def fit(*args, **kwargs):
        raise AssertionError("trained with a dropout of 1.5")

    monkeypatch.setattr(runs, "_fit", fit)
    recipe = get_recipe("cnn-mnist")
    config = dataclasses.replace(recipe.default, model=dataclasses.replace(recipe.default.model, dropout=1.5))
    first = "cnn-mnist" if entry == "train_recipe" else recipe
    with pytest.raises(ValueError, match=r"^model\.dropout must be in \[0, 1\), got 1\.5"):
        getattr(runs, entry)(first, config, tmp_path / "run")


@pytest.mark.parametrize("entry", ["train_recipe", "train_variant_of"])
def test_evaluate_and_overwrite_reach_the_trainer(monkeypatch, tmp_path, entry):
    from deepzoo.recipes import get_recipe, runs

    fitted = []
    monkeypatch.setattr(runs, "_fit", lambda recipe, config, run_dir, **kw: fitted.append(kw))
    recipe = get_recipe("cnn-mnist")
    if entry == "train_recipe":
        runs.train_recipe("cnn-mnist", None, tmp_path / "run", evaluate=False, overwrite=True)
        assert fitted == [{"resume": False, "evaluate": False, "overwrite": True}]
    else:
        runs.train_variant_of(recipe, recipe.default, tmp_path / "run", evaluate=False)
        assert fitted == [{"resume": False, "evaluate": False}]


def test_a_run_starts_from_the_weights_its_seed_gives(monkeypatch, tmp_path):
    """The model is built after seeding with train.seed: every rank, and every rerun, starts from
    the same weights whatever the global generator held before."""
    import dataclasses

    from deepzoo.recipes import get_recipe, runs

    built, evaluations = [], []

    class Recorder:
        def __init__(self, model, *args, evaluate, name, **kwargs):
            built.append({k: v.clone() for k, v in model.state_dict().items()})
            evaluations.append(evaluate)
            assert name == "cnn-mnist"  # the progress bar's title, not the run directory's name

        def fit(self):
            return None

    monkeypatch.setattr(runs, "Trainer", Recorder)
    recipe = get_recipe("cnn-mnist")
    for global_seed, seed in ((0, 0), (1, 0), (0, 1)):
        torch.manual_seed(global_seed)
        train = dataclasses.replace(recipe.default.train, seed=seed)
        config = dataclasses.replace(recipe.default, train=train)
        runs.train_variant_of(recipe, config, tmp_path / f"run{len(built)}")
    first, rerun, other_seed = built
    assert all(torch.equal(first[k], rerun[k]) for k in first)
    assert not all(torch.equal(first[k], other_seed[k]) for k in first)
    # the trainer evaluates with the recipe's evaluation, or not at all with evaluate=False
    assert all(callable(e) for e in evaluations)
    runs.train_variant_of(recipe, recipe.default, tmp_path / "quiet", evaluate=False)
    assert evaluations[-1] is None


def test_a_run_loads_its_best_then_its_ema_then_its_last_weights(tmp_path, capsys):
    """load_run (and `deepzoo eval`, `deepzoo.load`) prefers best.safetensors, then
    ema.safetensors, then model.safetensors; the step it reports is the loaded file's."""
    from safetensors.torch import load_file

    from deepzoo.files import tmp_path as temporary
    from deepzoo.recipes import get_recipe, load_run, read_run_config
    from deepzoo.train import checkpoint as ckpt

    run_dir = tmp_path / "run"
    main(["train", "cnn-mnist", *TINY, "--train.ema-decay", "0.9", "--run-dir", str(run_dir)])
    capsys.readouterr()
    _, config = read_run_config(run_dir)
    # a save killed after renaming the weights, before the EMA weights: loading rolls it forward
    torch.manual_seed(2)
    newer = get_recipe("cnn-mnist").build(config)
    (run_dir / ckpt.WEIGHTS).write_bytes(ckpt.weights_bytes(newer, 9))
    temporary(run_dir / ckpt.EMA_WEIGHTS).write_bytes(ckpt.weights_bytes(newer, 9))
    assert load_run(run_dir).step == 9 and not temporary(run_dir / ckpt.EMA_WEIGHTS).exists()
    torch.manual_seed(1)
    other = get_recipe("cnn-mnist").build(config)  # stands in for the weights of a best evaluation
    (run_dir / ckpt.BEST_WEIGHTS).write_bytes(ckpt.weights_bytes(other, 2))
    for name, step in ((ckpt.BEST_WEIGHTS, 2), (ckpt.EMA_WEIGHTS, 9), (ckpt.WEIGHTS, 9)):
        run = load_run(run_dir)
        loaded, stored = run.model.state_dict(), load_file(run_dir / name)
        assert run.step == step and all(torch.equal(loaded[k], stored[k]) for k in stored), name
        assert not run.model.training
        if name != ckpt.WEIGHTS:
            (run_dir / name).unlink()  # the next in line
    # a two-stage recipe's parent is loaded once, and again when its weights change
    from deepzoo.recipes.runs import load_parent

    parent = load_parent(run_dir, ("cnn-mnist",), "parent-run")
    assert load_parent(run_dir, ("cnn-mnist",), "parent-run") is parent and parent.step == 9
    (run_dir / ckpt.WEIGHTS).write_bytes(ckpt.weights_bytes(other, 3))
    os.utime(run_dir / ckpt.WEIGHTS, (1e9, 1e9))  # retrained in place: another modification time
    assert load_parent(run_dir, ("cnn-mnist",), "parent-run").step == 3
    # another device is another load; only the newest parent is held in memory
    elsewhere = load_parent(run_dir, ("cnn-mnist",), "parent-run", device="meta")
    assert next(elsewhere.model.parameters()).device.type == "meta"
    from deepzoo.recipes import runs

    assert list(runs._parents.values()) == [elsewhere]


def _stand_in_run(monkeypatch, tmp_path, samples, model, eval_data, draw=None):
    """A run directory whose loaded run is a stand-in: `deepzoo sample` reads only these parts."""
    from types import SimpleNamespace

    (tmp_path / "config.json").write_text("{}")
    recipe = SimpleNamespace(
        name="stand-in", samples=samples, draw=draw, data=lambda config, device: (None, eval_data)
    )
    run = SimpleNamespace(recipe=recipe, model=model, config=None)
    monkeypatch.setattr("deepzoo.recipes.load_run", lambda run_dir, device: run)
    return tmp_path


def test_sampled_predictions_are_drawn_on_the_examples_the_seed_picks(monkeypatch, tmp_path, capsys):
    from deepzoo.data.tensors import TensorData

    shown, written = [], []
    eval_data = TensorData({"x": torch.arange(20.0)})

    def draw(model, batch):
        shown.append(batch["x"])
        return torch.zeros(len(batch["x"]), 2, 3, 4, 4)

    monkeypatch.setattr("deepzoo.recipes.write_predictions", lambda pictures, out: written.append(out) or out)
    run_dir = _stand_in_run(monkeypatch, tmp_path, "predictions", None, eval_data, draw)
    main(["sample", str(run_dir), "--n", "5", "--seed", "3", "--device", "cpu"])
    chosen = torch.randperm(20, generator=torch.Generator().manual_seed(3))[:5]
    assert torch.equal(shown[0], chosen.float()) and written == [run_dir / "samples" / "sample-seed3.png"]
    assert capsys.readouterr().out.strip() == str(written[0])


def test_sampled_dances_follow_the_songs_the_seed_picks_with_their_beats(monkeypatch, tmp_path, capsys):
    """Songs of the evaluation split picked by --seed; an actor-critic run dances with its policy;
    the beats are cut to the dance's length."""
    from types import SimpleNamespace

    from deepzoo.data.tensors import TensorData

    songs, frames = 6, 10
    music = torch.arange(songs).float().view(songs, 1, 1).expand(songs, frames, 4)
    beats = torch.rand(songs, frames, generator=torch.Generator().manual_seed(0)) < 0.5
    heard, written = [], []
    policy = SimpleNamespace(
        generate=lambda music, generator: heard.append(music) or torch.zeros(len(music), 8, 75)
    )
    monkeypatch.setattr(
        "deepzoo.recipes.write_dances",
        lambda motion, beats, out: written.append((motion, beats, out)) or [out],
    )
    eval_data = TensorData({"music": music, "beats": beats})
    run_dir = _stand_in_run(monkeypatch, tmp_path, "dance", SimpleNamespace(policy=policy), eval_data)
    main(["sample", str(run_dir), "--n", "3", "--seed", "2", "--out", str(tmp_path / "d.png")])
    chosen = torch.randperm(songs, generator=torch.Generator().manual_seed(2))[:3]
    assert torch.equal(heard[0], music[chosen])
    ((motion, cut, out),) = written
    assert motion.shape == (3, 8, 75) and torch.equal(cut, beats[chosen, :8]) and out == tmp_path / "d.png"
    assert capsys.readouterr().out.strip() == str(out)
