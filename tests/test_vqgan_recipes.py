"""End-to-end runs of the VQGAN family at toy sizes: both tokenizers on scenes, the prior over
either, its samples from the command line."""

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from deepzoo.cli import main
from deepzoo.config import to_dict
from deepzoo.data.scenes import reading_order_labels
from deepzoo.data.tensors import TensorData
from deepzoo.models.gpt import GPTConfig
from deepzoo.recipes import SampleEval, get_recipe, load_run, train_recipe
from deepzoo.recipes.detection import ScenesData, scenes_splits
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
    train_scenes = scenes_splits(config, torch.device("cpu"))[0]
    assert torch.equal(prior.conditions, reading_order_labels(train_scenes.tensors)[:10])
    assert (prior.conditions[:, 0] < 10).all()  # every scene has a digit
    tokenizer = load_run(tokenizer_runs[name]).model
    for a, b in zip(tokenizer.state_dict().values(), prior.tokenizer.state_dict().values()):
        assert torch.equal(a, b)
    out = tmp_path / "sample.png"
    assert main(["sample", str(run), "--n", "6", "--out", str(out), "--device", "cpu"]) in (0, None)
    assert out.exists()


def test_the_prior_refuses_a_run_that_is_not_a_tokenizer(tokenizer_runs, tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer-run"):
        train_recipe("vqgan-prior-scenes", _config("vqgan-prior-scenes"), tmp_path / "none")
    other = tmp_path / "mnist-vqvae"  # a VQ-VAE of 28 x 28 digits, not of scenes
    other.mkdir()
    record = {"recipe": "vqvae-mnist", "config": to_dict(get_recipe("vqvae-mnist").default)}
    (other / "config.json").write_text(json.dumps(record))
    config = replace(_config("vqgan-prior-scenes"), tokenizer_run=str(other))
    with pytest.raises(ValueError, match="is a 'vqvae-mnist' run, not a vqgan-scenes or vqvae-scenes run"):
        train_recipe("vqgan-prior-scenes", config, tmp_path / "prior")


def test_the_vqgan_recipes_train_as_docs_vqgan_says():
    """docs/vqgan.md's recipe table: each optimizer, rate, batch, budget and model size."""
    for name, (lr, batch, steps, betas) in {
        "vqgan-scenes": (1e-3, 16, 3000, (0.5, 0.9)),
        "vqvae-scenes": (2e-3, 32, 20_000, (0.9, 0.999)),
        "vqgan-prior-scenes": (1e-3, 64, 3000, (0.9, 0.999)),
    }.items():
        t = get_recipe(name).default.train
        assert (t.optimizer, t.weight_decay, t.lr, t.batch_size, t.steps, t.betas) == (
            "adamw", 0.0, lr, batch, steps, betas
        ), name  # fmt: skip
        assert (t.schedule, t.warmup_steps, t.horizon, t.max_seconds) == ("linear", 100, "steps", 300.0), name
        assert (t.eval_every, t.checkpoint_every) == (500, 500), name
    vqgan = get_recipe("vqgan-scenes")
    assert vqgan.default.model.disc_start == 400 and vqgan.default.train.optim["d"].lr == 4e-4
    assert vqgan.default.train.diverge_factor == 0.0 and vqgan.metric == "rfid"
    vqvae = get_recipe("vqvae-scenes")
    m = vqvae.default.model
    assert (m.image_size, m.downsamples, m.num_codes, m.code_dim) == (64, 3, 256, 32)
    assert vqvae.metric == "rfid" and vqvae.default.train.diverge_factor > 0
    prior = get_recipe("vqgan-prior-scenes")
    p = prior.default.model
    assert (p.gpt.layers, p.gpt.heads, p.gpt.dim, p.gpt.positions) == (4, 4, 128, "learned")
    assert (p.num_classes, p.condition_length, p.condition_bank) == (11, 5, 1000)
    assert prior.default.train.keep_best == "val_loss:min" and prior.metric == "fid"


def test_the_vqvae_scales_its_loss_by_the_training_scenes_pixel_std():
    """SCENE_STD is the pixel std of the default training scenes (0.1954 over all 10,000); 1,000 of
    them estimate it to within about 0.002."""
    from deepzoo.data.scenes import mnist_scenes
    from deepzoo.recipes.vqgan import SCENE_STD

    d = get_recipe("vqvae-scenes").default.data
    x = mnist_scenes("train", 1000, d.seed, d.scene).tensors["x"]
    assert abs(x.std().item() - SCENE_STD) < 0.005
    assert get_recipe("vqvae-scenes").default.model.data_std == SCENE_STD


def test_a_tokenizer_is_scored_on_all_its_reconstructions_against_all_test_scenes(monkeypatch, tmp_path):
    import deepzoo.recipes.vqgan as recipes

    x = torch.rand(12, 1, 64, 64)
    recons = torch.rand(12, 1, 64, 64)
    calls = []
    monkeypatch.setattr(recipes, "tokenizer_quality", lambda model, data, run_dir: ({"mse": 0.5}, recons))
    monkeypatch.setattr(recipes, "scene_fid", lambda a, b: calls.append((a, b)) or 3.0)
    data = TensorData({"x": x})
    assert get_recipe("vqgan-scenes").evaluate(None, data, tmp_path, None) == {"mse": 0.5, "rfid": 3.0}
    ((a, b),) = calls
    assert torch.equal(a, recons) and torch.equal(b, x)


class _PixelCodes:
    """A stand-in tokenizer: the code of each 8 x 8 block is its top-left pixel, rounded to 0..15."""

    def encode(self, x):
        return (x[:, 0, ::8, ::8] * 15).round().long()


def test_the_prior_reads_train_and_test_scenes_as_codes_with_their_digits_in_reading_order(monkeypatch):
    import deepzoo.recipes.vqgan as recipes

    tokenizer = SimpleNamespace(model=_PixelCodes())
    monkeypatch.setattr(recipes, "_tokenizer", lambda config, device="cpu": tokenizer)
    config = _config("vqgan-prior-scenes")
    train, test = get_recipe("vqgan-prior-scenes").data(config, torch.device("cpu"))
    scenes = scenes_splits(config, torch.device("cpu"))
    for split, scene in zip((train, test), scenes):
        assert torch.equal(split.tensors["codes"], _PixelCodes().encode(scene.tensors["x"]))
        assert torch.equal(split.tensors["y"], reading_order_labels(scene.tensors))
    assert len(train) == DATA.train and len(test) == DATA.test
    assert "x" not in train.tensors and torch.equal(test.tensors["x"], scenes[1].tensors["x"])


class _StandInPrior:
    """A stand-in prior: its loss on a batch is the batch's mean code; it samples constant images."""

    def loss(self, batch):
        return {"loss": batch["codes"].float().mean()}

    def sample(self, n, generator=None):
        return torch.full((n, 1, 64, 64), 0.5)


def test_the_prior_is_scored_by_its_mean_test_loss_and_the_fid_of_the_samples_asked(monkeypatch, tmp_path):
    """val_loss is the mean over every test grid (unequal batches), the FID compares
    `eval.samples` samples with every test scene."""
    import deepzoo.recipes.vqgan as recipes
    from deepzoo.data.tensors import EVAL_BATCH

    n = EVAL_BATCH + 30
    codes = torch.arange(n).view(n, 1, 1).expand(n, 8, 8)
    x = torch.rand(n, 1, 64, 64)
    calls = []
    monkeypatch.setattr(recipes, "scene_fid", lambda a, b: calls.append((a, b)) or 2.0)
    config = replace(_config("vqgan-prior-scenes"), eval=SampleEval(samples=37))
    data = TensorData({"codes": codes, "y": torch.zeros(n, 5, dtype=torch.long), "x": x})
    metrics = get_recipe("vqgan-prior-scenes").evaluate(_StandInPrior(), data, tmp_path, config)
    assert metrics["val_loss"] == pytest.approx((n - 1) / 2) and metrics["fid"] == 2.0
    ((samples, reference),) = calls
    assert samples.shape == (37, 1, 64, 64) and torch.equal(reference, x)


def test_the_prior_refuses_a_condition_length_other_than_the_scenes_digit_count():
    config = _config("vqgan-prior-scenes")
    config = replace(config, model=replace(config.model, condition_length=4))
    with pytest.raises(ValueError, match="condition_length 4 must equal the scenes' max_digits 5"):
        get_recipe("vqgan-prior-scenes").build(config)
