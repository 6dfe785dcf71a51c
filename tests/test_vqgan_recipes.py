"""End-to-end runs of the VQGAN family at toy sizes: both tokenizers on scenes, the prior over
either, its samples from the command line."""

from dataclasses import replace

import pytest
import torch

from deepzoo.cli import main
from deepzoo.models.gpt import GPTConfig
from deepzoo.recipes import SampleEval, get_recipe, load_run, train_recipe
from deepzoo.recipes.detection import ScenesData
from tests.test_generative_recipes import FAST, _eval_record

DATA = ScenesData(train=64, test=40)


def _config(name, **kw):
    default = get_recipe(name).default
    return replace(default, data=DATA, train=replace(default.train, **FAST), **kw)


@pytest.fixture(scope="module")
def tokenizer_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    vqgan = replace(
        get_recipe("vqgan-scenes").default.model,
        channels=(4, 8, 8, 8),
        num_codes=16,
        code_dim=4,
        disc_start=2,
    )
    vqvae = replace(
        get_recipe("vqvae-scenes").default.model, hidden=8, res_hidden=4, num_codes=16, code_dim=4
    )
    return {
        "vqgan-scenes": train_recipe(
            "vqgan-scenes", _config("vqgan-scenes", model=vqgan), root / "g"
        ).run_dir,
        "vqvae-scenes": train_recipe(
            "vqvae-scenes", _config("vqvae-scenes", model=vqvae), root / "v"
        ).run_dir,
    }


@pytest.mark.parametrize("name", ["vqgan-scenes", "vqvae-scenes"])
def test_tokenizers_report_reconstruction_quality_at_an_8x8_grid(tokenizer_runs, name):
    run = tokenizer_runs[name]
    record = _eval_record(run)
    assert {"mse", "perplexity", "usage", "rfid"} <= record.keys() and record["rfid"] > 0
    assert (run / "samples" / "reconstructions.png").exists()
    model = load_run(run).model
    assert model.grid == (8, 8) and model.encode(torch.rand(2, 1, 64, 64)).shape == (2, 8, 8)
    if name == "vqgan-scenes":  # the discriminator started at step 2 of 4
        lines = (run / "metrics.jsonl").read_text()
        assert '"loss_d"' in lines and '"gan_weight"' in lines


@pytest.mark.parametrize("name", ["vqgan-scenes", "vqvae-scenes"])
def test_the_prior_models_either_tokenizer_and_samples_from_the_command_line(tokenizer_runs, name, tmp_path):
    model = replace(
        get_recipe("vqgan-prior-scenes").default.model,
        gpt=GPTConfig(vocab_size=0, block_size=0, layers=1, heads=2, dim=16),
        condition_bank=10,
    )
    config = _config("vqgan-prior-scenes", tokenizer_run=str(tokenizer_runs[name]), model=model)
    config = replace(config, eval=SampleEval(samples=20))
    run = train_recipe("vqgan-prior-scenes", config, tmp_path / "prior").run_dir
    record = _eval_record(run)
    assert record["val_loss"] > 0 and record["fid"] > 0
    prior = load_run(run).model
    assert (
        prior.conditions.shape == (10, 5) and (prior.conditions[:, 0] < 10).all()
    )  # every scene has a digit
    tokenizer = load_run(tokenizer_runs[name]).model
    for a, b in zip(tokenizer.state_dict().values(), prior.tokenizer.state_dict().values()):
        assert torch.equal(a, b)
    out = tmp_path / "sample.png"
    assert main(["sample", str(run), "--n", "6", "--out", str(out), "--device", "cpu"]) in (0, None)
    assert out.exists()


def test_the_prior_refuses_a_run_that_is_not_a_tokenizer(tokenizer_runs, tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer-run"):
        train_recipe("vqgan-prior-scenes", _config("vqgan-prior-scenes"), tmp_path / "none")
