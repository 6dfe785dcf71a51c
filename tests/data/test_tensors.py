"""TensorData: named tensors of one length, batched in order."""

import pytest
import torch

from deepzoo.data.tensors import TensorData


def test_tensors_of_different_lengths_are_refused_and_batches_cover_the_data_in_order():
    with pytest.raises(ValueError, match="share their first dimension"):
        TensorData({"x": torch.zeros(3, 2), "y": torch.zeros(4)})
    data = TensorData({"x": torch.arange(10).view(5, 2), "y": torch.arange(5)})
    batches = list(data.batches(2))
    assert [len(b["y"]) for b in batches] == [2, 2, 1]
    assert torch.equal(torch.cat([b["x"] for b in batches]), data.tensors["x"])
    assert torch.equal(data[torch.tensor([4, 0])]["y"], torch.tensor([4, 0])) and len(data) == 5
