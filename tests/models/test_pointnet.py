"""Point clouds of digits and the PointNet autoencoder: the clouds fill the ink and nothing else,
the encoder ignores the order of the points, a short run learns, the recipe runs end to end."""

import pytest
import torch

from deepzoo.data.mnist import read_mnist
from deepzoo.data.point_clouds import CloudConfig, digit_clouds
from deepzoo.metrics.shape import chamfer_distance, voxelize
from deepzoo.models.pointnet import PointAEConfig, PointNetAutoencoder

SMALL = PointAEConfig(points=64, encoder=(32, 64), latent=32, decoder=(128,))


@pytest.fixture(scope="module")
def digits():
    images, labels = read_mnist("test")
    return images[:300], labels[:300]


def test_clouds_lie_in_the_ink_slab_and_reach_every_ink_pixel(digits):
    images, _ = digits
    config = CloudConfig(points=4000, ink=0.5, thickness=0.25)
    clouds = digit_clouds(images[:3], config, torch.Generator().manual_seed(0))
    again = digit_clouds(images[:3], config, torch.Generator().manual_seed(0))
    assert clouds.shape == (3, 4000, 3) and torch.equal(clouds, again)
    assert clouds[..., 2].abs().max() <= 0.125
    col, row = ((clouds[..., 0] + 1) * 14).floor().long(), ((1 - clouds[..., 1]) * 14).floor().long()
    for i in range(3):
        hit = torch.zeros(28, 28, dtype=torch.bool)
        hit[row[i], col[i]] = True
        assert torch.equal(hit, images[i].float() / 255 > 0.5)  # 4000 points cover ~150 pixels
    with pytest.raises(ValueError, match="no pixel"):
        digit_clouds(torch.zeros(1, 28, 28, dtype=torch.uint8), config, torch.Generator())
    with pytest.raises(ValueError, match="no pixel above ink=0.0"):  # strictly above: 0 is not ink
        digit_clouds(torch.zeros(1, 28, 28, dtype=torch.uint8), CloudConfig(ink=0.0), torch.Generator())


def test_clouds_are_uniform_over_the_ink_and_inside_each_pixels_column(digits):
    """Every ink pixel is equally likely whatever its intensity (the chi-square of the counts is
    about its degrees of freedom: its mean, with standard deviation sqrt(2 df)), and a point is
    uniform inside its pixel's column: the fractional position in the pixel has variance 1/12."""
    images, _ = digits
    config = CloudConfig(points=20_000)
    clouds = digit_clouds(images[:3], config, torch.Generator().manual_seed(0))
    x, y = (clouds[..., 0] + 1) * 14, (1 - clouds[..., 1]) * 14
    for i in range(3):
        counts = torch.bincount(y[i].floor().long() * 28 + x[i].floor().long(), minlength=784).float()
        ink = (images[i].float() / 255 > config.ink).flatten()
        expected = config.points / ink.sum()
        chi_square = ((counts[ink] - expected) ** 2 / expected).sum()
        df = int(ink.sum()) - 1
        assert abs(chi_square - df) < 5 * (2 * df) ** 0.5, (chi_square, df)
        for fraction in (x[i] % 1, y[i] % 1):
            assert abs(fraction.var() - 1 / 12) < 0.005 and abs(fraction.mean() - 0.5) < 0.01


def test_mnist_clouds_pair_each_cloud_with_its_digits_label():
    from deepzoo.data.point_clouds import mnist_clouds

    images, labels = read_mnist("test")
    data = mnist_clouds("test", n=20, seed=3, config=CloudConfig(points=500))
    assert torch.equal(data.tensors["label"], labels[:20])
    points = data.tensors["points"]
    col, row = ((points[..., 0] + 1) * 14).floor().long(), ((1 - points[..., 1]) * 14).floor().long()
    for i in range(20):
        assert (images[i][row[i], col[i]].float() / 255 > 0.5).all()
    with pytest.raises(ValueError, match="n must be"):
        mnist_clouds("test", n=10_001)


def test_voxelize_marks_the_voxels_holding_points():
    points = torch.tensor([[[-1.0, -1.0, -1.0], [0.99, 0.0, 0.49], [5.0, -0.9, 0.0]]])
    grid = voxelize(points, 4)
    assert grid.shape == (1, 4, 4, 4) and grid.sum() == 3
    assert grid[0, 0, 0, 0] and grid[0, 3, 2, 2] and grid[0, 3, 0, 2]  # outside: the border voxel


def test_the_encoding_ignores_the_order_of_the_points():
    torch.manual_seed(0)
    model = PointNetAutoencoder(SMALL)
    points = torch.randn(2, 50, 3)
    shuffled = points[:, torch.randperm(50)]
    torch.testing.assert_close(model.encode(points), model.encode(shuffled))
    assert model(points).shape == (2, 64, 3)
    assert not torch.allclose(model.encode(points), model.encode(points * 1.5))


def test_a_short_run_learns_the_digits_shapes(digits):
    """300 AdamW steps on 256 digit clouds close 70% of the Chamfer gap between the best constant
    cloud (one training digit used for every held-out digit) and the sampling floor (a fresh
    sample of the same held-out digits). Seeds: `make test-seeds`."""
    images, _ = digits
    config = CloudConfig(points=64)
    train = digit_clouds(images[:256], config, torch.Generator().manual_seed(0))
    held_out = digit_clouds(images[256:300], config, torch.Generator().manual_seed(1))
    floor = chamfer_distance(
        digit_clouds(images[256:300], config, torch.Generator().manual_seed(2)), held_out
    )
    constant = min(chamfer_distance(cloud.expand_as(held_out), held_out).mean() for cloud in train)
    torch.manual_seed(0)
    model = PointNetAutoencoder(SMALL)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(300):
        loss = model.loss({"points": train[torch.randint(0, 256, (32,))]})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        learned = chamfer_distance(model(held_out), held_out).mean()
    floor = floor.mean()
    assert learned - floor < 0.3 * (constant - floor), (learned.item(), floor.item(), constant.item())


def test_the_recipe_trains_evaluates_and_draws(tmp_path, tiny_recipe_run):
    from deepzoo.cli import main
    from deepzoo.recipes.shapes import CloudsData

    run_dir, record = tiny_recipe_run(
        "pointnet-ae-digits", model=SMALL, data=CloudsData(train=40, test=20, cloud=CloudConfig(points=64))
    )
    assert record["chamfer"] > record["resample_chamfer"] > 0
    assert 0 <= record["f1"] <= record["resample_f1"] <= 1 and 0 <= record["voxel_iou"] <= 1
    assert (run_dir / "samples" / "reconstructions.png").stat().st_size > 0
    main(["sample", str(run_dir), "--n", "4", "--out", str(tmp_path / "drawn.png")])
    assert (tmp_path / "drawn.png").stat().st_size > 0


def test_the_code_is_the_max_over_points_of_the_shared_mlp_with_relu_after_every_layer():
    """z = max_i ReLU(W_L ... ReLU(W_1 p_i)): every layer of the per-point MLP, the last one too,
    is followed by a ReLU (PointNet's), so z >= 0 and is 0 where no point activates a feature."""
    torch.manual_seed(0)
    model = PointNetAutoencoder(PointAEConfig(points=8, encoder=(16, 16), latent=12, decoder=(16,)))
    points = torch.randn(3, 50, 3)
    h = points
    for linear in (m for m in model.point_mlp if isinstance(m, torch.nn.Linear)):
        h = torch.relu(linear(h))
    torch.testing.assert_close(model.encode(points), h.amax(1))
    # the loss: the Chamfer distance of each reconstruction to its cloud, averaged over the batch
    expected = torch.stack([chamfer_distance(model(points[i : i + 1])[0], points[i]) for i in range(3)])
    torch.testing.assert_close(model.loss({"points": points})["loss"], expected.mean())


def test_the_recipes_evaluation_averages_per_cloud_scores_against_a_fresh_sample(tmp_path):
    """_evaluate on a stand-in model that returns half the clouds exactly and moves the rest:
    each score is the mean over clouds of metrics/shape.py's per-cloud score, the resample_* floor
    is a sample of the same test digits at seed + 2, and the test split was sampled at seed + 1."""
    from deepzoo.data.point_clouds import mnist_clouds
    from deepzoo.metrics.shape import cloud_scores, voxel_iou
    from deepzoo.recipes.shapes import CloudsData, PointAERun, ShapeEval, _evaluate, clouds_splits

    cloud = CloudConfig(points=64)
    config = PointAERun(data=CloudsData(train=10, test=12, seed=4, cloud=cloud), eval=ShapeEval(resolution=8))
    train, test = clouds_splits(config, torch.device("cpu"))
    assert torch.equal(test.tensors["points"], mnist_clouds("test", 12, 5, cloud).tensors["points"])
    assert torch.equal(train.tensors["points"], mnist_clouds("train", 10, 4, cloud).tensors["points"])

    class HalfRight(torch.nn.Module):
        def reconstruct(self, points):
            return torch.cat([points[:6], points[6:] + torch.tensor([0.3, 0.0, 0.0])])

    scores = _evaluate(HalfRight(), test, tmp_path, config)
    true = test.tensors["points"]
    pred = HalfRight().reconstruct(true)
    expected = cloud_scores(pred, true, config.eval.tau)
    iou = voxel_iou(voxelize(pred, 8), voxelize(true, 8))
    assert iou[:6].min() == 1 and iou[6:].max() < 1
    assert scores["chamfer"] == pytest.approx(expected["chamfer"].mean().item(), rel=1e-5)
    assert scores["f1"] == pytest.approx(expected["f1"].mean().item(), rel=1e-5)
    assert scores["voxel_iou"] == pytest.approx(iou.mean().item(), rel=1e-5)
    images, _ = read_mnist("test")
    resampled = digit_clouds(images[:12], cloud, torch.Generator().manual_seed(6))
    floor = cloud_scores(resampled, true, config.eval.tau)
    assert scores["resample_chamfer"] == pytest.approx(floor["chamfer"].mean().item(), rel=1e-5)
    assert (tmp_path / "samples" / "reconstructions.png").stat().st_size > 0


def test_splat_draws_the_front_view_with_y_up():
    from deepzoo.recipes.shapes import splat

    points = torch.tensor([[[-0.99, 0.99, 0.0], [0.99, -0.99, 0.5], [0.0, 0.5, -0.5]]])
    image = splat(points, size=8)
    assert image.shape == (1, 3, 8, 8) and torch.equal(image[:, 0], image[:, 2])
    assert {tuple(p) for p in image[0, 0].nonzero().tolist()} == {(0, 0), (7, 7), (2, 4)}


def test_the_reconstruction_picture_pairs_each_cloud_with_the_models_reconstruction():
    from deepzoo.recipes.shapes import draw_reconstructions, splat

    class Mirror(torch.nn.Module):  # a "reconstruction" that differs visibly: x -> -x
        def reconstruct(self, points):
            return points * torch.tensor([-1.0, 1.0, 1.0])

    points = torch.rand(2, 50, 3, generator=torch.Generator().manual_seed(0)) * 0.9
    pictures = draw_reconstructions(Mirror(), {"points": points})
    assert pictures.shape == (2, 2, 3, 56, 56)
    assert torch.equal(pictures[:, 0], splat(points)) and torch.equal(
        pictures[:, 1], splat(Mirror().reconstruct(points))
    )
    assert not torch.equal(pictures[:, 0], pictures[:, 1])
