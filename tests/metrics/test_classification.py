import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as reference_confusion_matrix

from deepzoo.metrics.classification import confusion_matrix


def test_confusion_matrix_equals_a_counting_loop():
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (200,), generator=generator)
    predicted = torch.randint(0, 4, (200,), generator=generator)
    expected = torch.zeros(4, 4, dtype=torch.int64)
    for t, p in zip(target.tolist(), predicted.tolist()):
        expected[t, p] += 1
    assert torch.equal(confusion_matrix(target, predicted, 4), expected)


def test_confusion_matrix_is_scikit_learns_and_leaves_out_ignored_targets():
    generator = torch.Generator().manual_seed(1)
    target = torch.randint(0, 5, (6, 7), generator=generator)
    predicted = torch.randint(0, 5, (6, 7), generator=generator)
    target[0, :3] = 255
    ours = confusion_matrix(target, predicted, 5, ignore_index=255)
    kept = target.flatten() != 255
    want = reference_confusion_matrix(target.flatten()[kept], predicted.flatten()[kept], labels=range(5))
    np.testing.assert_array_equal(ours.numpy(), want)
    assert ours.sum() == 6 * 7 - 3


def test_confusion_matrix_refuses_classes_outside_the_range_and_unequal_shapes():
    with pytest.raises(ValueError, match=r"target classes must be in \[0, 3\), got 0..3"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)  # K itself is out
    with pytest.raises(ValueError, match=r"prediction classes must be in \[0, 3\), got -1..1"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([-1, 1]), 3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 1, 2]), 3)


def test_confusion_matrix_keeps_unseen_classes():
    matrix = confusion_matrix(torch.tensor([0, 0]), torch.tensor([0, 1]), 3)
    assert matrix.shape == (3, 3) and matrix.sum() == 2 and matrix[2].sum() == 0


def test_accuracy_is_the_share_of_the_whole_set_predicted_right_across_batches():
    """A 'model' that predicts x's first feature: 7 of 10 right, read in batches of 4 (3 batches)."""
    from deepzoo.data.tensors import TensorData
    from deepzoo.metrics.classification import classification_metrics, predict

    predicted = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    target = predicted.clone()
    target[[1, 4, 8]] = 0
    data = TensorData({"x": torch.nn.functional.one_hot(predicted, 3).float(), "y": target})
    model = torch.nn.Identity()
    assert torch.equal(predict(model, data, batch_size=4), predicted)
    metrics, matrix = classification_metrics(model, data, num_classes=3)
    assert metrics == {"accuracy": 0.7, "error": 1.0 - 0.7}
    assert matrix.sum() == 10
