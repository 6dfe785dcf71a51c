"""The music-to-dance recipes: end-to-end runs at toy sizes, and their evaluations and rollout
windows on stand-in models whose right answers are known."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from deepzoo.cli import main
from deepzoo.data.synthetic_dance import make_song, write_wav
from deepzoo.data.tensors import TensorData
from deepzoo.nn.norms import feature_standardization
from deepzoo.recipes import get_recipe, load_run, train_recipe
from deepzoo.recipes.contrastive import DanceData, _dance_split
from deepzoo.recipes.dance import _build_dance_ac
from tests.test_generative_recipes import FAST, _eval_record


def test_dance_vqvae_reports_reconstruction_and_dance_metrics(tmp_path):
    default = get_recipe("dance-vqvae").default
    model = replace(default.model, hidden=16, num_codes=16, code_dim=8)
    config = replace(
        default,
        model=model,
        data=DanceData(train_songs=8, test_songs=4, seconds=2.0),
        train=replace(default.train, **(FAST | {"batch_size": 4})),
    )
    run = train_recipe("dance-vqvae", config, tmp_path / "vq").run_dir
    record = _eval_record(run)
    assert {
        "mae",
        "mpjpe",
        "perplexity",
        "usage",
        "fid_k",
        "fid_g",
        "bas",
        "bas_ground_truth",
    } <= record.keys()
    assert record["mpjpe"] > 0 and 0 <= record["bas"] <= 1
    assert record["bas_ground_truth"] > 0.5  # the synthetic dances are on the beat by construction
    loaded = load_run(run).model
    motion = torch.zeros(1, 120, 75)
    assert loaded.encode(motion).shape == (1, 2, 15)
    train = _dance_split(config, "train").tensors  # the normalization: of every training frame, saved
    torch.testing.assert_close(
        (loaded.mean, loaded.std), feature_standardization(train["motion"]), check_dtype=False
    )


def test_dance_gpt_generates_dances_for_held_out_music(tmp_path, capsys):
    from deepzoo.models.gpt import GPTConfig

    data = DanceData(train_songs=8, test_songs=4, seconds=2.0)
    train = {**FAST, "batch_size": 4}
    vq_default = get_recipe("dance-vqvae").default
    vq_config = replace(
        vq_default,
        model=replace(vq_default.model, hidden=16, num_codes=16, code_dim=8),
        data=data,
        train=replace(vq_default.train, **train),
    )
    vq_run = train_recipe("dance-vqvae", vq_config, tmp_path / "vq").run_dir
    default = get_recipe("dance-gpt").default
    model = replace(
        default.model, gpt=GPTConfig(vocab_size=0, block_size=31, layers=1, heads=2, dim=16), window_steps=8
    )
    config = replace(
        default, vqvae_run=str(vq_run), model=model, data=data, train=replace(default.train, **train)
    )
    run = train_recipe("dance-gpt", config, tmp_path / "gpt").run_dir
    record = _eval_record(run)
    assert {"val_loss", "fid_k", "fid_g", "diversity_k", "bas", "bas_ground_truth"} <= record.keys()
    assert 0 < record["val_loss"] < 2 * math.log(16) and 0 <= record["bas"] <= 1
    gpt = load_run(run).model
    music = _dance_split(config, "train").tensors["music"]  # of every training frame, saved
    torch.testing.assert_close(
        (gpt.music_mean, gpt.music_std), feature_standardization(music), check_dtype=False
    )
    vq = load_run(vq_run).model
    for a, b in zip(vq.state_dict().values(), gpt.vqvae.state_dict().values()):
        assert torch.equal(a, b)
    assert (run / "samples" / "dances.gif").exists()
    assert np.load(run / "samples" / "dances.npy").shape == (4, 120, 75)

    # dances from the command line: for test songs, and for a user's wav file
    out = tmp_path / "dance.png"
    assert main(["sample", str(run), "--n", "2", "--out", str(out), "--device", "cpu"]) in (0, None)
    assert np.load(out.with_suffix(".npy")).shape == (2, 120, 75) and out.with_suffix(".gif").exists()
    song = make_song(seed=3, genre=2, seconds=1.5)
    write_wav(tmp_path / "song.wav", song.audio)
    wav_out = tmp_path / "wav-dance.png"
    argv = ["sample", str(run), "--wav", str(tmp_path / "song.wav"), "--out", str(wav_out), "--device", "cpu"]
    assert main(argv) in (0, None)
    assert np.load(wav_out.with_suffix(".npy")).shape == (1, 88, 75)  # 1.5 s = 90 frames: 11 codes of 8
    with pytest.raises(SystemExit) as refused:
        main(["sample", str(run), "--wav", str(tmp_path / "no-song.wav"), "--out", str(wav_out)])
    assert refused.value.code == 2 and "no-song.wav: no such file" in capsys.readouterr().err

    # stage 3: the actor-critic fine-tunes the GPT on windows of the training songs; the VQ-VAE stays frozen
    ac_default = get_recipe("dance-ac").default
    ac_config = replace(
        ac_default, gpt_run=str(run), window_steps=8, data=data, train=replace(ac_default.train, **train)
    )
    with pytest.raises(ValueError, match="exceed the GPT's context"):  # 16 steps of 2 codes > 31 tokens
        _build_dance_ac(replace(ac_config, window_steps=16))
    ac_run = train_recipe("dance-ac", ac_config, tmp_path / "ac").run_dir
    record = _eval_record(ac_run)
    assert {"val_loss", "fid_k", "bas", "reward", "kl"} <= record.keys()
    assert 0 <= record["reward"] <= 1 and 0 <= record["bas"] <= 1
    tuned = load_run(ac_run).model
    for a, b in zip(vq.state_dict().values(), tuned.reward.vqvae.state_dict().values()):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(tuned.policy.parameters(), tuned.reference.parameters()))
    ac_out = tmp_path / "ac-dance.png"
    assert main(["sample", str(ac_run), "--n", "1", "--out", str(ac_out), "--device", "cpu"]) in (0, None)
    assert np.load(ac_out.with_suffix(".npy")).shape == (1, 120, 75)


def _motion(n, frames, seed):
    """n random dances (n, frames, 75): a drifting root and joint rotations that wander."""
    generator = torch.Generator().manual_seed(seed)
    return (0.05 * torch.randn(n, frames, 75, generator=generator)).cumsum(1)


def test_dance_quality_compares_the_dances_features_with_the_ground_truths():
    """FID_k and FID_g of the dances' features against the truth's, the diversity of the dances'
    standardized by the truth's statistics, and the mean BAS of the dances against their beats;
    a ground truth compared with itself has FID 0."""
    from deepzoo.data.skeleton import forward_kinematics
    from deepzoo.metrics.dance import diversity, feature_fid, geometric_features, kinetic_features
    from deepzoo.metrics.retrieval import dance_beat_align_score
    from deepzoo.recipes.dance import dance_quality

    truth, dances = _motion(8, 64, 0), 1.5 * _motion(6, 64, 1)
    beats = torch.rand(6, 64, generator=torch.Generator().manual_seed(2)) < 0.1
    quality = dance_quality(dances, truth, beats)
    ours, theirs = forward_kinematics(dances), forward_kinematics(truth)
    for name, features in (("k", kinetic_features), ("g", geometric_features)):
        a, b = torch.stack([features(j) for j in ours]), torch.stack([features(j) for j in theirs])
        assert quality[f"fid_{name}"] == pytest.approx(feature_fid(a, b), rel=1e-4)
        assert quality[f"diversity_{name}"] == pytest.approx(diversity(a, b), rel=1e-4)
        assert dance_quality(truth, truth, beats)[f"fid_{name}"] == pytest.approx(0, abs=1e-6)
    bas = [dance_beat_align_score(j, b) for j, b in zip(ours, beats)]
    assert quality["bas"] == pytest.approx(sum(bas) / len(bas)) and max(bas) > min(bas)


class _Tokenizer(torch.nn.Module):
    """A stand-in dance VQ-VAE that knows the test dances: part 0's codes name the dance (all its
    steps), part 1's are 0 but for one step of dance 0 (code 1, used once); it decodes 0.9 x the dance."""

    parts, num_codes = 2, 64

    def __init__(self, motion):
        super().__init__()
        self.motion = motion

    def encode(self, motion):
        index = (motion[:, None] == self.motion[None]).flatten(2).all(-1).float().argmax(1)
        codes = torch.zeros(len(motion), 2, motion.shape[1] // 8, dtype=torch.long)
        codes[:, 0] = index[:, None]
        codes[:, 1, 0] = (index == 0).long()
        return codes

    def decode(self, codes):
        return 0.9 * self.motion[codes[:, 0, 0]]


def test_the_vqvae_evaluation_scores_the_reconstructions_of_every_test_dance(tmp_path):
    """60 dances (batches of 50 and 10): mean absolute error, joint position error (metres),
    perplexity and usage averaged over the two parts, FID and BAS of the reconstructions, BAS of
    the ground truth."""
    from deepzoo.data.skeleton import forward_kinematics
    from deepzoo.data.tensors import TensorData
    from deepzoo.nn.quantize import perplexity
    from deepzoo.recipes.dance import DanceVQVAERun, _evaluate_dance_vqvae, dance_quality

    motion = _motion(60, 64, 3)
    beats = torch.rand(60, 64, generator=torch.Generator().manual_seed(4)) < 0.1
    model = _Tokenizer(motion)
    record = _evaluate_dance_vqvae(
        model, TensorData({"motion": motion, "beats": beats}), tmp_path, DanceVQVAERun()
    )
    recon = 0.9 * motion
    assert record["mae"] == pytest.approx(0.1 * motion.abs().mean().item(), rel=1e-5)
    joints = (forward_kinematics(recon) - forward_kinematics(motion)).norm(dim=-1).mean()
    assert record["mpjpe"] == pytest.approx(joints.item(), rel=1e-5)
    part1 = torch.zeros(60 * 8, dtype=torch.long)
    part1[0] = 1
    codes = [torch.arange(60).repeat_interleave(8), part1]
    assert record["perplexity"] == pytest.approx(sum(perplexity(c, 64).item() for c in codes) / 2, rel=1e-5)
    assert record["usage"] == pytest.approx((60 / 64 + 2 / 64) / 2)
    quality, truth = dance_quality(recon, motion, beats), dance_quality(motion, motion, beats)
    assert record["fid_k"] == pytest.approx(quality["fid_k"]) and record["fid_g"] == pytest.approx(
        quality["fid_g"]
    )
    assert record["bas"] == pytest.approx(quality["bas"]) and record["bas_ground_truth"] == pytest.approx(
        truth["bas"]
    )
    assert record["bas"] != pytest.approx(record["bas_ground_truth"])


class _DanceGPT(torch.nn.Module):
    """A stand-in dance GPT: its loss is the batch's mean music feature 0, its dances 56 frames
    (7 code steps of 8) of wandering noise from the generator, scaled by `scale`."""

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = scale

    def loss(self, batch):
        return {"loss": batch["music"][..., 0].mean()}

    def generate(self, music, generator):
        return self.scale * 0.05 * torch.randn(len(music), 56, 75, generator=generator).cumsum(1)


def _songs(n=60):
    generator = torch.Generator().manual_seed(5)
    music = torch.randn(n, 64, 438, generator=generator) + torch.arange(n)[:, None, None] / n
    beats = torch.rand(n, 64, generator=generator) < 0.1
    return TensorData({"music": music, "beats": beats, "motion": _motion(n, 64, 6)})


def test_dances_for_music_score_seeded_dances_of_every_test_song(tmp_path):
    """60 songs (batches of 50 and 10): the test loss over all songs, then dances drawn from one
    generator seeded 0 across the batches, scored against the test dances with the beats of their
    frames; the first four saved."""
    from deepzoo.recipes.dance import dance_quality, dances_for_music

    data = _songs()
    record = dances_for_music(_DanceGPT(), data, tmp_path)
    generator = torch.Generator().manual_seed(0)
    dances = torch.cat([_DanceGPT().generate(data.tensors["music"][i : i + 50], generator) for i in (0, 50)])
    motion, beats = data.tensors["motion"], data.tensors["beats"]
    truth = dance_quality(motion, motion, beats)
    expected = (
        {"val_loss": data.tensors["music"][..., 0].mean().item()}
        | dance_quality(dances, motion, beats[:, :56])
        | {"bas_ground_truth": truth["bas"], "diversity_k_ground_truth": truth["diversity_k"]}
    )
    assert record == pytest.approx(expected, rel=1e-5)
    assert np.allclose(np.load(tmp_path / "samples" / "dances.npy"), dances[:4].numpy())


class _DanceAC(torch.nn.Module):
    """A stand-in fine-tuned dance GPT: the policy dances twice as wide as the reference; a
    rollout's reward is its music's mean feature 0 and its KL twice that."""

    def __init__(self):
        super().__init__()
        self.policy, self.reference, self.seeds = _DanceGPT(2.0), _DanceGPT(), []

    def rollout(self, batch):
        self.seeds.append(torch.initial_seed())
        return {"music": batch["music"]}, None

    def terms(self, context, actions):
        reward = context["music"][..., 0].mean()
        return {"reward": reward, "kl": 2 * reward}


def test_the_dance_ac_evaluation_adds_the_mean_reward_and_kl_of_seeded_rollouts(tmp_path):
    from deepzoo.recipes.dance import DanceACRun, _evaluate_dance_ac, dances_for_music

    data, model = _songs(), _DanceAC()
    zero = torch.manual_seed(0).initial_seed()  # what seed 0 is under the suite's seed offset
    torch.manual_seed(123)
    record = _evaluate_dance_ac(model, data, tmp_path, DanceACRun())
    reward = data.tensors["music"][..., 0].mean().item()
    expected = dances_for_music(_DanceGPT(2.0), data, tmp_path) | {"reward": reward, "kl": 2 * reward}
    assert record == pytest.approx(expected, rel=1e-5) and model.seeds == [zero, zero]


def test_the_rollout_windows_start_on_code_steps_anywhere_in_the_song(monkeypatch):
    """Windows of window_steps code steps (8 frames each) of music and beats, one offset a batch,
    every whole-step offset possible; a window as long as the GPT's context is allowed, a longer
    one or a song shorter than a window refused."""
    from types import SimpleNamespace

    import deepzoo.recipes.dance as dance

    class Policy(torch.nn.Module):
        parts, feature_dim = 2, 8
        gpt = SimpleNamespace(config=SimpleNamespace(block_size=8))

        def __init__(self):
            super().__init__()
            self.vqvae = torch.nn.Module()
            self.vqvae.frames_per_code, self.vqvae.parts = 8, 2

    monkeypatch.setattr(dance, "load_parent", lambda *args: SimpleNamespace(model=Policy()))
    model = dance._build_dance_ac(dance.DanceACRun(gpt_run="run", window_steps=4))  # 8 tokens: allowed
    with pytest.raises(ValueError, match="exceed the GPT's context"):
        dance._build_dance_ac(dance.DanceACRun(gpt_run="run", window_steps=5))
    frames = torch.arange(64.0)
    batch = {
        "music": frames.expand(3, 64)[..., None].expand(-1, -1, 438),
        "beats": frames.expand(3, 64) % 5 == 0,
    }
    torch.manual_seed(0)
    starts = set()
    for _ in range(100):
        context = model.contexts(batch, torch.device("cpu"))
        first = int(context["music"][0, 0, 0])
        assert torch.equal(context["music"][..., 0], (first + torch.arange(32.0)).expand(3, -1))
        assert torch.equal(context["beats"], batch["beats"][:, first : first + 32])
        starts.add(first)
    assert starts == {0, 8, 16, 24, 32}
    for short in (24, 31):
        with pytest.raises(ValueError, match="shorter than a window of 32"):
            model.contexts({k: v[:, :short] for k, v in batch.items()}, torch.device("cpu"))
    exact = model.contexts({k: v[:, :32] for k, v in batch.items()}, torch.device("cpu"))  # one window
    assert torch.equal(exact["beats"], batch["beats"][:, :32])
