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


def test_digit_streams_draw_train_frames_from_the_pool_and_test_frames_from_the_test_split(monkeypatch):
    """Stand-ins for MNIST (image i of a split: pixel 0 = i mod 100, pixel 1 = i div 100,
    pixel 2 = 1 in the test split; label i mod 10) and for the feature network (the first 128
    pixels, x 255) let the frames say which image they show: train frames come from the first
    `pool` train images, test frames from the test split, with the layouts of seed and seed + 1."""
    from dataclasses import replace

    import deepzoo.data.mnist as mnist
    import deepzoo.metrics.fid as fid
    import deepzoo.models.features as features
    from deepzoo.data.streams import synthetic_streams
    from deepzoo.recipes.online import streams_splits

    def read_mnist(split):
        i = torch.arange(1000)
        images = torch.zeros(1000, 28, 28, dtype=torch.uint8)
        images[:, 0, 0], images[:, 0, 1], images[:, 0, 2] = i % 100, i // 100, int(split == "test")
        return images, i % 10

    monkeypatch.setattr(mnist, "read_mnist", read_mnist)
    monkeypatch.setattr(features, "mnist_feature_net", lambda: None)
    monkeypatch.setattr(fid, "extract_features", lambda net, x: (x.flatten(1)[:, :128] * 255).round())
    stream = StreamConfig(actions=3, primitives=4, steps=2)
    data = StreamsData(
        train_streams=3, train_length=64, chunk=64, test_streams=2, test_length=80, seed=4, stream=stream,
        frames="digits", pool=300,
    )  # fmt: skip
    default = get_recipe("lstm-digit-streams").default
    train, test = streams_splits(
        replace(default, model=replace(default.model, num_classes=4), data=data), "cpu"
    )
    shown = {"train": train.tensors["x"], "test": test.tensors["x"]}
    assert (shown["train"][..., 2] == 0).all() and (shown["test"][..., 2] == 1).all()
    index = shown["train"][..., 0] + 100 * shown["train"][..., 1]
    assert index.max() < 300 and index.max() >= 250  # the pool, and all of it
    assert (shown["test"][..., 0] + 100 * shown["test"][..., 1]).max() >= 300
    assert torch.equal(train.tensors["target"], synthetic_streams(3, 64, 4, stream).tensors["target"])
    assert torch.equal(test.tensors["target"], synthetic_streams(2, 80, 5, stream).tensors["target"])


@pytest.mark.parametrize(("name", "input_dim"), [("lstm-streams", 16), ("idn-digit-streams", 64)])
def test_a_model_reading_other_features_than_the_frames_is_refused(name, input_dim):
    from dataclasses import replace

    from deepzoo.recipes.online import streams_splits

    default = get_recipe(name).default
    with pytest.raises(ValueError, match="input_dim"):
        streams_splits(replace(default, model=replace(default.model, input_dim=input_dim)), "cpu")


def test_the_worst_class_ap_is_over_the_actions_that_occur():
    """Action 1 never happening (its AP undefined, NaN) leaves the worst class AP at 1 when the
    other actions are ranked perfectly; background, ranked at chance here, is no action (per_frame_map
    gives it NaN too)."""
    from deepzoo.data.streams import synthetic_streams
    from deepzoo.recipes.online import frame_metrics

    target = synthetic_streams(3, 300, seed=2).tensors["target"]
    absent = target[..., 1] == 1
    target[absent, 1], target[absent, 0] = 0.0, 1.0
    scores = target.clone()
    scores[..., 0] = 0.5
    metrics = frame_metrics(scores, target)
    assert metrics["worst_class_ap"] == 1.0 and metrics["map"] == 1.0


def test_the_evaluation_scores_every_test_stream_and_plots_the_first_three(monkeypatch, tmp_path):
    """A stand-in model whose probabilities are the softmax of the frame features: the metrics are
    `frame_metrics` over all 5 streams (scored 2 at a time), the timeline the first 400 frames of
    streams 0-2."""
    import deepzoo.viz as viz
    from deepzoo.data.streams import synthetic_streams
    from deepzoo.recipes.online import OnlineRun, _evaluate, frame_metrics

    class Softmax(torch.nn.Module):
        def stream_probabilities(self, x):
            return x.softmax(-1)

    plotted = {}
    monkeypatch.setattr(viz, "plot_timeline", lambda truth, probabilities, path, titles: plotted.update(
        truth=truth, probabilities=probabilities, titles=titles
    ))  # fmt: skip
    data = synthetic_streams(5, 450, seed=3, config=StreamConfig(actions=3, dim=4))
    metrics = _evaluate(Softmax(), data, tmp_path, OnlineRun())
    probabilities = data.tensors["x"].softmax(-1)
    assert metrics == frame_metrics(probabilities, data.tensors["target"])
    assert torch.equal(plotted["probabilities"], probabilities[:3, :400]) and len(plotted["titles"]) == 3
    assert torch.equal(plotted["truth"], data.tensors["target"][:3, :400].argmax(-1))


def test_the_lstm_on_digit_streams_keeps_its_own_schedule_the_others_their_feature_streams_ones():
    from deepzoo.recipes.online import DEFAULTS, DIGIT_LSTM_TRAIN

    assert get_recipe("lstm-digit-streams").default.train == DIGIT_LSTM_TRAIN != DEFAULTS["lstm"][1]
    for arch in ("trn", "idn"):
        assert get_recipe(f"{arch}-digit-streams").default.train == DEFAULTS[arch][1]
