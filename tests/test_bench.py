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
