"""End-to-end runs of the contrastive recipes at toy sizes: training, evaluation, loading."""

import json
from dataclasses import replace

import pytest
import torch

from deepzoo.data.tensors import TensorData
from deepzoo.models.classifier import CNNConfig
from deepzoo.recipes import get_recipe, load_run, train_recipe
from deepzoo.recipes.contrastive import DanceData, DanceEval, ZeroShotEval, segments_of

FAST = dict(
    steps=4, batch_size=4, eval_every=4, checkpoint_every=4, progress=False, device="cpu", precision="fp32"
)


def _eval_record(run_dir):
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if r["split"] == "eval"][-1]


def test_clip_mnist_logs_zero_shot_accuracy_of_its_saved_weights(tmp_path):
    from deepzoo.data.mnist import load_mnist
    from deepzoo.models.clip import TEST_TEMPLATES
    from deepzoo.recipes.contrastive import zero_shot_accuracy

    default = get_recipe("clip-mnist").default
    model = replace(
        default.model, image=CNNConfig(channels=(8,), feature_dim=16), text_width=16, text_layers=1
    )
    config = replace(default, model=model, eval=ZeroShotEval(500), train=replace(default.train, **FAST))
    run_dir = train_recipe("clip-mnist", config, tmp_path / "run").run_dir
    record = _eval_record(run_dir)
    test = TensorData(load_mnist("test")[slice(0, 500)])
    expected = zero_shot_accuracy(load_run(run_dir).model.eval(), test, TEST_TEMPLATES)
    assert record["zero_shot_accuracy"] == pytest.approx(expected)
    assert 0 <= record["worst_template_accuracy"] <= record["zero_shot_accuracy"] + 0.5


def test_clip_dance_trains_on_a_cached_synthetic_set_and_logs_retrieval(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPZOO_CACHE", str(tmp_path / "cache"))
    default = get_recipe("clip-dance").default
    config = replace(
        default,
        model=replace(default.model, width=16, layers=2, embed_dim=8, window=30),
        data=DanceData(train_songs=4, test_songs=4, seconds=2.0),
        eval=DanceEval(segment=60, short_segment=30, per_song=2),
        train=replace(default.train, **FAST),
    )
    run_dir = train_recipe("clip-dance", config, tmp_path / "run").run_dir
    assert len(list((tmp_path / "cache" / "synthetic-dance").glob("*.npz"))) == 2
    record = _eval_record(run_dir)
    for key in ("music_to_motion_recall@1", "same_song_motion_to_music_median_rank", "frame_accuracy"):
        assert key in record
    assert 0 <= record["music_to_motion_recall@1"] <= 1 and 1 <= record["music_to_motion_median_rank"] <= 4
    model = load_run(run_dir).model  # the standardisation statistics come back with the weights
    assert not torch.equal(model.music_std, torch.ones_like(model.music_std))


def test_segments_are_cut_song_by_song_without_overlap():
    frames = torch.arange(2 * 100, dtype=torch.float32).view(2, 100, 1)
    data = TensorData({"motion": frames.expand(-1, -1, 75), "music": frames.expand(-1, -1, 438)})
    music, motion = segments_of(data, 20, per_song=4, seed=3)
    assert music.shape == (8, 20, 438) and torch.equal(music[..., :75], motion)
    starts = music[:, 0, 0].view(2, 4) - torch.tensor([[0.0], [100.0]])
    assert ((starts >= torch.arange(4) * 25) & (starts <= torch.arange(4) * 25 + 5)).all()
    assert torch.equal(music[:, :, 0] - music[:, :1, 0], torch.arange(20.0).expand(8, -1))
    with pytest.raises(ValueError, match="cannot cut"):
        segments_of(data, 30, per_song=4)
