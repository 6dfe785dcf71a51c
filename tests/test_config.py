import json
import math

import pytest

from deepzoo.config import from_dict, to_dict
from deepzoo.recipes import RECIPES


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_config_survives_json(name):
    config = RECIPES[name].default
    assert from_dict(type(config), json.loads(json.dumps(to_dict(config)))) == config


def test_a_groups_optional_tuples_survive_json_as_tuples():
    """JSON turns tuples into lists; an optional tuple (`Betas | None`) must come back a tuple, as
    its range check and equality read it."""
    from deepzoo.train import TrainConfig

    config = TrainConfig(schedule="step").with_group("d", betas=(0.5, 0.9), lr_milestones=(0.3,), lr=2e-4)
    again = from_dict(TrainConfig, json.loads(json.dumps(to_dict(config))))
    assert again == config and again.optim["d"].betas == (0.5, 0.9)
    assert again.group("d").lr_milestones == (0.3,) and again.group("g").betas == (0.9, 0.999)


def test_unknown_fields_are_rejected():
    config = RECIPES["cnn-mnist"].default
    data = to_dict(config)
    data["train"]["learning_rate"] = 1.0
    with pytest.raises(ValueError, match="learning_rate"):
        from_dict(type(config), data)


def test_a_section_that_is_not_a_dict_is_rejected():
    """A damaged config.json whose `train` section became a number is refused when read, not
    carried into training as TrainConfig's stand-in."""
    config = RECIPES["cnn-mnist"].default
    for section in (5, [1, 2], "adam", None):
        with pytest.raises(TypeError, match="expected a dict for TrainConfig"):
            from_dict(type(config), {**to_dict(config), "train": section})


def test_a_field_added_later_reads_as_the_old_runs_ran_when_their_config_lacks_it():
    import dataclasses

    from deepzoo.config import added_later

    @dataclasses.dataclass(frozen=True)
    class Config:
        width: int = 8
        stages: tuple[int, ...] = added_later((0, -1), absent=(-1,))

    assert Config().stages == (0, -1)  # new configs: the new default
    assert from_dict(Config, {"width": 8}).stages == (-1,)  # saved before the field: the old behaviour
    assert from_dict(Config, {"stages": [2]}) == Config(width=8, stages=(2,))  # saved with it: as saved
    assert from_dict(Config, {"stages": [2]}).width == 8  # a field without `added_later`: its default


def test_a_mask_rcnn_run_saved_before_mask_stages_rebuilds_its_one_stage_head(tmp_path):
    """Runs saved before `mask_stages` existed (2026-12-04) had a head on the last stage only."""
    from dataclasses import replace

    from deepzoo.models.detection import FasterRCNN
    from deepzoo.recipes.runs import read_run_config

    default = RECIPES["mask-rcnn-scenes"].default
    assert default.model.mask_stages == (0, -1)
    record = {"recipe": "mask-rcnn-scenes", "config": to_dict(default)}
    del record["config"]["model"]["mask_stages"]
    (tmp_path / "config.json").write_text(json.dumps(record))
    recipe, config = read_run_config(tmp_path)
    assert config == replace(default, model=replace(default.model, mask_stages=(-1,)))
    shapes = {k: v.shape for k, v in recipe.build(config).state_dict().items()}
    old_head = FasterRCNN(replace(default.model, mask_stages=(-1,)))
    assert shapes == {k: v.shape for k, v in old_head.state_dict().items()}


# ---- ranges: a field's annotation says what it may hold; check_ranges refuses the rest by flag name


def _ranged_fields(config, path=()):
    """(path of field names, Range) of every range-annotated field of a nested config."""
    import dataclasses
    import typing

    from deepzoo.config import Range

    hints = typing.get_type_hints(type(config), include_extras=True)
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            yield from _ranged_fields(value, (*path, field.name))
        for bound in getattr(hints[field.name], "__metadata__", ()):
            if isinstance(bound, Range):
                yield (*path, field.name), bound


def _replaced(config, path, value):
    import dataclasses

    if len(path) == 1:
        return dataclasses.replace(config, **{path[0]: value})
    return dataclasses.replace(config, **{path[0]: _replaced(getattr(config, path[0]), path[1:], value)})


def _outside(bound, current):
    """A value just outside the range (below it, else above it), shaped like the current one."""
    if bound.low is not None:
        bad = bound.low if bound.low_open else bound.low - 1
    else:
        bad = bound.high if bound.high_open else bound.high + 1
    if isinstance(current, tuple):  # an empty tuple (e.g. classes: all) gets one bad element
        return (*current[:-1], type(current[0])(bad) if current else bad)
    return type(current)(bad)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_ranged_field_of_a_recipe_refuses_a_value_outside_its_range(name):
    """The defaults lie inside; a value just outside each field's range is refused, by the
    field's own check or by check_ranges naming its flag; the closed bound itself is admitted."""
    import functools

    from deepzoo.config import check_ranges

    default = RECIPES[name].default
    check_ranges(default)
    get = functools.partial(functools.reduce, getattr)
    for path, bound in _ranged_fields(default):
        current = get(path, default)
        try:
            config = _replaced(default, path, _outside(bound, current))
        except ValueError:
            continue  # the class's own check refused it
        flag = ".".join(path).replace("_", "-")
        with pytest.raises(ValueError, match=rf"^{flag} must be"):
            check_ranges(config)
        if bound.low is not None and not bound.low_open and not isinstance(current, tuple):
            try:
                check_ranges(_replaced(default, path, type(current)(bound.low)))
            except ValueError as error:
                assert not str(error).startswith(flag + " "), error


def test_ranges_read_and_worded():
    import dataclasses
    from typing import Annotated

    from deepzoo.config import Count, Positive, Range, Rate, Sizes, check_ranges

    @dataclasses.dataclass(frozen=True)
    class Inner:
        widths: Sizes = (8, 16)
        rate: Rate = 0.0

    @dataclasses.dataclass(frozen=True)
    class Outer:
        inner: Inner = Inner()
        groups: dict = dataclasses.field(default_factory=lambda: {"g": Inner()})
        size: Count = 1
        scale: Positive = 0.5
        digit: Annotated[int, Range(0, 9)] = 9
        free: int = -5
        maybe: Positive | None = None

    check_ranges(Outer())
    cases = {
        "inner.widths must be each >= 1, got (8, 0)": Outer(inner=Inner(widths=(8, 0))),
        "inner.rate must be in [0, 1), got 1.0": Outer(inner=Inner(rate=1.0)),
        "groups.g.rate must be in [0, 1), got -0.5": Outer(groups={"g": Inner(rate=-0.5)}),
        "size must be >= 1, got 0": Outer(size=0),
        "scale must be > 0, got 0.0": Outer(scale=0.0),
        "digit must be in [0, 9], got 10": Outer(digit=10),
        "maybe must be > 0, got -1.0": Outer(maybe=-1.0),  # inside an Optional; None is not checked
        "scale must be a finite number > 0, got nan": Outer(scale=float("nan")),  # nan fails no comparison
        "scale must be a finite number > 0, got inf": Outer(scale=float("inf")),
        "inner.widths must be each a finite number >= 1, got (8, inf)": Outer(
            inner=Inner(widths=(8, math.inf))
        ),
    }
    for message, config in cases.items():
        with pytest.raises(ValueError) as error:
            check_ranges(config)
        assert str(error.value) == message
    assert str(Range(0, 1, low_open=True)) == "in (0, 1]" and str(Range(2)) == ">= 2"


def test_help_shows_each_ranged_fields_bound_after_its_default(capsys):
    from deepzoo.cli import main

    with pytest.raises(SystemExit):
        main(["train", "dcgan-mnist", "--help"])
    text = " ".join(capsys.readouterr().out.replace("│", " ").split())
    for hint in ("(default: 64; >= 1)", "(default: 0.002; > 0)", "(default: 0.5 0.999; each in [0, 1))"):
        assert hint in text, hint


def test_the_command_line_and_train_recipe_refuse_an_out_of_range_setting(tmp_path, capsys):
    from deepzoo.cli import main
    from deepzoo.recipes import train_recipe

    for flags, message in [
        (["--model.width", "-2"], "model.width must be >= 1, got -2"),
        (["--eval.samples", "1"], "eval.samples must be >= 2, got 1"),
        (["--model.clip", "0"], "model.clip must be > 0, got 0.0"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            main(["train", "wgan-mnist", *flags, "--run-dir", str(tmp_path / "run")])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1
        assert "see `deepzoo train wgan-mnist --help`" in err  # a usage error, told before the run starts
    default = RECIPES["dcgan-mnist"].default
    with pytest.raises(ValueError, match="model.latent must be >= 1, got 0"):
        train_recipe("dcgan-mnist", _replaced(default, ("model", "latent"), 0), run_dir=tmp_path / "api")
    assert not (tmp_path / "run").exists() and not (tmp_path / "api").exists()


def test_a_sections_own_check_is_one_line_naming_the_flag(tmp_path, capsys):
    """A config that checks itself when built (StreamConfig, TrainConfig) fails inside tyro's
    parse: its message is still one line naming the flag, with tyro's wrapped lines joined."""
    from deepzoo.cli import main

    for recipe, flags, message in [
        ("lstm-streams", ["--data.stream.primitives", "1"], ": data.stream.primitives must be >= 2, got 1 ("),
        ("a2c-cartpole", ["--train.seed", "-1"], ": train.seed must be >= 0, got -1 ("),
        (
            "lstm-streams",
            ["--data.stream.min-hold", "5", "--data.stream.max-hold", "2"],
            "grammar_seed=1234)",
        ),
    ]:
        with pytest.raises(SystemExit) as exit_:
            main(["train", recipe, *flags, "--run-dir", str(tmp_path / "run")])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()
