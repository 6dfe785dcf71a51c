"""Regularization through the data (nn/augment.py) and stochastic depth (nn/dropout.py), each
against a brute-force loop or a closed form."""

import pytest
import torch
import torch.nn.functional as F

from deepzoo.nn.augment import (
    affine,
    affine_parameters,
    cutout,
    mixed_cross_entropy,
    mixup,
    random_affine,
    random_translate,
)
from deepzoo.nn.dropout import drop_path, linear_decay_rule


def _shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Brute force: out[:, i, j] = image[:, i - dy, j - dx], zero where that is outside."""
    C, H, W = image.shape
    out = torch.zeros_like(image)
    for i in range(H):
        for j in range(W):
            if 0 <= i - dy < H and 0 <= j - dx < W:
                out[:, i, j] = image[:, i - dy, j - dx]
    return out


def test_translate_shifts_each_image_by_its_own_offset_with_zero_fill():
    x = torch.rand(64, 2, 7, 9) + 0.5  # no zero pixel, so the fill is visible
    shift = 2
    y = random_translate(x, shift, torch.Generator().manual_seed(0))
    offsets = set()
    for image, out in zip(x, y):
        candidates = [
            (dy, dx)
            for dy in range(-shift, shift + 1)
            for dx in range(-shift, shift + 1)
            if torch.equal(out, _shifted(image, dy, dx))
        ]
        assert len(candidates) == 1, candidates  # exactly one shift within the bound explains it
        offsets.add(candidates[0])
    assert len(offsets) > 15  # 64 draws over the 25 offsets reach most of them, (0, 0) included or not
    assert random_translate(x, 0) is x
    with pytest.raises(ValueError, match="max_shift"):
        random_translate(x, -1)


def test_translate_offsets_are_uniform_over_the_square():
    x = torch.zeros(20_000, 1, 5, 5)
    x[:, :, 2, 2] = 1.0  # a single lit pixel: where it lands is the offset
    y = random_translate(x, 1, torch.Generator().manual_seed(1))
    where = y.flatten(1).argmax(1)
    counts = torch.bincount(where, minlength=25).reshape(5, 5)
    assert counts.sum() == 20_000 and counts[1:4, 1:4].min() > 0  # every offset in {-1, 0, 1}^2
    assert counts[0].sum() == counts[:, 0].sum() == 0  # nothing beyond the bound
    # each of the 9 cells ~ Binomial(20000, 1/9): sd 44, 5 sd = 222
    assert (counts[1:4, 1:4].float() - 20_000 / 9).abs().max() < 222


def test_cutout_zeroes_exactly_one_clipped_square_per_image():
    x = torch.rand(600, 3, 6, 7) + 0.5
    size = 4
    y = cutout(x, size, torch.Generator().manual_seed(0))
    areas = set()
    for image, out in zip(x, y):
        hole = out[0] == 0
        assert torch.equal(hole, (out == 0).all(0)) and not (out == 0)[:, ~hole].any()  # all channels
        assert torch.equal(out[:, ~hole], image[:, ~hole])  # the rest untouched
        rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
        assert hole.sum() == len(rows) * len(cols)  # a rectangle
        assert torch.equal(rows, torch.arange(rows[0], rows[-1] + 1))
        assert torch.equal(cols, torch.arange(cols[0], cols[-1] + 1))
        # a size x size square centred at a pixel (rows cy - 2 .. cy + 1), clipped by the border
        assert len(rows) == size or rows[0] == 0 or rows[-1] == 5
        assert len(cols) == size or cols[0] == 0 or cols[-1] == 6
        assert len(rows) >= size // 2 and len(cols) >= size // 2
        areas.add(int(hole.sum()))
    # a centre at the top-left pixel (chance 1/42 an image; all 600 miss it with chance 1e-6)
    assert max(areas) == size * size and min(areas) == (size // 2) ** 2
    assert cutout(x, 0) is x


def test_cutout_centres_are_uniform_over_the_pixels():
    x = torch.ones(30_000, 1, 6, 6)
    y = cutout(x, 1, torch.Generator().manual_seed(2))  # size 1: the hole is the centre
    counts = (y[:, 0] == 0).sum(0)
    assert counts.sum() == 30_000
    # each pixel ~ Binomial(30000, 1/36): sd 28, 5 sd = 140
    assert (counts.float() - 30_000 / 36).abs().max() < 140


def test_mixup_mixes_inputs_and_targets_with_one_beta_lambda():
    torch.manual_seed(0)
    x, y = torch.randn(32, 3, 4, 4), torch.arange(32) % 10
    mixed, y_a, y_b, lam = mixup(x, y, alpha=0.4)
    assert torch.equal(y_a, y) and 0 < lam < 1
    # brute force: the partner of example i is the j with mixed[i] = lam x[i] + (1 - lam) x[j]
    rest = (mixed - lam * x).flatten(1)  # (B, D)
    error = (rest[:, None] - (1 - lam) * x.flatten(1)[None]).abs().amax(2)  # (B, B)
    partner = error.argmin(1)
    assert error.gather(1, partner[:, None]).max() < 1e-5
    assert torch.equal(partner.sort().values, torch.arange(32))  # a permutation
    assert torch.equal(y_b, y[partner])
    # lambda ~ Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1))
    lams = torch.tensor([mixup(x, y, alpha=0.4)[3] for _ in range(4000)])
    assert lams.min() >= 0 and lams.max() <= 1
    assert lams.mean().item() == pytest.approx(0.5, abs=0.03)  # 5 sd of the mean
    assert lams.var().item() == pytest.approx(1 / (4 * 1.8), rel=0.06)  # 6 sd (kurtosis 1.42)
    with pytest.raises(ValueError, match="alpha"):
        mixup(x, y, alpha=0.0)


def test_mixed_cross_entropy_is_the_cross_entropy_of_the_mixed_smoothed_target():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 7, generator=generator, dtype=torch.float64)
    y_a = torch.randint(0, 7, (50,), generator=generator)
    y_b = torch.randint(0, 7, (50,), generator=generator)
    lam, eps, K = 0.3, 0.1, 7
    q = lambda y: (1 - eps) * F.one_hot(y, K).double() + eps / K  # noqa: E731 (Szegedy et al.)
    target = lam * q(y_a) + (1 - lam) * q(y_b)
    expected = -(target * logits.log_softmax(1)).sum(1).mean()
    assert mixed_cross_entropy(logits, y_a, y_b, lam, eps).item() == pytest.approx(expected.item(), rel=1e-12)
    plain = -(logits.log_softmax(1).gather(1, y_a[:, None])).mean()
    assert mixed_cross_entropy(logits, y_a, y_b, 1.0).item() == pytest.approx(plain.item(), rel=1e-12)


def test_drop_path_drops_whole_examples_and_keeps_the_expectation():
    x = torch.rand(40_000, 3, 2) + 1
    y = drop_path(x, 0.3, training=True, generator=torch.Generator().manual_seed(0))
    dropped = (y == 0).flatten(1)
    assert torch.equal(dropped.all(1), dropped.any(1))  # an example is dropped whole or kept whole
    assert dropped.all(1).float().mean().item() == pytest.approx(0.3, abs=0.01)  # sd 0.0023
    kept = ~dropped.all(1)
    assert torch.allclose(y[kept], x[kept] / 0.7)
    assert torch.equal(drop_path(x, 0.3, training=False), x)
    with pytest.raises(ValueError, match="drop-path"):
        drop_path(x, 1.0, training=True)


def test_linear_decay_rule_is_huang_et_al():
    # L = 4, p_L = 0.5: survival 1 - l/L (1 - 0.5) = 0.875, 0.75, 0.625, 0.5
    assert linear_decay_rule(4, 0.5) == pytest.approx([0.125, 0.25, 0.375, 0.5])
    assert linear_decay_rule(3, 0.0) == [0.0, 0.0, 0.0]


def test_affine_rotates_counter_clockwise_like_rot90_and_keeps_pixel_distances_on_any_aspect():
    square = torch.rand(4, 2, 7, 7)
    ones = torch.ones(4)
    # float32 grid coordinates: cos(90 deg) = -4e-8, so the samples sit 1e-6 off the pixel centres
    torch.testing.assert_close(
        affine(square, 90 * ones, ones), torch.rot90(square, 1, (2, 3)), rtol=0, atol=1e-5
    )
    wide = torch.rand(4, 2, 5, 8)
    torch.testing.assert_close(
        affine(wide, 180 * ones, ones), torch.rot90(wide, 2, (2, 3)), rtol=0, atol=1e-5
    )
    # one lit pixel 2 to the right of the centre of a 5 x 9 image moves 2 up (not 2 * 5/9: no shear)
    dot = torch.zeros(1, 1, 5, 9)
    dot[0, 0, 2, 6] = 1.0
    moved = affine(dot, torch.tensor([90.0]), torch.tensor([1.0]))[0, 0]
    assert moved[0, 4].item() == pytest.approx(1.0, abs=1e-5) and moved.sum().item() == pytest.approx(
        1.0, abs=1e-5
    )


def test_affine_zooms_about_the_centre():
    """A ramp I(i, j) = j is linear, so bilinear sampling is exact: zoom s shows at column j the
    input column c + (j - c) / s, c = (W - 1) / 2 the centre."""
    W, s = 12, 1.5
    ramp = torch.arange(W, dtype=torch.float32).expand(1, 1, 6, W).contiguous()
    zoomed = affine(ramp, torch.zeros(1), torch.tensor([s]))[0, 0]
    c = (W - 1) / 2
    expected = c + (torch.arange(W) - c) / s
    torch.testing.assert_close(zoomed[2], expected, rtol=0, atol=1e-5)  # rows 2-3 stay inside vertically


def test_random_affine_draws_uniform_angles_and_zooms_within_the_bounds():
    angles, zooms = affine_parameters(40_000, 15.0, 0.2, torch.Generator().manual_seed(0))
    assert angles.abs().max() <= 15 and (zooms - 1).abs().max() <= 0.2
    # U(-a, a): mean 0 (sd of the mean a / sqrt(3 n) = 0.043), variance a^2 / 3 (rel. sd 0.0063)
    assert abs(angles.mean().item()) < 0.25 and angles.var().item() == pytest.approx(75.0, rel=0.04)
    assert zooms.mean().item() == pytest.approx(1.0, abs=0.003) and zooms.var().item() == pytest.approx(
        0.04 / 3, rel=0.04
    )
    x = torch.rand(6, 1, 9, 9)
    drawn = random_affine(x, 15.0, 0.2, torch.Generator().manual_seed(3))
    torch.testing.assert_close(
        drawn, affine(x, *affine_parameters(6, 15.0, 0.2, torch.Generator().manual_seed(3)))
    )
    assert random_affine(x, 0.0, 0.0) is x
    with pytest.raises(ValueError, match="degrees"):
        affine_parameters(2, 200.0, 0.0)


def _shifted_rows(x: torch.Tensor) -> torch.Tensor:
    """Brute force: row i of each image moved i - c pixels to the right (c the centre row), zero-filled."""
    out = torch.zeros_like(x)
    H, W = x.shape[-2:]
    c = (H - 1) // 2
    for i in range(H):
        for j in range(W):
            if 0 <= j - (i - c) < W:
                out[..., i, j] = x[..., i, j - (i - c)]
    return out


def test_a_45_degree_shear_moves_each_row_by_its_distance_from_the_centre():
    """tan 45 deg = 1 on an odd-sized image: every sample falls on a pixel centre, so the shear is
    exactly the row shifts; shear first, then rotation: a 90 degree turn of the sheared image."""
    x = torch.rand(3, 2, 7, 7)
    ones, zeros, shear = torch.ones(3), torch.zeros(3), torch.full((3,), 45.0)
    torch.testing.assert_close(affine(x, zeros, ones, shear), _shifted_rows(x), rtol=0, atol=1e-5)
    torch.testing.assert_close(
        affine(x, 90 * ones, ones, shear), torch.rot90(_shifted_rows(x), 1, (2, 3)), rtol=0, atol=1e-5
    )
    torch.testing.assert_close(
        affine(x, zeros, ones, -shear), _shifted_rows(x.flip(-1)).flip(-1), rtol=0, atol=1e-5
    )
    wide = torch.rand(2, 1, 5, 9)  # pixels, not the normalized square: still one pixel per row
    torch.testing.assert_close(
        affine(wide, zeros[:2], ones[:2], shear[:2]), _shifted_rows(wide), rtol=0, atol=1e-5
    )


def test_random_shears_are_drawn_after_the_angles_and_zooms_within_the_bound():
    x = torch.rand(6, 1, 9, 9)
    angles, zooms = affine_parameters(6, 10.0, 0.1, torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)
    affine_parameters(6, 10.0, 0.1, generator)
    shears = (torch.rand(6, generator=generator) * 2 - 1) * 20.0
    torch.testing.assert_close(
        random_affine(x, 10.0, 0.1, torch.Generator().manual_seed(5), shear=20.0),
        affine(x, angles, zooms, shears),
    )
    torch.testing.assert_close(  # without shear: the same draws and images as before shear existed
        random_affine(x, 10.0, 0.1, torch.Generator().manual_seed(5)), affine(x, angles, zooms)
    )
    with pytest.raises(ValueError, match="shear"):
        random_affine(x, 0.0, 0.0, shear=90.0)


@pytest.mark.parametrize("option", ["shear", "stretch"])
def test_a_shear_or_a_stretch_alone_still_transforms(option):
    """No rotation and no zoom, but a shear (or a stretch) range: each image is still sheared
    (stretched) by its own draw; only when every range is 0 is x returned as is."""
    x = torch.rand(6, 1, 9, 9)
    generator = torch.Generator().manual_seed(4)
    angles, zooms = affine_parameters(6, 0.0, 0.0, generator)
    draw = (torch.rand(6, generator=generator) * 2 - 1) * (20.0 if option == "shear" else 0.3)
    if option == "shear":
        expected = affine(x, angles, zooms, draw)
    else:
        expected = affine(x, angles, torch.stack([zooms * (1 + draw), zooms / (1 + draw)], 1))
    out = random_affine(
        x, 0.0, 0.0, torch.Generator().manual_seed(4), **{option: 20.0 if option == "shear" else 0.3}
    )
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, x, atol=1e-3)


def test_a_stretch_zooms_the_two_axes_apart():
    """Ramps along x and along y are linear, so bilinear sampling is exact: zooms (zx, zy) show at
    column j the input column c + (j - c) / zx, and at row i the input row c + (i - c) / zy."""
    H = W = 12
    c = (W - 1) / 2
    along_x = torch.arange(W, dtype=torch.float32).expand(1, 1, H, W).contiguous()
    along_y = along_x.transpose(2, 3).contiguous()
    zooms = torch.tensor([[1.5, 1 / 1.5]])
    expected = c + (torch.arange(W) - c) / 1.5
    torch.testing.assert_close(affine(along_x, torch.zeros(1), zooms)[0, 0, 5], expected, rtol=0, atol=1e-5)
    rows = affine(along_y, torch.zeros(1), zooms)[0, 0, 2:10, 5]  # rows whose source lies inside
    torch.testing.assert_close(rows, c + (torch.arange(2, 10) - c) * 1.5, rtol=0, atol=1e-5)
    # turned 90 degrees first, the ramp runs up the image; then y's zoom 1 / 1.5 (along the image's
    # axes, after the turn) spreads it: row i reads the input column c - (i - c) * 1.5
    turned = affine(along_x, torch.full((1,), 90.0), zooms)[0, 0, 2:10, 5]
    torch.testing.assert_close(turned, c - (torch.arange(2, 10) - c) * 1.5, rtol=0, atol=1e-4)
    across = affine(along_y, torch.full((1,), 90.0), zooms)[0, 0, 5]  # and x's zoom 1.5 squeezes this one
    torch.testing.assert_close(across, c + (torch.arange(W) - c) / 1.5, rtol=0, atol=1e-4)
    x = torch.rand(4, 1, 9, 9)
    generator = torch.Generator().manual_seed(2)
    angles, scales = affine_parameters(4, 10.0, 0.1, generator)
    aspect = 1 + (torch.rand(4, generator=generator) * 2 - 1) * 0.3
    torch.testing.assert_close(
        random_affine(x, 10.0, 0.1, torch.Generator().manual_seed(2), stretch=0.3),
        affine(x, angles, torch.stack([scales * aspect, scales / aspect], 1)),
    )
    torch.testing.assert_close(affine(x, angles, torch.stack([scales, scales], 1)), affine(x, angles, scales))


def test_angles_and_zooms_are_drawn_independently_and_zooms_stay_below_2():
    """Correlation of 40,000 independent draws: sd 1 / sqrt(n) = 0.005, so |r| < 0.03 is 6 sd."""
    angles, zooms = affine_parameters(40_000, 15.0, 0.2, torch.Generator().manual_seed(0))
    r = torch.corrcoef(torch.stack([angles, zooms]))[0, 1].item()
    assert abs(r) < 0.03
    with pytest.raises(ValueError, match="scale < 1"):
        affine_parameters(2, 10.0, 1.0)  # a zoom of 0 would divide by zero


def test_translate_and_cutout_follow_their_formulas_with_the_draws_replayed():
    """translate: y[b, :, i, j] = x[b, :, i - dy_b, j - dx_b] with (dy, dx) the generator's first
    draw of shape (2, B); cutout: rows cy - size // 2 .. + size - 1 (clipped), (cy, cx) drawn over
    every pixel, centres near the border included."""
    x = torch.rand(40, 1, 6, 7) + 0.5
    y = random_translate(x, 2, torch.Generator().manual_seed(5))
    dy, dx = torch.randint(-2, 3, (2, 40), generator=torch.Generator().manual_seed(5))
    for b in range(40):
        assert torch.equal(y[b], _shifted(x[b], int(dy[b]), int(dx[b])))
    size = 4
    y = cutout(x, size, torch.Generator().manual_seed(6))
    replay = torch.Generator().manual_seed(6)
    cy, cx = torch.randint(0, 6, (40,), generator=replay), torch.randint(0, 7, (40,), generator=replay)
    assert cy.max() >= 6 - size // 2 + 1  # a centre whose square is clipped at the bottom
    for b in range(40):
        hole = torch.zeros(6, 7, dtype=torch.bool)
        top, left = int(cy[b]) - size // 2, int(cx[b]) - size // 2
        hole[max(top, 0) : top + size, max(left, 0) : left + size] = True
        assert torch.equal(y[b, 0] == 0, hole)


def test_draws_are_made_on_the_generators_own_device():
    from deepzoo.nn.augment import generator_device

    x = torch.zeros(2, 1, 4, 4, device="meta")  # data elsewhere than the generator
    assert generator_device(torch.Generator(), x) == torch.device("cpu")
    assert generator_device(None, x) == torch.device("meta")
