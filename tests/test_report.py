"""`deepzoo report`: the page holds each run's metrics, curves and output, and renders in headless
Chromium with every image loaded and no console error, also when a run's files are missing or
damaged; TensorBoard event files hold the logged scalars."""

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from deepzoo.cli import main
from deepzoo.report import find_runs, read_run, write_report
from deepzoo.viz import plot_curves, save_image_grid

ARTIFACTS = Path(
    os.environ.get("DEEPZOO_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts")
)
"""Where the browser test keeps its screenshots (kept after the run, ignored by git)."""
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _fake_run(root: Path, name: str, recipe: str = "vae-mnist", loss: float = 0.5) -> Path:
    """A run directory as `deepzoo train` writes it: config, metrics, curves and a sample grid."""
    run = root / name
    (run / "samples").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"recipe": recipe, "config": {"train": {"steps": 20}}}))
    records = [
        {"step": 10, "split": "train", "time": 1.0, "loss": loss + 0.1},
        {"step": 10, "split": "eval", "time": 1.5, "val_loss": loss + 0.05, "fid": 42.125},
        {"step": 20, "split": "train", "time": 2.0, "loss": loss},
        {"step": 20, "split": "eval", "time": 2.5, "val_loss": loss, "fid": 40.5},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    plot_curves(records, run / "curves.png")
    save_image_grid(torch.rand(16, 1, 28, 28), run / "samples" / "samples.png", nrow=4)
    (run / "samples" / "text.txt").write_text("to be <or> not")
    return run


def _damaged_run(root: Path) -> Path:
    run = _fake_run(root, "damaged")
    (run / "samples" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image at all")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 30, "split": "ev')  # a line cut short by a crash
    (run / "curves.png").unlink()
    return run


def test_the_page_holds_each_runs_metrics_curves_output_and_a_comparison(tmp_path):
    a, b = _fake_run(tmp_path / "runs", "a"), _fake_run(tmp_path / "runs", "b", loss=0.25)
    assert find_runs([tmp_path / "runs"]) == [a, b]
    view = read_run(a)
    assert view.recipe == "vae-mnist" and view.problems == []
    assert view.last_eval["fid"] == "40.5" and [r["step"] for r in view.eval_rows] == ["10", "20"]
    assert view.curves is not None and [p.name for p in view.pictures] == ["samples/samples.png"]
    html = write_report([tmp_path / "runs"], tmp_path / "report.html").read_text()
    assert "Comparison: vae-mnist" in html and "0.25" in html and "42.12" in html
    assert "to be &lt;or&gt; not" in html  # text is escaped
    assert html.count("data:image/png;base64,") == 4  # two curves, two sample grids
    assert "http://" not in html and "https://" not in html  # nothing to fetch


def test_damaged_and_missing_files_are_stated_on_the_page(tmp_path):
    run = _damaged_run(tmp_path)
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "config.json").write_text("{not json")
    views = {Path(v.path).name: v for v in map(read_run, [run, tmp_path / "bare"])}
    damaged = " ".join(views["damaged"].problems)
    assert "broken.png is not a readable image" in damaged and "1 line(s) could not be read" in damaged
    assert views["damaged"].curves is not None  # drawn from the records instead
    bare = " ".join(views["bare"].problems)
    assert "config.json could not be read" in bare and "metrics.jsonl is missing" in bare


def test_the_command_writes_the_report_and_refuses_what_is_not_there(tmp_path, capsys):
    run = _fake_run(tmp_path, "a")
    out = tmp_path / "r.html"
    assert main(["report", str(run), "-o", str(out)]) in (0, None)
    assert out.is_file() and str(out) in capsys.readouterr().out
    for argv, complaint in (
        (["report", str(tmp_path / "nope")], f"{tmp_path / 'nope'}: no such run directory"),
        (
            ["report", str(run), "--bench", str(tmp_path / "no")],
            f"--bench {tmp_path / 'no'}: no such results",
        ),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv + ["-o", str(out)])
        err = capsys.readouterr().err.strip()  # a user's mistake: no traceback to offer
        assert exit_info.value.code == 2 and complaint in err and "--debug" not in err


def _chromium() -> str:
    """Debian's Chromium, which `make test` installs (`make browser`); without it this test fails
    and says how to get it, rather than passing unseen."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path is not None, "headless Chromium is missing: run `make browser` (apt-get install chromium)"
    return path


def test_the_report_renders_in_headless_chromium(tmp_path):
    """From a file URL: no console errors, every image decoded (naturalWidth > 0), the metrics
    table shows metrics.jsonl's values; the screenshot is kept in test-artifacts/."""
    from playwright.sync_api import sync_playwright

    chromium = _chromium()
    runs = [_fake_run(tmp_path / "runs", "a"), _damaged_run(tmp_path / "runs")]
    results = tmp_path / "results"
    results.mkdir()
    (results / "README.md").write_text(
        "| benchmark | result | goal |\n| --- | --- | --- |\n| vae | 1.5 | met |\n"
    )
    plot_curves([{"step": 1, "split": "train", "loss": 1.0}], results / "plot.png")
    page_path = write_report(runs, tmp_path / "report.html", bench=results)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(page_path.resolve().as_uri())
        widths = page.eval_on_selector_all("img", "images => images.map(i => i.complete && i.naturalWidth)")
        cells = page.eval_on_selector_all(
            "#run-1 table.metrics tr:last-child td", "cells => cells.map(c => c.textContent)"
        )
        headers = page.eval_on_selector_all(
            "#run-1 table.metrics th", "cells => cells.map(c => c.textContent)"
        )
        problems = page.eval_on_selector_all(".problem", "ps => ps.map(p => p.textContent)")
        bench_cells = page.eval_on_selector_all("table.bench td", "cells => cells.map(c => c.textContent)")
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        browser.close()
    assert errors == []
    # two runs' curves and sample grids and the bench plot; the broken PNG is not on the page
    assert len(widths) == 5 and all(w and w > 0 for w in widths)
    last = json.loads((runs[0] / "metrics.jsonl").read_text().splitlines()[-1])
    shown = dict(zip(headers, cells))
    assert float(shown["val_loss"]) == last["val_loss"] and float(shown["fid"]) == last["fid"]
    assert any("broken.png is not a readable image" in p for p in problems)
    assert bench_cells == ["vae", "1.5", "met"]
    assert (ARTIFACTS / "report.png").stat().st_size > 0


def test_tensorboard_event_files_hold_the_logged_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from deepzoo.recipes import get_recipe, train_recipe
    from deepzoo.train.logging import read_metrics

    default = get_recipe("linear-softmax-mnist").default
    train = replace(default.train, steps=20, eval_every=10, log_every=5, progress=False, tensorboard=True)
    run = train_recipe("linear-softmax-mnist", replace(default, train=train), tmp_path / "run").run_dir
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    for record in read_metrics(run / "metrics.jsonl"):
        for key, value in record.items():
            if key in ("step", "split") or not isinstance(value, (int, float)):
                continue
            logged = {e.step: e.value for e in events.Scalars(f"{record['split']}/{key}")}
            assert logged[record["step"]] == pytest.approx(value, rel=1e-6), (record["split"], key)


def test_tensorboard_logs_numeric_terms_as_scalars_and_the_samples_after_evaluations(tmp_path):
    """A string or a bool term is not a scalar; the PNGs under samples/ go in at eval records only,
    a damaged one (being rewritten) skipped; each record is on disk once written (a run watched
    live), not only when the log is closed."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from deepzoo.train.logging import TensorBoardLog

    whole = _png(tmp_path / "samples" / "grid.png").read_bytes()
    (tmp_path / "samples" / "half.png").write_bytes(whole[: len(whole) // 2])
    log = TensorBoardLog(tmp_path)
    log.write({"step": 5, "split": "train", "loss": 0.5, "kind": "adamw", "finite": True})
    log.write({"step": 10, "split": "eval", "accuracy": 0.75})
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["eval/accuracy", "train/loss"]
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(5, 0.5)]
    assert events.Tags()["images"] == ["samples/grid"]
    assert [e.step for e in events.Images("samples/grid")] == [10]
    log.close()


def _png(path: Path, shade: float = 0.5) -> Path:
    save_image_grid(torch.full((1, 1, 4, 4), shade), path)
    return path


def test_a_run_views_every_file_it_can_and_states_each_problem(tmp_path):
    from PIL import Image

    from deepzoo.report import MAX_IMAGES, MAX_TEXT

    run = _fake_run(tmp_path / "runs" / "group", "deep")  # two levels down: still found
    assert find_runs([tmp_path / "runs"]) == [run]
    view = read_run(run)
    assert json.loads(view.config) == {"train": {"steps": 20}}  # the config, not the whole record
    (run / "samples" / "text.txt").write_text("x" * (MAX_TEXT + 10))
    for i in range(MAX_IMAGES):  # with samples.png, one more than is shown
        _png(run / "samples" / f"extra{i:02d}.png", i / MAX_IMAGES)
    Image.new("RGB", (4, 4), "red").save(run / "samples" / "a.gif")
    whole = (run / "samples" / "samples.png").read_bytes()
    (run / "samples" / "b.png").write_bytes(whole[: len(whole) // 2])  # a PNG cut short
    (run / "curves.png").write_bytes(b"not a png")
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"split": "eval", "loss": 1.0}) + "\n")  # no step
    view = read_run(run)
    problems = " ".join(view.problems)
    assert "b.png is not a readable image" in problems and f"more than {MAX_IMAGES} images" in problems
    assert "curves:" in problems and view.curves is not None  # drawn from the records instead
    assert "1 line(s) could not be read" in problems and view.last_eval["fid"] == "40.5"
    assert len(view.pictures) == MAX_IMAGES and view.pictures[0].name == "samples/a.gif"
    assert view.pictures[0].uri.startswith("data:image/gif;base64,")
    assert view.pictures[1].uri.startswith("data:image/png;base64,")
    assert view.texts == [("samples/text.txt", "x" * MAX_TEXT)]


def test_a_run_without_evaluations_or_with_a_config_that_is_not_a_record_says_so(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("[1, 2]")  # valid JSON, not a record
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "split": "train", "loss": 2.0}) + "\n")
    view = read_run(run)
    problems = " ".join(view.problems)
    assert "config.json could not be read" in problems and "holds no evaluation yet" in problems
    assert view.eval_rows == [] and view.curves is not None


def test_runs_are_compared_per_recipe_on_every_metric_of_their_last_evaluations():
    from deepzoo.report import RunView, comparisons

    a = RunView("a", "vae", last_eval={"step": "20", "time": "3", "loss": "1"})
    b = RunView("b", "vae", last_eval={"step": "20", "time": "4", "fid": "40"})
    alone = RunView("c", "gan", last_eval={"step": "5", "fid": "90"})
    assert comparisons([a, alone, b]) == {"vae": (["step", "loss", "fid"], [a, b])}


def test_a_benchmark_directory_gives_its_table_and_plots_and_says_what_is_missing(tmp_path):
    from PIL import Image

    from deepzoo.report import read_bench

    assert "README.md is missing" in " ".join(read_bench(tmp_path).problems)
    (tmp_path / "README.md").write_text(
        "# Results\nratio a | b is prose, not a row\n\n| what | value |\n|---|:--:|\n| speed | 1.5x |\n"
    )
    _png(tmp_path / "speed.png")
    Image.new("RGB", (4, 4), "red").save(tmp_path / "loss.gif")
    (tmp_path / "notes.txt").write_text("not a picture")
    view = read_bench(tmp_path)
    assert view.header == ["what", "value"] and view.rows == [["speed", "1.5x"]] and view.problems == []
    assert [p.name for p in view.pictures] == ["loss.gif", "speed.png"]
