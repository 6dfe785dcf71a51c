import torch

from deepzoo.metrics.classification import confusion_matrix


def test_confusion_matrix_equals_a_counting_loop():
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (200,), generator=generator)
    predicted = torch.randint(0, 4, (200,), generator=generator)
    expected = torch.zeros(4, 4, dtype=torch.int64)
    for t, p in zip(target.tolist(), predicted.tolist()):
        expected[t, p] += 1
    assert torch.equal(confusion_matrix(target, predicted, 4), expected)


def test_confusion_matrix_keeps_unseen_classes():
    matrix = confusion_matrix(torch.tensor([0, 0]), torch.tensor([0, 1]), 3)
    assert matrix.shape == (3, 3) and matrix.sum() == 2 and matrix[2].sum() == 0
