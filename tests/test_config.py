import json

import pytest

from deepzoo.config import from_dict, to_dict
from deepzoo.recipes import RECIPES


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_config_survives_json(name):
    config = RECIPES[name].default
    assert from_dict(type(config), json.loads(json.dumps(to_dict(config)))) == config


def test_unknown_fields_are_rejected():
    config = RECIPES["cnn-mnist"].default
    data = to_dict(config)
    data["train"]["learning_rate"] = 1.0
    with pytest.raises(ValueError, match="learning_rate"):
        from_dict(type(config), data)
