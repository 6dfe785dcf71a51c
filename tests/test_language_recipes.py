"""The language recipes' data and evaluations (recipes/language.py): tiny-shakespeare windows,
validation cross-entropy per character, the digit-sorting pairs and their exact match."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from deepzoo.data.digits import sorting_pairs
from deepzoo.data.tensors import TensorData
from deepzoo.models.gpt import GPT, GPTConfig
from deepzoo.recipes import get_recipe
from deepzoo.recipes.language import TextWindows, _evaluate_language_model, _evaluate_seq2seq


def test_training_windows_step_by_the_stride_and_validation_windows_do_not_overlap():
    from deepzoo.data.shakespeare import split_tokens
    from deepzoo.recipes.language import _shakespeare_splits

    default = get_recipe("gpt-shakespeare").default
    config = replace(default, data=TextWindows(block_size=32, stride=8))
    train, val = _shakespeare_splits(config, torch.device("cpu"))
    text = split_tokens("train")
    assert train.tensors["tokens"].shape == ((len(text) - 33) // 8 + 1, 33)
    assert torch.equal(train.tensors["tokens"][5], text[40:73])
    held_out = split_tokens("val")
    assert val.tensors["tokens"].shape == ((len(held_out) - 33) // 32 + 1, 33)
    assert torch.equal(val.tensors["tokens"][5], held_out[160:193])  # one shared character a window
    for name in ("gpt-shakespeare", "char-lstm-shakespeare"):  # the summary names the split: val, not test
        assert get_recipe(name).split(get_recipe(name).default) == "val"


def test_a_gpt_never_trains_on_windows_longer_than_its_context():
    from deepzoo.recipes.language import _shakespeare_splits

    default = get_recipe("gpt-shakespeare").default
    assert default.data.block_size <= default.model.block_size
    longer = replace(default, data=replace(default.data, block_size=default.model.block_size + 1))
    with pytest.raises(ValueError, match="exceeds model.block_size"):
        _shakespeare_splits(longer, torch.device("cpu"))


def test_the_validation_loss_is_the_mean_over_every_predicted_character(tmp_path):
    """300 windows (batches of 256 and 44): the cross-entropy of all 300 x 16 next characters at once."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=16, layers=1, heads=2, dim=16)).eval()
    tokens = torch.randint(11, (300, 17))
    tokens[256:] = 3  # the last batch is easy: a per-batch average would weigh it as much as the first
    with torch.no_grad():
        expected = F.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten()).item()
        result = _evaluate_language_model(model, TensorData({"tokens": tokens}), tmp_path)
    assert result["val_loss"] == pytest.approx(expected, rel=1e-5)


class _Sorter(torch.nn.Module):
    """Greedy decoding that answers from the answer key, wrong (its first digit moved) on the
    examples whose index is in `wrong`: exact match (n - len(wrong)) / n."""

    def __init__(self, key: TensorData, wrong: set[int]) -> None:
        super().__init__()
        self.key, self.wrong = key, wrong

    def greedy(self, source: torch.Tensor, max_len: int) -> torch.Tensor:
        index = (source[:, None] == self.key.tensors["source"][None]).all(-1).float().argmax(1)
        answer = self.key.tensors["target"][index, 1 : 1 + max_len].clone()
        for row, i in enumerate(index.tolist()):
            if i in self.wrong:
                answer[row, 0] = (answer[row, 0] + 1) % 10
        return answer


def test_exact_match_counts_whole_sequences_right_over_every_batch():
    key = sorting_pairs(1200, seed=5)  # batches of 500, 500, 200
    wrong = {i for i in range(1200) if i % 3 == 0 or i >= 1100}
    model = _Sorter(key, wrong)
    sources = [tuple(row.tolist()) for row in key.tensors["source"]]
    first = {}
    for i, source in enumerate(sources):
        first.setdefault(source, i)  # a repeated source gets the answer of its first occurrence
    expected = sum(first[source] not in wrong for source in sources) / 1200
    assert 0.5 < expected < 0.7
    assert _evaluate_seq2seq(model, key, None)["exact_match"] == pytest.approx(expected)


def test_the_sorting_recipe_evaluates_on_pairs_drawn_apart_from_its_training_pairs():
    """50,000 training pairs, 2,000 of another seed; short sequences repeat by chance (4 digits
    have 10^4 forms, about 5,600 of the training pairs are 4 long), so the test checks that the
    evaluation pairs are not the training set's first ones and that few repeat it (5% do)."""
    from deepzoo.recipes.language import _sorting_splits

    train, test = _sorting_splits(get_recipe("sort-digits").default, torch.device("cpu"))
    assert (len(train), len(test)) == (50_000, 2_000)
    seen = {tuple(row.tolist()) for row in train.tensors["source"]}
    repeated = sum(tuple(row.tolist()) in seen for row in test.tensors["source"]) / len(test)
    assert repeated < 0.15, repeated
