"""The bookkeeping of the benchmarks (their measurements run in `make test-docs-bench`)."""

import pytest

from deepzoo.bench.evaluation import summarise


def test_eval_batch_summary_names_the_fastest_size_and_the_chosen_sizes_ratio_to_it():
    times = {32: 1.4, 64: 1.1, 128: 1.0, 256: 0.8, 1000: 2.0}
    summary = summarise(times, chosen=128)
    assert summary["best_batch"] == 256
    assert summary["ratio_to_best"] == pytest.approx(1.0 / 0.8)
    assert summary["seconds_per_1000"] == {"32": 1.4, "64": 1.1, "128": 1.0, "256": 0.8, "1000": 2.0}
    assert summarise(times, chosen=256)["ratio_to_best"] == 1.0


def test_regularization_gains_are_medians_of_differences_paired_by_seed():
    from deepzoo.bench.classifiers import paired_gains

    accuracy = {"none": [0.90, 0.95, 0.92], "a": [0.93, 0.94, 0.96], "b": [0.90, 0.95, 0.92]}
    gains = paired_gains(accuracy)
    # differences by seed 0.03, -0.01, 0.04: median 0.03 (the difference of the medians is 0.01)
    assert gains == {"a": pytest.approx(0.03), "b": pytest.approx(0.0)}
    with pytest.raises(ValueError):
        paired_gains({"none": [0.9, 0.9], "a": [0.9]})  # unpaired: a seed missing


def test_the_time_to_a_bar_is_the_first_evaluation_at_or_past_it():
    from deepzoo.bench.timing import first_time_at

    records = [
        {"split": "train", "time": 1.0, "accuracy": 0.99, "loss": 0.1},  # training batches: not scored
        {"split": "eval", "time": 2.0, "accuracy": 0.90, "loss": 0.5},
        {"split": "eval", "time": 3.0, "accuracy": 0.95, "loss": 0.3},
        {"split": "eval", "time": 4.0, "accuracy": 0.97, "loss": 0.3},
    ]
    assert first_time_at(records, "accuracy", 0.95) == 3.0  # reaching the bar exactly counts
    assert first_time_at(records, "accuracy", 0.98) is None
    assert first_time_at(records, "loss", 0.3, higher_is_better=False) == 3.0
    assert first_time_at(records, "loss", 0.2, higher_is_better=False) is None


def test_timings_are_medians_after_a_warm_up_and_the_speedup_is_the_peers_time_over_ours(monkeypatch):
    from deepzoo.bench import timing
    from tests.conftest import FakeClock

    clock, durations = FakeClock(), [100.0, 1.0, 3.0, 2.0]  # the warm-up call is slow (compilation)
    monkeypatch.setattr(timing, "time", clock)

    def call():  # each call takes the next of `durations` on the clock
        clock.now += durations.pop(0)

    assert timing.median_seconds(call, repeats=3) == 2.0 and durations == []
    # rounds alternate ours (1 s a call) and the peer (3 s, then 6 s): speedups 3 and 6, median 4.5
    durations += [1.0] * 3 + [3.0] * 3 + [1.0] * 3 + [6.0] * 3
    assert timing.interleaved_speedup(call, call, repeats=2, rounds=2) == (1.0, 4.5, 4.5)


def test_training_flops_are_counted_per_example():
    """A linear layer d -> k on a batch of B: forward 2 B d k, backward to the weights 2 B d k (the
    input needs no gradient): 4 d k per example for any B."""
    import torch

    from deepzoo.bench.timing import train_flops_per_example

    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(5, 3)

        def loss(self, batch):
            return {"loss": self.layer(batch["x"]).sum()}

    model = Linear()
    for size in (4, 16):
        assert train_flops_per_example(model, {"x": torch.randn(size, 5)}) == 4 * 5 * 3
    assert all(p.grad is None for p in model.parameters())


def test_a_quick_variant_is_fifty_steps_unless_told_otherwise(monkeypatch, tmp_path):
    import deepzoo.recipes
    from deepzoo.bench.timing import train_variant
    from deepzoo.recipes import get_recipe

    seen = []
    monkeypatch.setattr(
        deepzoo.recipes, "train_recipe", lambda name, config, run_dir, evaluate: seen.append(config)
    )
    train_variant("cnn-mnist", tmp_path, quick=True)
    train_variant("cnn-mnist", tmp_path, quick=True, steps=7, lr=0.5)
    train_variant("cnn-mnist", tmp_path, steps=9)
    quick, told, full = (c.train for c in seen)
    assert (quick.steps, quick.eval_every, quick.checkpoint_every) == (50, 50, 50)
    assert (told.steps, told.lr, told.eval_every) == (7, 0.5, 50)
    default = get_recipe("cnn-mnist").default.train
    assert full.steps == 9 and full.eval_every == default.eval_every and default.eval_every != 50


def test_the_table_follows_registration_order_and_only_official_results_reach_the_readme(
    monkeypatch, tmp_path
):
    import json

    import deepzoo.bench as bench
    from deepzoo.bench.registry import Benchmark

    def fake(name):
        return Benchmark(name, "", lambda quick, results: {}, lambda r: [f"| {name} | {r['value']} | - |"])

    monkeypatch.setattr(bench, "BENCHMARKS", {"zeta": fake("zeta"), "alpha": fake("alpha")})
    assert bench.table({"alpha": {"value": 1}, "zeta": {"value": 2}}).splitlines()[2:] == [
        "| zeta | 2 | - |",
        "| alpha | 1 | - |",
    ]
    monkeypatch.chdir(tmp_path)
    page = "intro\n<!-- results:start -->\nold table\n<!-- results:end -->\noutro\n"
    (tmp_path / "README.md").write_text(page)
    for results in (tmp_path / "elsewhere", tmp_path / "benchmarks" / "results"):
        results.mkdir(parents=True)
        (results / "alpha.json").write_text(json.dumps({"value": 3}))
        (results / "unknown.json").write_text(json.dumps({"value": 4}))  # not a benchmark: left out
        markdown = bench.write_tables(results)
        assert markdown.splitlines()[2:] == ["| alpha | 3 | - |"]
        assert (results / "README.md").read_text() == "# Benchmark results\n\n" + markdown
        if results.name == "elsewhere":
            assert (tmp_path / "README.md").read_text() == page
    spliced = f"intro\n<!-- results:start -->\n{markdown}<!-- results:end -->\noutro\n"
    assert (tmp_path / "README.md").read_text() == spliced


def test_cartpole_solve_statistics_count_unsolved_seeds_as_never():
    from deepzoo.bench.rl import SOLVED, _solve_stats

    runs = [
        {"env_steps": 30_000, "train_seconds": 20.0, "mean_return": SOLVED},  # exactly solved
        {"env_steps": 10_000, "train_seconds": 9.0, "mean_return": 500.0},
        {"env_steps": 5_000, "train_seconds": 4.0, "mean_return": SOLVED - 1},  # stopped short
    ]
    stats = _solve_stats(runs)
    assert (stats["solved"], stats["seeds"]) == (2, 3)
    assert stats["median_env_steps"] == 30_000 and stats["worst_env_steps"] == float("inf")
    assert stats["median_train_seconds"] == 20.0


def test_the_nms_benchmarks_boxes_are_proper_boxes_in_clusters():
    import torch

    from deepzoo.bench.detection import clustered_boxes
    from deepzoo.ops.boxes import box_iou

    boxes, scores = clustered_boxes(2000, torch.Generator().manual_seed(0))
    assert boxes.shape == (2000, 4) and scores.shape == (2000,)
    assert (boxes[:, 2:] - boxes[:, :2] >= 0.6 * 16).all()
    overlapping = (box_iou(boxes, boxes) > 0.5).sum(1) - 1  # each box's neighbours above NMS's usual IoU
    assert overlapping.float().median() >= 5
