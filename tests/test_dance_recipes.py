"""End-to-end run of the music-to-dance recipes at toy sizes."""

from dataclasses import replace

import torch

from deepzoo.recipes import get_recipe, load_run, train_recipe
from deepzoo.recipes.contrastive import DanceData
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
