"""End-to-end runs of the generative recipes at toy sizes: training, grids, metrics, loading, sampling."""

import json
import math
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from deepzoo.cli import main
from deepzoo.data.tensors import TensorData
from deepzoo.models.code_prior import CodePriorConfig
from deepzoo.models.gpt import GPTConfig
from deepzoo.recipes import SampleEval, get_recipe, load_run, train_recipe
from deepzoo.recipes.likelihood import LikelihoodEval

FAST = dict(
    steps=4, batch_size=32, eval_every=4, checkpoint_every=4, progress=False, device="cpu", precision="fp32"
)
FEW = SampleEval(samples=30, iwae_k=3, iwae_examples=20)


def _config(name, **kw):
    default = get_recipe(name).default
    return replace(default, train=replace(default.train, **FAST), **kw)


def _eval_record(run_dir):
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if r["split"] == "eval"][-1]


def _assert_logged_quality_is_recomputed(run_dir, n, conditional):
    """The evaluation's classifier-FID (and label accuracy) equal a recomputation from the saved
    weights: the same n samples (seeded generator, as the evaluation draws them) scored against
    the MNIST test split by metrics.fid directly."""
    from deepzoo.data.mnist import load_mnist
    from deepzoo.metrics.fid import sample_quality

    record = _eval_record(run_dir)
    model = load_run(run_dir).model
    with torch.no_grad():
        samples = model.sample(n, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(n) % 10 if conditional else None
    expected = sample_quality(samples, load_mnist("test").tensors["x"], labels)
    assert record["fid"] == pytest.approx(expected["fid"], rel=1e-4)
    if conditional:
        assert record["label_accuracy"] == expected["label_accuracy"]


@pytest.mark.parametrize("name", ["ae-mnist", "vae-mnist", "cvae-mnist"])
def test_autoencoder_recipes_write_grids_and_metrics(name, tmp_path):
    default = get_recipe(name).default
    config = _config(name, eval=FEW, model=replace(default.model, hidden=32))
    result = train_recipe(name, config, tmp_path / name)
    assert (result.run_dir / "samples" / "samples.png").exists()
    assert (result.run_dir / "samples" / "reconstructions.png").exists()
    record = _eval_record(result.run_dir)
    _assert_logged_quality_is_recomputed(result.run_dir, FEW.samples, conditional=name == "cvae-mnist")
    if name != "ae-mnist":
        assert (
            record["nll_iwae3"] <= record["loss"] + 5
        )  # the bound is tighter than one-sample ELBO, up to noise


def test_vqvae_then_its_prior_then_sampling_from_the_command_line(tmp_path):
    small = replace(
        get_recipe("vqvae-mnist").default.model, hidden=16, res_hidden=8, num_codes=16, code_dim=4
    )
    vq_run = train_recipe("vqvae-mnist", _config("vqvae-mnist", model=small), tmp_path / "vq").run_dir
    assert {"mse", "perplexity", "usage"} <= _eval_record(vq_run).keys()
    assert (vq_run / "samples" / "reconstructions.png").exists()

    prior = CodePriorConfig(gpt=GPTConfig(vocab_size=0, block_size=0, layers=1, heads=2, dim=16))
    config = _config("vqvae-prior-mnist", vqvae_run=str(vq_run), model=prior, eval=FEW)
    prior_run = train_recipe("vqvae-prior-mnist", config, tmp_path / "prior").run_dir
    _assert_logged_quality_is_recomputed(prior_run, FEW.samples, conditional=True)
    loaded = load_run(prior_run)
    assert loaded.model.tokenizer.config == small  # the VQ-VAE comes from its run
    vq = load_run(vq_run).model
    for a, b in zip(vq.state_dict().values(), loaded.model.tokenizer.state_dict().values()):
        assert torch.equal(a, b)
    out = tmp_path / "sample.png"
    assert main(["sample", str(prior_run), "--n", "10", "--out", str(out), "--device", "cpu"]) in (0, None)
    assert out.exists()

    # stage 3: the sequence actor-critic fine-tunes the prior's GPT; the reward model stays frozen
    finetune = get_recipe("ac-vqvae-prior-mnist").default
    config = replace(
        finetune, prior_run=str(prior_run), target=7, samples=20, train=replace(finetune.train, **FAST)
    )
    ac_run = train_recipe("ac-vqvae-prior-mnist", config, tmp_path / "ac").run_dir
    record = _eval_record(ac_run)
    assert 0 <= record["reward"] <= 1 and 0 <= record["target_share"] <= 1 and "kl" in record
    assert (ac_run / "samples" / "samples.png").exists()
    tuned = load_run(ac_run).model
    assert tuned.reward.target == 7  # the reward asks for the run's target digit
    for a, b in zip(tuned.reward.vqvae.state_dict().values(), vq.state_dict().values()):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(tuned.policy.parameters(), tuned.reference.parameters()))
    # the prompts take the class tokens (after the codes' ids) in turn; the evaluation's share of
    # the target digit is that of its seeded samples, read by the reward's classifier
    prompts = tuned.contexts({"size": torch.tensor(12)}, torch.device("cpu"))["prompt"]
    assert prompts.view(-1).tolist() == [loaded.model.num_codes + i % 10 for i in range(12)]
    torch.manual_seed(0)
    context, codes = tuned.rollout({"size": torch.tensor(20)})
    with torch.no_grad():
        read = tuned.reward.classifier(tuned.reward.decode(codes)).argmax(-1)
        share = (read == config.target).float().mean().item()
        assert record["target_share"] == pytest.approx(share)
        assert record["reward"] == pytest.approx(tuned.reward(context, codes).mean().item(), abs=1e-6)


def test_prior_without_a_vqvae_run_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "vqvae-prior-mnist", "--train.steps", "1"])
    assert exit_info.value.code == 2
    assert "--vqvae-run must name a trained vqvae-mnist run" in capsys.readouterr().err


TINY_NET = {"channels": (8, 16, 16), "heads": 2}


@pytest.mark.parametrize("name", ["ddpm-mnist", "edm-mnist"])
def test_diffusion_recipes_write_grids_and_sample_quality(name, tmp_path):
    default = get_recipe(name).default
    model = replace(default.model, net=replace(default.model.net, **TINY_NET), steps=2)
    result = train_recipe(name, _config(name, model=model, eval=FEW), tmp_path / name)
    assert (result.run_dir / "samples" / "samples.png").exists()
    _assert_logged_quality_is_recomputed(result.run_dir, FEW.samples, conditional=True)


def test_flow_matching_then_reflow_then_sampling(tmp_path, monkeypatch):
    import deepzoo.recipes.diffusion as diffusion_recipes

    monkeypatch.setattr(diffusion_recipes, "use_bf16", lambda *_: False)  # the pairs in fp32 on any CPU
    default = get_recipe("flow-matching-mnist").default
    model = replace(default.model, net=replace(default.model.net, **TINY_NET), steps=2)
    flow_run = train_recipe("flow-matching-mnist", _config("flow-matching-mnist", model=model, eval=FEW),
                            tmp_path / "flow").run_dir  # fmt: skip
    config = _config("rectified-flow-mnist", flow_run=str(flow_run), pairs=40, teacher_steps=2, eval=FEW)
    reflow_run = train_recipe("rectified-flow-mnist", config, tmp_path / "reflow").run_dir
    pairs = load_file(flow_run / "reflow-40-dpmpp_2m-2.safetensors")  # the couplings are cached
    # ... as images: x = (x_0 + 1) / 2 of the teacher's own sample from that noise, for that label;
    # the student starts from the teacher's weights.
    teacher = load_run(flow_run).model
    x0 = teacher.generate(pairs["noise"][:4], pairs["y"][:4], sampler="dpmpp_2m", steps=2)
    torch.testing.assert_close(pairs["x"][:4], (x0 + 1) / 2, rtol=0, atol=1e-4)
    assert pairs["y"][:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    student = diffusion_recipes._build_reflow(config)
    for name, value in teacher.state_dict().items():
        assert torch.equal(student.state_dict()[name], value), name
    loaded = load_run(reflow_run)
    assert loaded.model.config.net == model.net and loaded.model.config.sampler == "rectified_flow_euler"
    out = tmp_path / "sample.png"
    assert main(["sample", str(reflow_run), "--n", "10", "--out", str(out), "--device", "cpu"]) in (0, None)
    assert out.exists()


@pytest.mark.parametrize(
    "name, clusters",
    [("gan-mnist", 0), ("dcgan-mnist", 0), ("cgan-mnist", 0), ("wgan-mnist", 0), ("wgan-gp-mnist", 0),
     ("scgan-mnist", 7)],
)  # fmt: skip
def test_gan_recipes_write_grids_and_sample_quality_and_sample_from_the_command_line(
    name, clusters, tmp_path
):
    default = get_recipe(name).default
    config = _config(name, model=replace(default.model, width=8, latent=8, clusters=clusters), eval=FEW)
    run_dir = train_recipe(name, config, tmp_path / name).run_dir
    if clusters:  # fitted on the training images before the first step, saved with the weights
        model = load_run(run_dir).model
        saved = load_file(run_dir / "model.safetensors")
        assert torch.equal(saved["cluster_frequencies"], model.cluster_frequencies)
        assert model.cluster_frequencies.sum().item() == pytest.approx(1.0) and model.clusters_fitted
    assert (run_dir / "samples" / "samples.png").exists()
    conditional = name == "cgan-mnist"
    _assert_logged_quality_is_recomputed(run_dir, FEW.samples, conditional=conditional)
    record = _eval_record(run_dir)
    assert 0 <= record["label_entropy"] <= math.log(10) + 1e-9
    assert ("label_accuracy" in record) == conditional
    out = tmp_path / "sample.png"
    assert main(["sample", str(run_dir), "--n", "10", "--out", str(out), "--device", "cpu"]) in (0, None)
    assert out.exists()


FEW_LIKELIHOOD = LikelihoodEval(examples=50, samples=4)
SMALL_LIKELIHOOD = {
    "nice-mnist": dict(depth=2, hidden=16, blocks=1),
    "realnvp-mnist": dict(depth=1, hidden=8, blocks=1),
    "glow-mnist": dict(depth=1, hidden=8),
    "pixelcnn-mnist": dict(hidden=8, layers=1),
    "gated-pixelcnn-mnist": dict(hidden=8, layers=1),
    "pixelrnn-mnist": dict(hidden=8, layers=1),
}


@pytest.mark.parametrize("name", sorted(SMALL_LIKELIHOOD))
def test_likelihood_recipes_log_the_test_likelihood_of_their_saved_weights_and_sample(name, tmp_path):
    """The logged bits/dim (flows) or nats (autoregressive) equal a recomputation from the saved
    weights on the same test images; the grid is written; `deepzoo sample` draws from the run."""
    from deepzoo.data.mnist import load_mnist
    from deepzoo.recipes.common import binarize_once
    from deepzoo.recipes.likelihood import mean_bits_per_dim, mean_nats

    default = get_recipe(name).default
    config = _config(name, model=replace(default.model, **SMALL_LIKELIHOOD[name]), eval=FEW_LIKELIHOOD)
    run_dir = train_recipe(name, config, tmp_path / name).run_dir
    assert (run_dir / "samples" / "samples.png").exists()
    record, model = _eval_record(run_dir), load_run(run_dir).model
    test = TensorData(load_mnist("test")[slice(0, 50)])
    if "pixel" in name:
        assert record["nll"] == pytest.approx(mean_nats(model, binarize_once(test)), rel=1e-6)
        # nats per image (not bits/dim, not per pixel): after 4 steps within twice a fair coin per
        # pixel (784 ln 2 = 543); the bound "coin + 50" failed for seeds 2 and 4 (gated PixelCNN 635)
        assert 100 < record["nll"] < 2 * 28 * 28 * math.log(2)
    else:
        assert record["bpd"] == pytest.approx(mean_bits_per_dim(model, test), rel=1e-6)
        assert 0 < record["bpd"] < 40  # an untrained flow after the logit: about 28
    out = tmp_path / "sample.png"
    assert main(["sample", str(run_dir), "--n", "2", "--out", str(out), "--device", "cpu"]) in (0, None)
    assert out.exists()


def test_likelihoods_are_evaluated_in_fp32_inside_a_bf16_autocast():
    """A run trained in bf16 evaluates under the trainer's bf16 autocast: the reported nats and
    bits/dim must still be the fp32 ones, bit for bit."""
    from deepzoo.models.flows import Flow, FlowConfig
    from deepzoo.models.pixelcnn import PixelCNN, PixelCNNConfig
    from deepzoo.recipes.likelihood import mean_bits_per_dim, mean_nats

    torch.manual_seed(0)
    grey = TensorData({"x": torch.rand(16, 1, 28, 28)})
    binary = TensorData({"x": torch.bernoulli(grey.tensors["x"])})
    pixelcnn = PixelCNN(PixelCNNConfig(hidden=8, layers=1)).eval()
    flow = Flow(FlowConfig(kind="realnvp", depth=1, hidden=8, blocks=1)).eval()
    exact = mean_nats(pixelcnn, binary), mean_bits_per_dim(flow, grey)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (mean_nats(pixelcnn, binary), mean_bits_per_dim(flow, grey)) == exact
        assert -pixelcnn.log_prob(binary.tensors["x"]).mean().item() != exact[0]  # bf16 would differ


def test_likelihoods_average_every_image_of_every_batch():
    """16 images in batches of 5: the gated PixelCNN's nats under each image's own label, and the
    flow's bits/dim with the dequantization noise of one generator seeded 0, drawn batch by batch."""
    from deepzoo.models.flows import Flow, FlowConfig
    from deepzoo.models.pixelcnn import PixelCNN, PixelCNNConfig
    from deepzoo.recipes.likelihood import mean_bits_per_dim, mean_nats

    torch.manual_seed(0)
    x, y = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
    binary = torch.bernoulli(x)
    pixelcnn = PixelCNN(PixelCNNConfig(kind="gated", hidden=8, layers=1, num_classes=10)).eval()
    with torch.no_grad():
        nats = -pixelcnn.log_prob(binary, y).mean().item()
        assert nats != pytest.approx(-pixelcnn.log_prob(binary, (y + 1) % 10).mean().item())
    assert mean_nats(pixelcnn, TensorData({"x": binary, "y": y}), batch_size=5) == pytest.approx(
        nats, rel=1e-5
    )
    flow = Flow(FlowConfig(kind="realnvp", depth=1, hidden=8, blocks=1)).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        bits = sum(flow.nll_bits(x[i : i + 5], generator).sum().item() for i in range(0, 16, 5)) / 16
    assert mean_bits_per_dim(flow, TensorData({"x": x}), batch_size=5) == pytest.approx(bits, rel=1e-5)


def test_the_likelihood_evaluations_score_the_first_examples_and_draw_the_asked_samples(
    monkeypatch, tmp_path
):
    import deepzoo.recipes.likelihood as likelihood

    drawn, scored = [], []
    monkeypatch.setattr(likelihood, "sample_grid", lambda model, run_dir, n: drawn.append(n))
    monkeypatch.setattr(likelihood, "mean_bits_per_dim", lambda model, data: scored.append(data) or 1.25)
    monkeypatch.setattr(likelihood, "mean_nats", lambda model, data: scored.append(data) or 88.0)
    data = TensorData({"x": torch.arange(30.0).view(30, 1, 1, 1)})
    asked = likelihood.LikelihoodEval(examples=12, samples=7)
    assert likelihood._evaluate_flow(None, data, tmp_path, likelihood.FlowRun(eval=asked)) == {"bpd": 1.25}
    assert likelihood._evaluate_pixelcnn(None, data, tmp_path, likelihood.PixelCNNRun(eval=asked)) == {
        "nll": 88.0
    }
    assert drawn == [7, 7] and all(torch.equal(d.tensors["x"], data.tensors["x"][:12]) for d in scored)


def test_the_likelihood_recipes_train_as_their_budget_says():
    """AdamW without weight decay, 100 warm-up steps then linear decay, gradients clipped at norm
    100, four evaluations, stopped at BUDGET_SECONDS (likelihood_train's docstring)."""
    from deepzoo.recipes.likelihood import BUDGET_SECONDS, likelihood_train

    t = likelihood_train(400, 1e-3)
    assert (t.optimizer, t.weight_decay, t.warmup_steps, t.schedule, t.grad_clip) == (
        "adamw",
        0.0,
        100,
        "linear",
        100.0,
    )
    assert (t.steps, t.eval_every, t.max_seconds, t.batch_size) == (400, 100, BUDGET_SECONDS, 64)


def test_the_shared_training_settings_are_what_their_docstrings_say():
    """adamw_linear: AdamW, linear warm-up and decay, a checkpoint every 4 evaluations (other
    settings passed on); sequence_ac_train: AdamW at a constant rate, no weight decay, gradients
    clipped at 1, no divergence check, a checkpoint at each evaluation."""
    from deepzoo.recipes.common import adamw_linear, sequence_ac_train

    lin = adamw_linear(1000, 64, 2e-3, 50, 100, seed=3)
    assert (lin.optimizer, lin.schedule, lin.lr, lin.warmup_steps) == ("adamw", "linear", 2e-3, 50)
    assert (lin.steps, lin.batch_size, lin.eval_every, lin.checkpoint_every) == (1000, 64, 100, 400)
    assert lin.seed == 3 and lin.min_lr_ratio == 0.0  # decays to zero
    ac = sequence_ac_train(300, 64, 1e-4, 50, max_seconds=30.0)
    assert (ac.optimizer, ac.schedule, ac.lr, ac.weight_decay) == ("adamw", "constant", 1e-4, 0.0)
    assert (ac.grad_clip, ac.diverge_factor, ac.max_seconds, ac.log_every) == (1.0, 0.0, 30.0, 10)
    assert (ac.steps, ac.batch_size, ac.eval_every, ac.checkpoint_every) == (300, 64, 50, 50)


def test_mean_terms_weighs_each_batch_by_its_size():
    """7 examples in batches of 3, 3, 1: the mean of the per-batch means would overweight the last."""
    from deepzoo.data.tensors import TensorData
    from deepzoo.recipes.common import mean_terms

    class Terms(torch.nn.Module):
        def loss(self, batch):
            return {"loss": batch["x"].mean(), "square": (batch["x"] ** 2).mean()}

    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 70.0], dtype=torch.float64)
    terms = mean_terms(Terms(), TensorData({"x": x}), batch_size=3)
    assert terms == pytest.approx({"loss": x.mean().item(), "square": (x**2).mean().item()}, rel=1e-12)


def test_predictions_are_one_grid_of_whole_examples_side_by_side(tmp_path):
    """N = 5 examples of k = 2 pictures: rows of k ceil(sqrt(5)) = 6 pictures, 3 examples each."""
    from PIL import Image

    from deepzoo.recipes.common import write_predictions
    from deepzoo.viz import save_image_grid

    pictures = torch.rand(5, 2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    assert write_predictions(pictures, tmp_path / "p.png") == tmp_path / "p.png"
    save_image_grid(pictures.flatten(0, 1), tmp_path / "expected.png", nrow=6)
    written, expected = Image.open(tmp_path / "p.png"), Image.open(tmp_path / "expected.png")
    assert written.size == expected.size and written.tobytes() == expected.tobytes()


def test_dances_are_saved_as_float32_values_and_the_first_ones_drawn_side_by_side(tmp_path, monkeypatch):
    import numpy as np

    from deepzoo import viz
    from deepzoo.data.skeleton import PARENTS, forward_kinematics
    from deepzoo.recipes.common import write_dances

    generator = torch.Generator().manual_seed(0)
    motion = 0.3 * torch.randn(3, 9, 75, generator=generator, dtype=torch.float64)
    beats = torch.rand(3, 9, generator=generator) < 0.3
    drawn = []
    monkeypatch.setattr(viz, "save_gif", lambda frames, path, fps: drawn.append((frames, fps)))
    npy, gif = write_dances(motion, beats, tmp_path / "dances", shown=2)
    assert (npy, gif) == (tmp_path / "dances.npy", tmp_path / "dances.gif")
    saved = np.load(npy)
    assert saved.dtype == np.float32 and np.array_equal(saved, motion.float().numpy())
    joints = forward_kinematics(motion[:2].float())
    expected = torch.cat([viz.skeleton_frames(joints[i], PARENTS, beats=beats[i]) for i in range(2)], dim=3)
    ((frames, fps),) = drawn
    assert fps == 20.0 and torch.equal(frames, expected)  # 60 FPS drawn every 3rd frame


def test_an_evaluations_samples_are_as_many_as_asked_drawn_500_at_a_time(tmp_path):
    """sample_grid draws n samples in chunks of at most 500 from one seeded generator (labels and
    other keywords passed on) and writes the first 100, 10 wide."""
    from PIL import Image

    from deepzoo.recipes.common import sample_grid

    class Counter(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.asked = []

        def sample(self, n, generator, **kw):
            self.asked.append((n, kw))
            return torch.rand(n, 1, 28, 28, generator=generator)

    model = Counter()
    samples = sample_grid(model, tmp_path, 1001, labels="digits")
    chunks = [500, 500, 1]
    assert samples.shape == (1001, 1, 28, 28) and model.asked == [(n, {"labels": "digits"}) for n in chunks]
    from deepzoo.viz import save_image_grid

    save_image_grid(samples[:100], tmp_path / "expected.png", nrow=10)
    written = Image.open(tmp_path / "samples" / "samples.png")
    assert written.tobytes() == Image.open(tmp_path / "expected.png").tobytes()  # the first 100, 10 wide
    again = sample_grid(Counter(), tmp_path, 1001, labels="digits")
    assert torch.equal(samples, again)  # the generator is seeded: every evaluation sees the same draw
    assert sample_grid(Counter(), tmp_path, 7).shape[0] == 7
    width, height = Image.open(tmp_path / "samples" / "samples.png").size
    assert width > height  # 7 samples in one row of a 10-wide grid


@pytest.mark.parametrize(("length", "shown"), [(5, 5), (100, 16)])
def test_an_episodes_picture_shows_evenly_spaced_frames_from_first_to_last(
    tmp_path, monkeypatch, length, shown
):
    """write_samples("episode"): the GIF holds every frame; the PNG beside it n_frames of them (all
    of a shorter episode), evenly spaced, the first and the last included."""
    import deepzoo.viz as viz
    from deepzoo.recipes.common import write_samples

    written = {}
    monkeypatch.setattr(viz, "save_gif", lambda frames, path: written.update(gif=frames))
    monkeypatch.setattr(viz, "save_image_grid", lambda frames, path, nrow: written.update(png=frames))
    frames = torch.arange(length).float().div(length).view(-1, 1, 1, 1).expand(length, 3, 4, 4)
    assert write_samples("episode", None, frames, tmp_path / "play.png", n_frames=16) == tmp_path / "play.gif"
    assert torch.equal(written["gif"], frames)
    index = (written["png"][:, 0, 0, 0] * length).round().long().tolist()
    gaps = {b - a for a, b in zip(index, index[1:])}
    assert len(index) == shown and index[0] == 0 and index[-1] == length - 1
    assert gaps == ({1} if length == shown else {6, 7})  # 99 / 15 = 6.6 frames apart, rounded


@pytest.mark.parametrize("family", ["diffusion", "gan"])
def test_class_conditional_samples_are_scored_against_the_digits_they_were_asked_for(
    family, monkeypatch, tmp_path
):
    """Sample i is drawn as digit i mod 10 (`sample_grid`'s default labels): the quality is
    measured against the evaluation images with those labels."""
    import importlib

    module = importlib.import_module(f"deepzoo.recipes.{family}")
    asked = {}
    monkeypatch.setattr(module, "sample_grid", lambda model, run_dir, n: torch.zeros(n, 1, 28, 28))

    def sample_quality(samples, reference, labels):
        asked.update(n=len(samples), reference=reference, labels=labels)
        return {"fid": 2.0}

    monkeypatch.setattr(module, "sample_quality", sample_quality)
    data = TensorData({"x": torch.rand(12, 1, 28, 28)})
    model = torch.nn.Module()
    model.conditional = True
    run = module.DiffusionRun() if family == "diffusion" else module.GANRun()
    config = replace(run, eval=replace(run.eval, samples=23))
    evaluate = module._evaluate_diffusion if family == "diffusion" else module._evaluate_gan
    assert evaluate(model, data, tmp_path, config) == {"fid": 2.0}
    assert asked["n"] == 23 and torch.equal(asked["labels"], torch.arange(23) % 10)
    assert torch.equal(asked["reference"], data.tensors["x"])


def test_the_reflow_pairs_are_seeded_noise_for_each_digit_in_turn_cached_by_their_settings(
    monkeypatch, tmp_path
):
    """1,100 pairs in chunks of 500, 500, 100: the noise of one generator seeded 0, labels 0-9 in
    turn across the chunks, x = (x_0 + 1) / 2 of the teacher's sampler at its step count; cached
    under a name that holds the count, sampler and steps; evaluated on MNIST test."""
    from types import SimpleNamespace

    import deepzoo.recipes.diffusion as diffusion_recipes

    calls = []

    class Teacher:
        def _denoise(self, x, sigma, y):
            return y.view(-1, 1, 1, 1).float().expand_as(x) / 10

        def sigmas(self, steps):
            return torch.full((steps,), 7.0)

    def reflow_pairs(denoise, noise, sigmas, sampler):
        calls.append((len(sigmas), sampler))
        return None, denoise(noise, sigmas[0])

    monkeypatch.setattr(
        diffusion_recipes, "_teacher", lambda config, device="cpu": SimpleNamespace(model=Teacher())
    )
    monkeypatch.setattr(diffusion_recipes, "reflow_pairs", reflow_pairs)
    monkeypatch.setattr(diffusion_recipes, "load_mnist", lambda split, device: split)
    config = diffusion_recipes.ReflowRun(
        flow_run=str(tmp_path), pairs=1100, teacher_sampler="heun", teacher_steps=3
    )
    train, test = diffusion_recipes._reflow_splits(config, "cpu")
    generator = torch.Generator().manual_seed(0)
    noise = torch.cat([torch.randn(n, 1, 28, 28, generator=generator) for n in (500, 500, 100)])
    labels = torch.arange(1100) % 10
    assert torch.equal(train.tensors["noise"], noise) and torch.equal(train.tensors["y"], labels)
    assert torch.equal(
        train.tensors["x"], (labels.view(-1, 1, 1, 1).float().expand(-1, 1, 28, 28) / 10 + 1) / 2
    )
    assert calls == [(3, "heun")] * 3 and test == "test"
    assert (tmp_path / "reflow-1100-heun-3.safetensors").exists()


def test_the_diffusion_recipes_train_as_docs_diffusion_says():
    """docs/diffusion.md: AdamW 2e-3, batch 128, EMA 0.995, 300 s and at most 1300 steps each;
    reflow on 10,000 pairs of DPM-Solver++(2M) in 8 steps, sampled with 4 Euler steps."""
    names = ("ddpm-mnist", "edm-mnist", "flow-matching-mnist", "rectified-flow-mnist")
    for name in names:
        t = get_recipe(name).default.train
        assert (t.optimizer, t.lr, t.batch_size, t.ema_decay, t.max_seconds, t.steps) == (
            "adamw", 2e-3, 128, 0.995, 300.0, 1300
        ), name  # fmt: skip
    reflow = get_recipe("rectified-flow-mnist").default
    assert (reflow.pairs, reflow.teacher_sampler, reflow.teacher_steps, reflow.model.steps) == (
        10_000,
        "dpmpp_2m",
        8,
        4,
    )


def test_write_samples_refuses_a_kind_it_cannot_write(tmp_path):
    from deepzoo.recipes.common import write_samples

    with pytest.raises(ValueError, match="unknown kind 'grid'"):
        write_samples("grid", None, torch.rand(2, 1, 8, 8), tmp_path / "s.png")
    assert write_samples("images", None, torch.rand(2, 1, 8, 8), tmp_path / "s.png") == tmp_path / "s.png"
    assert not (tmp_path / "s.txt").exists() and (tmp_path / "s.png").exists()
