"""Transfer learning between classifier runs, and training on a subset of the digits: the weights a
run starts from, the frozen feature extractor, and the images each split holds."""

import json
import shutil
from dataclasses import replace

import pytest
import torch

from deepzoo.cli import main
from deepzoo.models.classifier import CNNConfig
from deepzoo.recipes import get_recipe, load_run, train_recipe
from deepzoo.recipes.classifiers import Transfer

SMALL = CNNConfig(channels=(4, 8), feature_dim=16)
FAST = dict(
    steps=4, batch_size=32, eval_every=4, checkpoint_every=4, progress=False, device="cpu", precision="fp32"
)


def _config(recipe: str = "cnn-mnist", model: CNNConfig = SMALL, transfer: Transfer = Transfer(), **fields):
    default = get_recipe(recipe).default
    train = replace(default.train, **FAST | fields.pop("train", {}))
    return replace(default, model=model, train=train, transfer=transfer, **fields)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A small CNN trained a few steps on 256 images of the digits 0-4 (it only needs weights that
    differ from a fresh initialization and BatchNorm statistics that differ from the defaults)."""
    run_dir = tmp_path_factory.mktemp("pretrained") / "run"
    train_recipe("cnn-mnist", _config(classes=(0, 1, 2, 3, 4), train_limit=256), run_dir)
    return run_dir


def test_classes_keep_only_those_digits_in_both_splits():
    from deepzoo.data import load_mnist

    recipe, full, test = get_recipe("cnn-mnist"), load_mnist("train"), load_mnist("test")
    config = replace(recipe.default, classes=(6, 2), validation=1000, train_limit=64)
    train, evaluation = recipe.data(config, torch.device("cpu"))
    y = full.tensors["y"]
    first = [i for i in range(59_000) if int(y[i]) in (2, 6)][:64]  # brute force, in order
    assert torch.equal(train.tensors["x"], full.tensors["x"][first])
    held = [i for i in range(59_000, 60_000) if int(y[i]) in (2, 6)]
    assert torch.equal(evaluation.tensors["y"], y[held])
    _, evaluation = recipe.data(replace(recipe.default, classes=(6, 2)), torch.device("cpu"))
    assert len(evaluation) == int(((test.tensors["y"] == 2) | (test.tensors["y"] == 6)).sum())
    with pytest.raises(ValueError, match="exceeds the"):
        recipe.data(replace(recipe.default, classes=(1,), train_limit=10_000), torch.device("cpu"))


def test_a_transfer_starts_from_the_pretrained_weights_with_a_fresh_head(pretrained):
    recipe, source = get_recipe("cnn-mnist"), load_run(pretrained).model.state_dict()
    for new_head in (True, False):
        config = _config(transfer=Transfer(str(pretrained), new_head=new_head))
        torch.manual_seed(config.train.seed)
        model = recipe.build(config)
        fresh = {k: v.clone() for k, v in model.state_dict().items()}
        recipe.initialize(model, config)
        for key, value in model.state_dict().items():
            expected = fresh[key] if new_head and key.startswith("head.") else source[key]
            assert torch.equal(value, expected), key
    assert any(not torch.equal(fresh[k], source[k]) for k in fresh if k.startswith("head."))


def test_a_frozen_feature_extractor_changes_only_the_head(pretrained, tmp_path):
    """transfer.train head: after training, every tensor up to the features (BatchNorm's running
    statistics included) is still the pretrained one; the head moved. With a learning rate of ~0 and
    the pretrained head, the run's evaluation is the pretrained run's, to the last image."""
    source = load_run(pretrained).model.state_dict()
    config = _config(
        transfer=Transfer(str(pretrained), train="head"), classes=(5, 6, 7, 8, 9), train_limit=256
    )
    trained = load_run(train_recipe("cnn-mnist", config, tmp_path / "head").run_dir).model.state_dict()
    for key, value in trained.items():
        assert torch.equal(value, source[key]) != key.startswith("head."), key
    still = _config(
        transfer=Transfer(str(pretrained), new_head=False, train="head"),
        classes=(0, 1, 2, 3, 4),
        train_limit=256,
        train={"lr": 1e-30},  # steps far below a float32 weight's precision: the head stays put
    )
    ran = train_recipe("cnn-mnist", still, tmp_path / "still").metrics
    main(["eval", str(pretrained), "--device", "cpu"])
    assert ran == {k: v for k, v in json.loads((pretrained / "eval.json").read_text()).items() if k in ran}


def test_fine_tuning_trains_every_weight(pretrained, tmp_path):
    source = load_run(pretrained).model.state_dict()
    config = _config(transfer=Transfer(str(pretrained)), classes=(5, 6, 7, 8, 9), train_limit=256)
    trained = load_run(train_recipe("cnn-mnist", config, tmp_path / "all").run_dir).model.state_dict()
    weights = [k for k in trained if k.endswith("weight")]
    assert all(not torch.equal(trained[k], source[k]) for k in weights)


def test_a_transferred_run_resumes_and_loads_without_its_source(pretrained, tmp_path):
    """The pretrained weights are read once, at the first step: the run's checkpoint holds them."""
    source = tmp_path / "source"
    shutil.copytree(pretrained, source)
    config = _config(transfer=Transfer(str(source), train="head"), train={"steps": 8, "checkpoint_every": 4})
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _interrupt_after(4, lambda: train_recipe("cnn-mnist", config, run_dir))
    shutil.rmtree(source)
    from deepzoo.recipes import resume_recipe

    assert resume_recipe(run_dir).step == 8
    assert load_run(run_dir).step == 8


def _interrupt_after(step: int, fn):
    """Run fn, raising KeyboardInterrupt once the trainer has saved the checkpoint of `step`."""
    from deepzoo.train.trainer import Trainer

    save = Trainer._save_checkpoint

    def saving(self):
        save(self)
        if self.step == step:
            raise KeyboardInterrupt

    Trainer._save_checkpoint = saving
    try:
        fn()
    finally:
        Trainer._save_checkpoint = save


def test_a_transfer_from_another_network_is_refused_naming_the_difference(pretrained, tmp_path):
    recipe = get_recipe("cnn-mnist")
    wider = _config(model=replace(SMALL, feature_dim=32), transfer=Transfer(str(pretrained)))
    with pytest.raises(ValueError, match=r"features_head.1.bias is \(16,\) there and \(32,\) here"):
        recipe.initialize(recipe.build(wider), wider)
    deeper = _config(model=replace(SMALL, channels=(4, 8, 8)), transfer=Transfer(str(pretrained)))
    with pytest.raises(ValueError, match="holds another network"):
        recipe.initialize(recipe.build(deeper), deeper)
    shallower = _config(model=replace(SMALL, channels=(4,)), transfer=Transfer(str(pretrained)))
    with pytest.raises(ValueError, match="holds another network"):  # the pretrained one has more tensors
        recipe.initialize(recipe.build(shallower), shallower)
    linear = train_recipe("linear-softmax-mnist", _linear_config(), tmp_path / "linear").run_dir
    config = _config(transfer=Transfer(str(linear)))
    with pytest.raises(ValueError, match="is a 'linear-softmax-mnist' run, not a cnn-mnist or"):
        recipe.initialize(recipe.build(config), config)


def _linear_config():
    default = get_recipe("linear-softmax-mnist").default
    return replace(default, train_limit=64, train=replace(default.train, **FAST))


def test_freezing_a_network_needs_a_pretrained_one(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "cnn-mnist", "--transfer.train", "head"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and "transfer.train head freezes a pretrained network" in err


def test_an_ensemble_of_runs_on_other_digits_is_refused(pretrained, tmp_path, capsys):
    other = train_recipe("cnn-mnist", _config(classes=(5, 6), train_limit=64), tmp_path / "other").run_dir
    with pytest.raises(SystemExit) as info:
        main(["eval", str(pretrained), str(other), "--out", str(tmp_path / "ens"), "--device", "cpu"])
    assert info.value.code == 2 and "must share one evaluation split" in capsys.readouterr().err
    assert json.loads((pretrained / "config.json").read_text())["config"]["classes"] == [0, 1, 2, 3, 4]


def test_a_train_limit_may_take_every_image_left_but_no_more():
    """validation 59,990 leaves 10 training images: train-limit 10 takes them all, 11 is refused."""
    from deepzoo.recipes.classifiers import _limited_splits

    train, evaluation = _limited_splits(_config(validation=59_990, train_limit=10), torch.device("cpu"))
    assert (len(train), len(evaluation)) == (10, 59_990)
    with pytest.raises(ValueError, match="train-limit 11 exceeds the 10 training images"):
        _limited_splits(_config(validation=59_990, train_limit=11), torch.device("cpu"))
