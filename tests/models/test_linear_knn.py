import numpy as np
import pytest
import torch
from sklearn.model_selection import KFold, cross_val_score  # a test dependency (pyproject's dev extra)
from sklearn.neighbors import KNeighborsClassifier

from deepzoo.data import TensorData
from deepzoo.gradcheck import check_gradients
from deepzoo.metrics.classification import classification_metrics
from deepzoo.models.knn import (
    KNN,
    KNNConfig,
    cross_validate,
    fold_bounds,
    nearest_neighbours,
    pairwise_distances,
    vote,
)
from deepzoo.models.linear import (
    LinearClassifier,
    LinearConfig,
    TwoLayerConfig,
    TwoLayerFunction,
    TwoLayerNet,
)
from deepzoo.nn.preprocess import PCA
from deepzoo.train import TrainConfig, Trainer


def test_two_layer_backward_passes_gradcheck():
    generator = torch.Generator().manual_seed(0)
    shapes = [(5, 4), (6, 4), (6,), (3, 6), (3,)]
    inputs = [torch.randn(*s, generator=generator, dtype=torch.float64, requires_grad=True) for s in shapes]
    check_gradients(TwoLayerFunction.apply, inputs)


def test_two_layer_net_equals_the_same_net_through_autograd():
    torch.manual_seed(0)
    net = TwoLayerNet()
    x = torch.rand(8, 1, 28, 28)
    flat = ((x - 0.1307) / 0.3081).flatten(1)
    reference = torch.relu(flat @ net.w1.T + net.b1) @ net.w2.T + net.b2
    torch.testing.assert_close(net(x), reference)
    net(x).square().sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    reference.square().sum().backward()
    for ours, theirs in zip(grads, [p.grad for p in net.parameters()]):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_two_layer_backward_takes_relus_gradient_at_zero_to_be_zero():
    """Where z = x W1^T + b1 is exactly 0 (here zero inputs and zero biases) the hand-written
    backward passes no gradient, as torch.relu's does (its subgradient at 0 is 0)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.zeros(4, 5, dtype=torch.float64, requires_grad=True)
    w1 = torch.randn(6, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    b1 = torch.tensor([0.0, 0.0, 0.0, 1.0, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(3, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    b2 = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    inputs = [x, w1, b1, w2, b2]
    ours = torch.autograd.grad(TwoLayerFunction.apply(*inputs).sum(), inputs)
    reference = torch.autograd.grad((torch.relu(x @ w1.T + b1) @ w2.T + b2).sum(), inputs)
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (ours[2][:3] == 0).all() and (ours[2][3] != 0) and (ours[2][5] != 0)


@pytest.mark.parametrize("kind", ["l1", "l2", "elastic", "none"])
@pytest.mark.parametrize("loss", ["svm", "softmax"])
def test_linear_loss_is_the_written_out_data_loss_plus_the_weighted_penalty(loss, kind):
    """L = 1/N sum_i L_i + lambda R(W): the hinge with margin Delta (here 2) or the
    cross-entropy, written out per example; R on the weights, never the biases."""
    torch.manual_seed(0)
    config = LinearConfig(loss=loss, regularization=kind, reg_strength=0.5, elastic_beta=3.0, margin=2.0)
    model = LinearClassifier(config)
    with torch.no_grad():
        model.weight.normal_(0, 0.05)
        model.bias.normal_(0, 1.0)
    batch = {"x": torch.rand(6, 1, 28, 28), "y": torch.tensor([0, 1, 2, 3, 9, 9])}
    scores = ((batch["x"] - 0.1307) / 0.3081).flatten(1) @ model.weight.T + model.bias
    data = []
    for s, y in zip(scores, batch["y"]):
        if loss == "svm":
            data.append(sum(max(0.0, s[j] - s[y] + 2.0) for j in range(10) if j != y))
        else:
            data.append(-s.log_softmax(0)[y])
    w = model.weight
    penalty = {"l1": w.abs().sum(), "l2": w.square().sum(), "elastic": (3.0 * w.square() + w.abs()).sum()}
    out = model.loss(batch)
    torch.testing.assert_close(out["data_loss"], torch.stack([torch.as_tensor(d) for d in data]).mean())
    torch.testing.assert_close(out["loss"], out["data_loss"] + 0.5 * penalty.get(kind, torch.tensor(0.0)))


def test_two_layer_loss_penalizes_both_weight_matrices_and_starts_near_uniform():
    """L = CE + lambda (||W1||^2 + ||W2||^2), biases unpenalized; W1 He-normal (std sqrt(2 / D)),
    W2 a tenth of He-normal, so the first scores are small (cross-entropy near log 10) but every
    hidden unit already reaches the output (dW1 != 0 at the first step)."""
    torch.manual_seed(0)
    net = TwoLayerNet(TwoLayerConfig(hidden=256, reg_strength=0.25))
    assert net.w1.std().item() == pytest.approx((2 / 784) ** 0.5, rel=0.05)
    assert net.w2.std().item() == pytest.approx(0.1 * (2 / 256) ** 0.5, rel=0.1)
    batch = {"x": torch.rand(16, 1, 28, 28), "y": torch.arange(16) % 10}
    out = net.loss(batch)
    expected = out["data_loss"] + 0.25 * (net.w1.square().sum() + net.w2.square().sum())
    torch.testing.assert_close(out["loss"], expected)
    assert abs(out["data_loss"].item() - 2.3026) < 0.3
    out["data_loss"].backward()
    assert net.w1.grad.abs().max() > 0


@pytest.mark.parametrize("loss", ["svm", "softmax"])
def test_linear_classifiers_learn(tmp_path, mnist_test, loss):
    train, held_out = TensorData(mnist_test[slice(0, 5000)]), TensorData(mnist_test[slice(5000, 7000)])
    cfg = TrainConfig(
        steps=150, batch_size=100, lr=1e-3, progress=False, precision="fp32", device="cpu", eval_every=150
    )
    torch.manual_seed(0)
    result = Trainer(
        LinearClassifier(LinearConfig(loss=loss)),
        train,
        cfg,
        tmp_path,
        evaluate=lambda m, s, d: classification_metrics(m, held_out)[0],
    ).fit()
    assert result.metrics["accuracy"] > 0.8


def _brute_force_knn(train_x, train_y, query, k, distance):
    """One query at a time, Python sorting; ties broken towards the class seen first."""
    predictions = []
    for q in query:
        d = [float(((q - t) ** 2).sum() if distance == "l2" else (q - t).abs().sum()) for t in train_x]
        order = sorted(range(len(d)), key=lambda i: (d[i], i))[:k]
        labels = [int(train_y[i]) for i in order]
        counts = {c: labels.count(c) for c in labels}
        best = max(counts.values())
        predictions.append(next(c for c in labels if counts[c] == best))
    return torch.tensor(predictions)


@pytest.mark.parametrize("distance", ["l2", "l1"])
@pytest.mark.parametrize("k", [1, 4, 5])
def test_knn_equals_brute_force(mnist_test, distance, k):
    x, y = mnist_test.tensors["x"][:300].flatten(1), mnist_test.tensors["y"][:300]
    model = KNN(KNNConfig(k=k, distance=distance, chunk=37)).fit(x[:250], y[:250])
    predicted = model(x[250:]).argmax(1)
    assert torch.equal(predicted, _brute_force_knn(x[:250], y[:250], x[250:], k, distance))


@pytest.mark.parametrize("distance", ["l2", "l1"])
def test_neighbours_are_scikit_learns_and_so_is_the_vote_wherever_one_class_leads(distance):
    """scikit-learn's brute-force KNeighborsClassifier finds the same neighbours in the same order;
    its vote gives a tie to the smallest label, ours to the class whose member is nearest, so the
    predictions are compared where one class has the most votes (all queries at k = 1)."""
    generator = torch.Generator().manual_seed(0)
    x, y = (
        torch.randn(400, 6, generator=generator, dtype=torch.float64),
        torch.randint(0, 4, (400,), generator=generator),
    )
    train, train_y, queries = x[:300], y[:300], x[300:]
    for k in (1, 4, 7):
        reference = KNeighborsClassifier(k, algorithm="brute", p=2 if distance == "l2" else 1)
        reference.fit(train.numpy(), train_y.numpy())
        neighbours = nearest_neighbours(queries, train, k, distance, chunk=37)
        assert torch.equal(neighbours, torch.from_numpy(reference.kneighbors(queries.numpy())[1]))
        shares = torch.from_numpy(reference.predict_proba(queries.numpy()))
        leads = (shares == shares.max(1, keepdim=True).values).sum(1) == 1
        assert leads.float().mean() > (0.99 if k == 1 else 0.5)
        ours = vote(train_y[neighbours], k, 4).argmax(1)
        assert torch.equal(ours[leads], torch.from_numpy(reference.predict(queries.numpy()))[leads])


def test_vectorized_distances_equal_torch_cdist():
    a, b = torch.rand(7, 20), torch.rand(9, 20)
    torch.testing.assert_close(
        pairwise_distances(a, b, "l2"), torch.cdist(a, b).square(), rtol=1e-4, atol=1e-5
    )
    torch.testing.assert_close(pairwise_distances(a, b, "l1"), torch.cdist(a, b, p=1))


@pytest.mark.parametrize("distance", ["l2", "l1"])
def test_float64_rows_are_compared_in_float64(distance):
    """Rows 1 + i 1e-6 (labels alternating) and queries 1e-8 from each: float64 finds each query's
    own row; float32 (spacing 1.2e-7 at 1, and the expanded squared distance's rounding of 1e-7
    against distances of 1e-12) cannot."""
    train = (1 + 1e-6 * torch.arange(40, dtype=torch.float64)).view(40, 1, 1, 1).expand(40, 1, 2, 2)
    labels = torch.arange(40) % 2
    knn = KNN(KNNConfig(k=1, distance=distance, num_classes=2)).fit(train, labels)
    assert knn.train_x.dtype == torch.float64
    assert torch.equal(knn(train + 1e-8).argmax(1), labels)


def test_vote_tie_goes_to_the_class_seen_first():
    neighbours = torch.tensor([[3, 1, 1, 3], [2, 5, 5, 2]])  # nearest first, 2-2 ties
    assert vote(neighbours, 4, 6).argmax(1).tolist() == [3, 2]
    assert vote(torch.tensor([[4, 1, 1]]), 3, 6).argmax(1).tolist() == [1]  # a clear majority wins


def test_cross_validation_uses_contiguous_folds_and_picks_the_best_k():
    """Two far apart clusters with 10% of the labels flipped at random (rho = 0.1). Against the
    noisy labels 1-NN copies a neighbour's noise: accuracy (1 - rho)^2 + rho^2 = 0.82; a 5-NN
    majority is wrong only when 3 of 5 neighbours are flipped (0.86%): accuracy about 0.893.
    Measured for seeds 0-9: 0.80-0.84 and 0.885-0.898, 5-NN ahead by 0.04-0.09."""
    generator = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(200, 2, generator=generator), torch.randn(200, 2, generator=generator) + 20])
    y = torch.cat([torch.zeros(200, dtype=torch.long), torch.ones(200, dtype=torch.long)])
    perm = torch.randperm(400, generator=generator)
    x, y = x[perm], y[perm]
    flip = torch.randperm(400, generator=generator)[:40]
    y[flip] = 1 - y[flip]
    accuracy = cross_validate(x, y, (1, 5), folds=5, distance="l2", chunk=100, num_classes=2)
    assert accuracy[1] == pytest.approx(0.82, abs=0.05) and accuracy[5] == pytest.approx(0.893, abs=0.03)
    assert accuracy[5] > accuracy[1] + 0.02
    model = KNN(KNNConfig(candidates=(1, 5), folds=5)).fit(x, y)
    assert int(model.k) == 5 and model.cv_accuracy == accuracy


def test_cross_validation_averages_unequal_folds_and_a_tie_goes_to_the_smallest_k():
    """103 examples in 5 folds of 20 or 21: the score of k is the mean of the folds' accuracies
    (each fold's 1-NN predictions found by brute force), not the pooled accuracy; when every
    candidate scores the same (here two separated clusters, no label noise) the smallest k wins."""
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(103, 3, generator=generator), torch.randint(0, 3, (103,), generator=generator)
    accuracy = cross_validate(x, y, (1,), folds=5, distance="l1", chunk=16, num_classes=3)
    per_fold = []
    for lo, hi in fold_bounds(103, 5):
        rest = [i for i in range(103) if not lo <= i < hi]
        nearest = [rest[int((x[rest] - x[q]).abs().sum(1).argmin())] for q in range(lo, hi)]
        per_fold.append(sum(int(y[n] == y[q]) for n, q in zip(nearest, range(lo, hi))) / (hi - lo))
    assert accuracy[1] == pytest.approx(sum(per_fold) / 5, abs=1e-6)
    clusters = torch.cat(
        [torch.randn(30, 2, generator=generator), torch.randn(30, 2, generator=generator) + 50]
    )
    labels = torch.cat([torch.zeros(30, dtype=torch.long), torch.ones(30, dtype=torch.long)])
    model = KNN(KNNConfig(candidates=(7, 3, 5), folds=3, num_classes=2)).fit(clusters, labels)
    assert set(model.cv_accuracy.values()) == {1.0} and int(model.k) == 3


@pytest.mark.parametrize(("n", "folds"), [(103, 5), (10, 3), (5000, 5), (7, 7), (29, 4)])
def test_folds_are_the_course_notebooks_array_split_and_scikit_learns_kfold(n, folds):
    """The first n mod folds folds get the extra examples (103 in 5: 21, 21, 21, 20, 20)."""
    bounds = fold_bounds(n, folds)
    assert [list(range(lo, hi)) for lo, hi in bounds] == [
        a.tolist() for a in np.array_split(np.arange(n), folds)
    ]
    kfold = KFold(n_splits=folds).split(np.arange(n))
    assert [list(range(lo, hi)) for lo, hi in bounds] == [held_out.tolist() for _, held_out in kfold]


def test_cross_validation_scores_are_scikit_learns_cross_val_score_over_kfold():
    """Two classes and odd k (no tied votes, so the tie rules cannot differ); 103 rows in 5 folds."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(103, 4, generator=generator, dtype=torch.float64)
    y = (x[:, 0] + 0.8 * torch.randn(103, generator=generator, dtype=torch.float64) > 0).long()
    accuracy = cross_validate(x, y, (1, 3, 5), folds=5, distance="l1", chunk=16, num_classes=2)
    for k in (1, 3, 5):
        reference = KNeighborsClassifier(k, algorithm="brute", p=1)
        scores = cross_val_score(reference, x.numpy(), y.numpy(), cv=KFold(n_splits=5))
        assert accuracy[k] == pytest.approx(scores.mean(), abs=1e-6)  # float32 fold means


def test_folds_refuse_too_few_examples_or_a_single_fold():
    with pytest.raises(ValueError, match="folds"):
        fold_bounds(3, 5)
    with pytest.raises(ValueError, match="2 <= folds"):  # one fold leaves nothing to train on
        fold_bounds(3, 1)


def test_knn_refuses_more_neighbours_than_it_memorizes():
    """k above the training set, or a candidate above what a cross-validation fold trains on,
    is refused when fitting (not a topk error at the first evaluation); the largest k that fits works."""
    x, y = torch.rand(20, 1, 4, 4), torch.arange(20) % 2
    with pytest.raises(ValueError, match="k = 21 neighbours asked of a training set of 20"):
        KNN(KNNConfig(k=21, num_classes=2)).fit(x, y)
    assert KNN(KNNConfig(k=20, num_classes=2)).fit(x, y)(x).shape == (20, 2)
    with pytest.raises(ValueError, match="candidates up to k = 17 need more than the 16 examples"):
        KNN(KNNConfig(k=0, candidates=(1, 17), folds=5, num_classes=2)).fit(x, y)
    assert int(KNN(KNNConfig(k=0, candidates=(1, 16), folds=5, num_classes=2)).fit(x, y).k) in (1, 16)


def test_knn_on_principal_components_is_knn_on_the_projected_rows(mnist_test):
    x, y = mnist_test.tensors["x"][:600], mnist_test.tensors["y"][:600]
    model = KNN(KNNConfig(k=0, pca=20, chunk=64)).fit(x[:500], y[:500])
    pca = PCA(20).fit(x[:500])
    plain = KNN(KNNConfig(k=0, chunk=64)).fit(pca(x[:500]), y[:500])
    assert int(model.k) == int(plain.k) and model.cv_accuracy == plain.cv_accuracy
    assert torch.equal(model(x[500:]), plain(pca(x[500:])))
    assert model.train_x.shape == (500, 20)
