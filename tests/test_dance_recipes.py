"""End-to-end run of the music-to-dance recipes at toy sizes."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from deepzoo.cli import main
from deepzoo.data.synthetic_dance import make_song, write_wav
from deepzoo.recipes import get_recipe, load_run, train_recipe
from deepzoo.recipes.contrastive import DanceData
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
    assert not torch.equal(loaded.std, torch.ones(75))  # the normalization was fitted and saved


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
    assert not torch.equal(gpt.music_std, torch.ones(438))  # the music normalization was fitted and saved
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
