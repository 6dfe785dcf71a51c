import json
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
        (["train"], "name a recipe"),
        (["eval", "/nonexistent/run"], "not a deepzoo run directory"),
        (["sample", "."], "not a deepzoo run directory"),
        (["train", "--resume", "/nonexistent/run"], "not a deepzoo run directory"),
        (["frobnicate"], "invalid choice"),
        (["bench", "no-such-bench"], "unknown benchmark"),
    ],
)
def test_user_errors_are_one_line_with_status_2(capsys, argv, message):
    code, err = _error_of(capsys, argv)
    assert code == 2
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_train_eval_load_and_resume_round_trip(tmp_path, capsys):
    run_dir = tmp_path / "run"
    main(["train", "cnn-mnist", *TINY, "--run-dir", str(run_dir)])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 6 and 0 <= summary["accuracy"] <= 1
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
    main(["train", "knn-mnist", "--model.k", "1", "--run-dir", str(run_dir), "--train.no-progress"])
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert trained["step"] == 0 and trained["k"] == 1 and trained["accuracy"] > 0.96
    main(["eval", str(run_dir)])
    assert json.loads(capsys.readouterr().out)["accuracy"] == trained["accuracy"]


def test_sampling_a_language_model_prints_text(tmp_path, capsys):
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
    assert len(out) >= 2 * 300


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
    assert "val_loss" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])
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
    assert 0 <= summary["exact_match"] <= 1
