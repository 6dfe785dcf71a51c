"""The online action detection recipes (recipes/online.py): they train, evaluate online, plot a
timeline, and compare models of about the same size."""

from __future__ import annotations

import math

import pytest
import torch

from deepzoo.data.streams import StreamConfig, stream_primitives
from deepzoo.models.online import online_detector
from deepzoo.recipes import get_recipe
from deepzoo.recipes.online import StreamsData

NAMES = ("lstm-streams", "trn-streams", "idn-streams")


@pytest.mark.parametrize("frames", ["", "digit-"])
def test_the_three_models_have_about_the_same_number_of_parameters(frames):
    names = [f"{arch}-{frames}streams" for arch in ("lstm", "trn", "idn")]
    counts = {
        n: sum(p.numel() for p in online_detector(get_recipe(n).default.model).parameters()) for n in names
    }
    assert max(counts.values()) / min(counts.values()) < 1.1, counts


@pytest.mark.parametrize("name", NAMES)
def test_each_recipe_trains_and_evaluates_online_with_a_timeline(name, tiny_recipe_run):
    from dataclasses import replace

    stream = StreamConfig(actions=3, primitives=4, steps=2, dim=8)
    default = get_recipe(name).default
    model = replace(default.model, input_dim=8, num_classes=4, embed=8, hidden=8, decoder_steps=2, window=4)
    data = StreamsData(
        train_streams=2, train_length=64, chunk=16, test_streams=3, test_length=100, stream=stream
    )
    run_dir, record = tiny_recipe_run(name, model=model, data=data)
    assert 0 <= record["map"] <= 1 and 0 <= record["mcap"] <= 1 and 0 <= record["accuracy"] <= 1
    portions = [record[f"map_{10 * k:02d}_{10 * k + 10:02d}"] for k in range(10)]
    assert all(math.isnan(v) or 0 <= v <= 1 for v in portions)
    assert (run_dir / "samples" / "timeline.png").stat().st_size > 0


def test_the_digit_recipes_read_mnist_frames_through_the_feature_network(tiny_recipe_run):
    from dataclasses import replace

    stream = StreamConfig(actions=3, primitives=4, steps=2)
    default = get_recipe("trn-digit-streams").default
    assert default.model.input_dim == 128 and default.data.frames == "digits"
    model = replace(default.model, num_classes=4, embed=8, hidden=8, decoder_steps=2)
    data = StreamsData(
        train_streams=2, train_length=64, chunk=16, test_streams=2, test_length=80, stream=stream,
        frames="digits", pool=500,
    )  # fmt: skip
    run_dir, record = tiny_recipe_run("trn-digit-streams", model=model, data=data)
    assert 0 <= record["map"] <= 1 and (run_dir / "samples" / "timeline.png").stat().st_size > 0


def test_a_model_that_does_not_fit_the_streams_is_refused():
    from dataclasses import replace

    from deepzoo.recipes.online import streams_splits

    default = get_recipe("lstm-streams").default
    with pytest.raises(ValueError, match="num_classes"):
        streams_splits(replace(default, model=replace(default.model, num_classes=5)), "cpu")


def test_the_bayes_filter_ranks_above_chance_and_below_reading_the_primitives():
    """The ceiling row of the benchmark: the exact posterior from Gaussian frames beats chance
    (AP = a class's share of frames) and loses to the posterior of the primitives read without
    error (more information), on the same layouts."""
    from dataclasses import replace

    from deepzoo.data.streams import synthetic_streams
    from deepzoo.recipes.online import bayes_filter_metrics

    data = StreamsData(test_streams=6, test_length=500)
    target = synthetic_streams(6, 500, data.seed + 1, data.stream).tensors["target"]
    chance = float(target[..., 1:].mean(dim=(0, 1)).mean())
    from_features = bayes_filter_metrics(data)
    from_primitives = bayes_filter_metrics(replace(data, frames="digits"))
    assert chance + 0.3 < from_features["map"] < from_primitives["map"] - 0.03
    # computed on the test split the models are evaluated on
    from deepzoo.data.stream_filter import gaussian_log_likelihoods, stream_posterior
    from deepzoo.recipes.online import frame_metrics, streams_splits

    default = get_recipe("lstm-streams").default
    _, test = streams_splits(replace(default, data=replace(data, train_streams=1)), "cpu")
    posterior, _ = stream_posterior(gaussian_log_likelihoods(test.tensors["x"], data.stream), data.stream)
    assert frame_metrics(posterior, test.tensors["target"]) == from_features


def test_frame_metrics_of_perfect_and_of_constant_scores():
    """Scores equal to the targets give 1 everywhere; a constant score that always says
    background gives each class's AP its share of frames, and accuracy the background's share;
    unscored (all-zero) frames count nowhere."""
    from deepzoo.data.streams import synthetic_streams
    from deepzoo.recipes.online import frame_metrics

    target = synthetic_streams(3, 300, seed=2).tensors["target"]
    target[:, :10] = 0  # unscored
    perfect = frame_metrics(target.clone(), target)
    assert all(v == 1 for v in perfect.values())
    constant = torch.zeros_like(target)
    constant[..., 0] = 1
    scored = target.sum(-1) > 0
    shares = target[scored].mean(0)
    metrics = frame_metrics(constant, target)
    assert metrics["accuracy"] == pytest.approx(float(shares[0]))
    present = shares[1:][shares[1:] > 0]  # a class without positive frames is left out of mAP
    assert metrics["map"] == pytest.approx(float(present.mean()))


def test_digit_stream_frames_are_features_of_images_of_the_shown_digits():
    """Each frame's 128 features, read by the feature network's own classifier, name the digit
    the layout shows: primitive v where one is shown, a clutter digit (primitives..9) elsewhere
    (the network reads >= 97% of MNIST test digits right)."""
    from deepzoo.models.features import mnist_feature_net
    from deepzoo.recipes.online import digit_streams

    stream = StreamConfig(actions=3, primitives=4, steps=2)
    data = StreamsData(stream=stream, frames="digits", pool=2000)
    frames = digit_streams("test", 3, 200, 5, data).tensors["x"]
    read = mnist_feature_net().head(frames).argmax(-1)
    shown = stream_primitives(3, 200, 5, stream)
    right = torch.where(shown >= 0, read == shown, read >= stream.primitives)
    assert right.float().mean() > 0.95, right.float().mean()
