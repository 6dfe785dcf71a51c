"""PCA and PCA whitening against the closed form (the SVD of the centred training rows) and
scikit-learn's PCA."""

import pytest
import torch
from sklearn.decomposition import PCA as ReferencePCA  # a test dependency (pyproject's dev extra)

from deepzoo.nn.preprocess import PCA


def _rows(n=500, d=12, seed=0):
    """Correlated rows with distinct variances: x = g A + b."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d, d, generator=generator) * torch.linspace(0.2, 3.0, d)[:, None]
    return torch.randn(n, d, generator=generator) @ mixing + torch.randn(d, generator=generator)


def test_pca_keeps_the_top_right_singular_vectors_of_the_centred_rows():
    x = _rows().double()
    pca = PCA(5).fit(x)
    centred = x - x.mean(0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    torch.testing.assert_close(pca.variances.double(), (s[:5] ** 2 / (len(x) - 1)), rtol=1e-4, atol=0)
    # the same directions up to sign (sign fixed: each component's largest entry is positive)
    torch.testing.assert_close(pca.components.double().abs(), vh[:5].T.abs(), rtol=0, atol=1e-4)
    largest = pca.components.abs().argmax(0)
    assert (pca.components[largest, torch.arange(5)] > 0).all()
    # projected training rows: uncorrelated, with those variances, in descending order
    z = pca(x).double()
    torch.testing.assert_close(z.mean(0), torch.zeros(5, dtype=torch.float64), rtol=0, atol=1e-4)
    covariance = z.T @ z / (len(x) - 1)
    torch.testing.assert_close(covariance, torch.diag(pca.variances.double()), rtol=1e-4, atol=1e-3)
    assert (pca.variances[:-1] > pca.variances[1:]).all()


@pytest.mark.parametrize("svd_solver", ["full", "covariance_eigh"])
@pytest.mark.parametrize("whiten", [False, True])
def test_pca_is_scikit_learns(whiten, svd_solver):
    """The same variances (explained_variance_, the N - 1 covariance), components with the same
    signs (scikit-learn >= 1.5 also makes each component's largest-magnitude entry positive) and
    projections of new rows; whitened, both divide by the square root of the variance (eps = 0
    here). In float64 throughout, to float64 rounding of well-separated eigenvalues."""
    x, new_rows = _rows(seed=2).double(), _rows(n=40, seed=3).double()
    ours = PCA(5, whiten=whiten, eps=0.0).fit(x)
    reference = ReferencePCA(5, whiten=whiten, svd_solver=svd_solver).fit(x.numpy())
    assert ours.components.dtype == ours(new_rows).dtype == torch.float64
    variances = torch.from_numpy(reference.explained_variance_)
    torch.testing.assert_close(ours.variances, variances, rtol=1e-10, atol=0)
    torch.testing.assert_close(ours.components, torch.from_numpy(reference.components_).T, rtol=0, atol=1e-10)
    torch.testing.assert_close(ours.mean, torch.from_numpy(reference.mean_), rtol=0, atol=1e-12)
    projected = torch.from_numpy(reference.transform(new_rows.numpy()))
    torch.testing.assert_close(ours(new_rows), projected, rtol=1e-10, atol=1e-9)


def test_pca_of_float32_rows_is_float32_near_the_float64_fit():
    x = _rows(seed=4)
    single, double = PCA(3).fit(x), PCA(3).fit(x.double())
    assert single.components.dtype == single(x).dtype == torch.float32
    torch.testing.assert_close(single.components.double(), double.components, rtol=0, atol=1e-4)


def test_all_components_invert_and_whitening_gives_the_identity_covariance():
    x = _rows(seed=1)
    full = PCA(12).fit(x)
    torch.testing.assert_close(full(x) @ full.components.T + full.mean, x, rtol=0, atol=1e-4)
    white = PCA(6, whiten=True, eps=0.0).fit(x)
    z = white(x).double()
    torch.testing.assert_close(z.T @ z / (len(x) - 1), torch.eye(6, dtype=torch.float64), rtol=0, atol=1e-4)
    images = x.reshape(500, 3, 2, 2)  # any shape is flattened
    torch.testing.assert_close(PCA(4).fit(images)(images), PCA(4).fit(x)(x))


def test_pca_refuses_bad_sizes_and_an_unfitted_call():
    with pytest.raises(ValueError, match="dims >= 1"):
        PCA(0)
    with pytest.raises(ValueError, match="PCA of 13 components"):
        PCA(13).fit(_rows())
    with pytest.raises(ValueError, match="needs >= 2 rows"):  # one row has no covariance
        PCA(1).fit(_rows()[:1])
    with pytest.raises(RuntimeError, match="fit"):
        PCA(2)(_rows())
