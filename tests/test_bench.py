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
