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
    from deepzoo.nn.norms import feature_standardization
    from deepzoo.recipes.contrastive import _dance_split

    train = _dance_split(config, "train").tensors  # fitted on every frame of every training song
    for name in ("motion", "music"):
        mean, std = feature_standardization(train[name])
        torch.testing.assert_close(getattr(model, f"{name}_mean"), mean.float())
        torch.testing.assert_close(getattr(model, f"{name}_std"), std.float())


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
    with pytest.raises(ValueError, match="cannot cut"):
        segments_of(data, 20, songs=3)  # of 2 songs
    whole = segments_of(data, 25, per_song=4)[0]  # segments as long as their slots fill them
    assert torch.equal(whole[:, 0, 0], torch.tensor([0.0, 25, 50, 75, 100, 125, 150, 175]))
    again, other = segments_of(data, 20, per_song=4, seed=3)[0], segments_of(data, 20, per_song=4, seed=4)[0]
    assert torch.equal(again, music) and not torch.equal(other, music)  # the offsets are the seed's


class _TemplateReader(torch.nn.Module):
    """A stand-in CLIP whose image embedding is the one-hot of x (x holds the digit itself).
    Under TEST_TEMPLATES[k], k >= 2, the captions of the first k classes embed as their
    neighbours' (rotated by one), so that template alone scores (10 - k) / 10; k = 0, 1 score 1.
    Under every training template class c embeds as c + 1 (accuracy 0)."""

    def encode_image(self, x):
        return torch.nn.functional.one_hot(x[:, 0].long(), 10).float()

    def class_embeddings(self, templates):
        from deepzoo.models.clip import TEST_TEMPLATES

        rows = []
        for template in templates:
            k = TEST_TEMPLATES.index(template) if template in TEST_TEMPLATES else -1
            order = torch.arange(10)
            if k == -1:
                order = (order + 1) % 10
            elif k >= 2:
                order[:k] = order[:k].roll(1)
            rows.append(torch.eye(10)[order])
        return torch.nn.functional.normalize(torch.stack(rows).mean(0), dim=1)


def test_clip_mnist_evaluation_reads_the_first_examples_under_each_template_set(tmp_path):
    """zero_shot_accuracy ensembles TEST_TEMPLATES, worst_template_accuracy is the lowest single
    test template (here k = 4: 60%), train_templates_accuracy ensembles TRAIN_TEMPLATES (0%); all
    over the first `eval.examples` digits (the 10 after them are labelled wrong on purpose)."""
    from deepzoo.models.clip import TEST_TEMPLATES
    from deepzoo.recipes.contrastive import ClipMnistRun, _evaluate_clip_mnist, zero_shot_accuracy

    digits = torch.arange(40) % 10
    data = TensorData({"x": digits[:, None].float(), "y": torch.cat([digits[:30], (digits[30:] + 5) % 10])})
    model = _TemplateReader()
    scores = _evaluate_clip_mnist(model, data, tmp_path, ClipMnistRun(eval=ZeroShotEval(30)))
    first = TensorData(data[slice(0, 30)])
    assert scores["zero_shot_accuracy"] == pytest.approx(zero_shot_accuracy(model, first, TEST_TEMPLATES))
    assert scores["zero_shot_accuracy"] > 0.5
    assert scores["worst_template_accuracy"] == pytest.approx(0.6)
    assert scores["train_templates_accuracy"] == 0.0


def test_clip_dance_evaluation_scores_music_queries_on_the_segments_it_documents(tmp_path):
    """Across songs: one eval.segment window per song; within songs: eval.per_song windows from each
    of the first len / per_song songs; music_to_motion ranks the motion candidates of each music
    query (the rows of segment_similarity(music, motion)), motion_to_music the columns; the frame
    loss and accuracy are the per-frame loss of the across-song segments."""
    from deepzoo.models.clip import MotionMusicCLIP, MotionMusicConfig
    from deepzoo.nn.contrastive import per_frame_clip_loss
    from deepzoo.recipes.contrastive import ClipDanceRun, _evaluate_clip_dance

    class Recorded(MotionMusicCLIP):
        """Similarity 1 on the diagonal plus 1.5 on music row 0: every music query finds its own
        motion (recall@1 = 1), while motion j > 0 prefers music 0 (recall@1 = 1 / 8)."""

        def segment_similarity(self, music, motion):
            self.calls.append((music, motion))
            similarity = torch.eye(len(music))
            similarity[0] += 1.5
            return similarity

    torch.manual_seed(0)
    model = Recorded(MotionMusicConfig(width=8, layers=2, embed_dim=4, window=10)).eval()
    model.calls = []
    data = TensorData({"motion": torch.randn(8, 60, 75), "music": torch.randn(8, 60, 438)})
    config = ClipDanceRun(eval=DanceEval(segment=24, short_segment=12, per_song=4))
    scores = _evaluate_clip_dance(model, data, tmp_path, config)
    expected = (segments_of(data, 24), segments_of(data, 12, per_song=4, songs=2))
    assert len(model.calls) == 2
    for (music, motion), (want_music, want_motion) in zip(model.calls, expected):
        assert torch.equal(music, want_music) and torch.equal(motion, want_motion)
    for prefix in ("", "same_song_"):
        assert scores[f"{prefix}music_to_motion_recall@1"] == 1.0
        assert scores[f"{prefix}motion_to_music_recall@1"] == 1 / 8
    music, motion = expected[0]
    frames = per_frame_clip_loss(model.encode_motion(motion), model.encode_music(music), model.logit_scale())
    assert scores["frame_loss"] == pytest.approx(frames["loss"].item(), rel=1e-5)
    assert scores["frame_accuracy"] == pytest.approx(frames["accuracy_ab"].item())


def test_with_an_aist_root_each_split_reads_its_own_crossmodal_windows(monkeypatch):
    """--data.root: the train and test splits of AIST++ cut into windows of `seconds` at 60 FPS."""
    import numpy as np

    import deepzoo.data.aist as aist
    from deepzoo.recipes.contrastive import ClipDanceRun, _dance_split

    read = []

    def aist_windows(root, split, frames):
        read.append((root, split, frames))
        return {
            "motion": np.zeros((2, frames, 75), np.float32),
            "music": np.zeros((2, frames, 438), np.float32),
        }

    monkeypatch.setattr(aist, "aist_windows", aist_windows)
    config = ClipDanceRun(data=DanceData(root="/aist", seconds=2.5))
    shapes = [_dance_split(config, split).tensors["motion"].shape for split in ("train", "test")]
    assert read == [("/aist", "train", 150), ("/aist", "test", 150)] and shapes == [(2, 150, 75)] * 2
