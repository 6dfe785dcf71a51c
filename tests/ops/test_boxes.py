"""Box ops against brute force: IoU and GIoU, the box encoding, NMS, RoI Align, anchors."""

import math

import pytest
import torch

from deepzoo.ops.boxes import (
    BACKGROUND,
    BETWEEN,
    anchors,
    batched_nms,
    box_area,
    box_iou,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    generalized_box_iou,
    match_boxes,
    nms,
    roi_align,
)


def _random_boxes(n, generator, size=50.0, integer=False):
    xy = torch.rand(n, 2, generator=generator, dtype=torch.float64) * size
    wh = torch.rand(n, 2, generator=generator, dtype=torch.float64) * size / 2
    boxes = torch.cat([xy, xy + wh], 1)
    return boxes.round() if integer else boxes


def _iou_by_hand(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    iou = inter / union if union > 0 else 0.0
    return iou, iou - ((hull - union) / hull if hull > 0 else 0.0)


def test_iou_and_giou_equal_brute_force_with_degenerate_and_touching_boxes():
    g = torch.Generator().manual_seed(0)
    boxes = torch.cat([
        _random_boxes(30, g, integer=True),
        torch.tensor([[5.0, 5, 5, 9], [5, 5, 5, 5], [5, 5, 5, 5],  # zero-area: a line, a point twice
                      [0, 0, 10, 10], [10, 0, 20, 10], [0, 10, 10, 20], [0, 0, 10, 10]], dtype=torch.float64),
    ])  # fmt: skip
    iou, giou = box_iou(boxes, boxes), generalized_box_iou(boxes, boxes)
    for i, a in enumerate(boxes.tolist()):
        for j, b in enumerate(boxes.tolist()):
            want_iou, want_giou = _iou_by_hand(a, b)
            assert iou[i, j].item() == pytest.approx(want_iou, abs=1e-12), (a, b)
            assert giou[i, j].item() == pytest.approx(want_giou, abs=1e-12), (a, b)
    n = len(boxes)
    assert iou[n - 4, n - 3] == 0 and giou[n - 4, n - 3] == 0  # touching along an edge: 0, hull = union
    assert iou[n - 4, n - 1] == 1 and iou[n - 6, n - 5] == 0  # identical; two equal points
    assert (giou <= iou + 1e-12).all() and (giou >= -1).all()


def test_box_encoding_inverts_and_is_zero_for_equal_boxes():
    g = torch.Generator().manual_seed(1)
    ref, target = _random_boxes(100, g) + 0.5, _random_boxes(100, g) + 0.5
    ref[:, 2:] += 1
    target[:, 2:] += 1
    for weights in ((1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)):
        deltas = encode_boxes(ref, target, weights)
        torch.testing.assert_close(decode_boxes(ref, deltas, weights), target, rtol=0, atol=1e-9)
    assert encode_boxes(ref, ref).abs().max() < 1e-12
    # dx is the centre shift in reference widths; dw the log of the width ratio
    one = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    torch.testing.assert_close(
        encode_boxes(one, torch.tensor([[5.0, 0.0, 25.0, 20.0]])),
        torch.tensor([[1.0, 0.0, math.log(2), 0.0]]),
    )
    huge = decode_boxes(one, torch.tensor([[0.0, 0.0, 100.0, 100.0]]))
    assert torch.isfinite(huge).all() and box_area(huge).item() == pytest.approx(
        200 * (1000 / 16) ** 2, rel=1e-5
    )
    # each weight scales its own coordinate: (wx, wy, ww, wh) = (10, 5, 2, 1), all four moved
    other = torch.tensor([[5.0, 10.0, 25.0, 50.0]])  # centre (15, 30) vs (5, 10); size 20 x 40
    torch.testing.assert_close(
        encode_boxes(one, other, (10.0, 5.0, 2.0, 1.0)),
        torch.tensor([[10 * 1.0, 5 * 1.0, 2 * math.log(2), 1 * math.log(2)]]),
    )
    # only growth is clamped (as torchvision): a shrink of e^-10 decodes as it is
    tiny = decode_boxes(one, torch.tensor([[0.0, 0.0, -10.0, -10.0]]))
    assert box_area(tiny).item() == pytest.approx(200 * math.exp(-20), rel=1e-3)  # float32 corners


def test_an_inverted_box_has_zero_area_and_overlaps_nothing():
    inverted = torch.tensor([[4.0, 4.0, 2.0, 6.0], [4.0, 4.0, 6.0, 2.0], [4.0, 4.0, 2.0, 2.0]])
    assert box_area(inverted).tolist() == [0.0, 0.0, 0.0]
    assert box_iou(inverted, torch.tensor([[0.0, 0.0, 10.0, 10.0]])).eq(0).all()


def _nms_by_hand(boxes, scores, threshold):
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept = []
    for i in order:
        if all(_iou_by_hand(boxes[i], boxes[k])[0] <= threshold for k in kept):
            kept.append(i)
    return kept


@pytest.mark.parametrize("seed", range(4))
def test_nms_equals_the_greedy_loop_with_score_ties_and_iou_at_the_threshold(seed):
    g = torch.Generator().manual_seed(seed)
    boxes = _random_boxes(300, g, size=60, integer=True)
    scores = torch.randint(0, 20, (300,), generator=g).double()  # many exact ties
    # a pair at exactly IoU 0.5 (kept: suppression is for IoU > t) and one just above
    boxes[:3] = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 6]])
    scores[:3] = torch.tensor([100.0, 99, 98])
    assert box_iou(boxes[:1], boxes[1:3]).tolist() == [[0.5, 0.6]]
    for threshold in (0.0, 0.3, 0.5, 0.7):
        want = _nms_by_hand(boxes.tolist(), scores.tolist(), threshold)
        assert nms(boxes, scores, threshold, kernel="loop").tolist() == want, threshold
        for block in (7, 64, 512):  # blocks end mid-chain; one block
            got = nms(boxes, scores, threshold, block=block, kernel="blocked").tolist()
            assert got == want, (threshold, block)
    for kernel in ("loop", "blocked"):
        kept = nms(boxes, scores, 0.5, kernel=kernel).tolist()
        assert 1 in kept and 2 not in kept


def test_nms_kernels_agree_in_float32_on_clustered_boxes():
    """The compiled loop and the blocks compute IoU in float32 the same way: same indices on
    detector-like clusters (20 jittered boxes per object, long suppression chains), and both
    refuse what they cannot run."""
    g = torch.Generator().manual_seed(11)
    objects = torch.rand(100, 4, generator=g) * torch.tensor([400.0, 400, 60, 60])
    objects[:, 2:] += 8  # x, y, width, height
    which = torch.randint(0, 100, (2000,), generator=g)
    xy, wh = objects[which, :2], objects[which, 2:]
    boxes = torch.cat([xy, xy + wh], 1) + (torch.rand(2000, 4, generator=g) - 0.5) * 0.3 * wh.repeat(1, 2)
    scores, classes = torch.rand(2000, generator=g), torch.randint(0, 5, (2000,), generator=g)
    for threshold in (0.3, 0.5, 0.7):
        loop = nms(boxes, scores, threshold, kernel="loop")
        assert 50 <= len(loop) < 1000  # clusters thinned, not emptied
        assert torch.equal(loop, nms(boxes, scores, threshold, kernel="blocked"))
        assert torch.equal(
            batched_nms(boxes, scores, classes, threshold, kernel="loop"),
            batched_nms(boxes, scores, classes, threshold, kernel="blocked"),
        )
    with pytest.raises(ValueError, match="numba"):
        nms(boxes.bfloat16(), scores, 0.5, kernel="loop")
    with pytest.raises(ValueError, match="kernel"):
        nms(boxes, scores, 0.5, kernel="fast")


@pytest.mark.parametrize("kernel", ["loop", "blocked"])
def test_float32_iou_is_compared_with_the_real_threshold(kernel):
    """As torchvision (a float IoU against a double threshold): with float32 boxes, IoU 30 / 100 is
    float32(0.3) = 0.300000012 > 0.3, so the second box goes; 70 / 100 is float32(0.7) =
    0.699999988 < 0.7, so it stays; 50 / 100 is exactly 0.5, kept (strict >)."""
    scores = torch.tensor([1.0, 0.5])
    for height, threshold, kept in ((3.0, 0.3, [0]), (6.0, 0.6, [0]), (7.0, 0.7, [0, 1]), (5.0, 0.5, [0, 1])):
        boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, height]])
        iou = float(torch.tensor(10 * height) / torch.tensor(100.0))  # float32 division
        assert (iou > threshold) == (kept == [0])
        assert nms(boxes, scores, threshold, kernel=kernel).tolist() == kept, (height, threshold)
        assert nms(boxes.double(), scores, threshold, kernel=kernel).tolist() == (
            [0] if height * 10 / 100 > threshold else [0, 1]
        )


def test_the_compiled_loop_compares_iou_with_the_threshold_in_the_boxes_dtype():
    """IoU 1/10 computed in float32 is float32(0.1) > 0.1: compared with the threshold cast to
    float32 it is not above it (both boxes kept), as the tensor path's `inter / union > t`."""
    import numpy as np

    from deepzoo.ops import nms_loop

    boxes = np.array([[0, 0, 10, 1], [0, 0, 1, 1]])
    for dtype in (np.float32, np.float64):
        assert nms_loop.greedy_nms(boxes.astype(dtype), np.zeros(2, np.int64), 0.1).tolist() == [0, 1]
        assert nms_loop.greedy_nms(boxes.astype(dtype), np.zeros(2, np.int64), 0.09).tolist() == [0]


def test_auto_kernel_takes_the_loop_on_cpu_and_falls_back_to_blocks(monkeypatch):
    """ "auto" runs the compiled loop for float32 CPU boxes, the blocks for bf16 boxes or without
    numba, with the same indices as the by-hand loop."""
    from deepzoo.ops import nms_loop

    g = torch.Generator().manual_seed(3)
    boxes, scores = _random_boxes(200, g, size=60, integer=True).float(), torch.rand(200, generator=g)
    want = _nms_by_hand(boxes.tolist(), scores.tolist(), 0.5)
    calls = []
    loop = nms_loop.greedy_nms
    monkeypatch.setattr(nms_loop, "greedy_nms", lambda *a: calls.append(1) or loop(*a))
    assert nms(boxes, scores, 0.5).tolist() == want and len(calls) == 1
    nms(boxes.bfloat16(), scores, 0.5)
    assert len(calls) == 1
    monkeypatch.setattr(nms_loop, "available", lambda: False)
    assert nms(boxes, scores, 0.5).tolist() == want and len(calls) == 1
    with pytest.raises(ValueError, match="numba"):
        nms(boxes, scores, 0.5, kernel="loop")


@pytest.mark.parametrize("kernel,block", [("loop", 256), ("blocked", 7), ("blocked", 512)])
def test_batched_nms_suppresses_only_within_a_class(kernel, block):
    """Against NMS class by class, with score ties (order: score, then index) and blocks that
    span several classes."""
    g = torch.Generator().manual_seed(5)
    boxes = _random_boxes(300, g, size=40)
    scores = torch.randint(0, 30, (300,), generator=g).double()
    classes = torch.randint(0, 25, (300,), generator=g)
    want = []
    for c in range(25):
        idx = torch.nonzero(classes == c).squeeze(1)
        want += idx[
            torch.tensor(_nms_by_hand(boxes[idx].tolist(), scores[idx].tolist(), 0.4), dtype=torch.long)
        ].tolist()
    want.sort(key=lambda i: (-scores[i].item(), i))
    assert batched_nms(boxes, scores, classes, 0.4, block=block, kernel=kernel).tolist() == want
    assert batched_nms(boxes[:0], scores[:0], classes[:0], 0.4, kernel=kernel).numel() == 0


def _bilinear_by_hand(image, y, x):
    """torchvision's bilinear_interpolate for one channel map (H, W) at one point."""
    H, W = image.shape
    if y < -1 or y > H or x < -1 or x > W:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= H - 1:
        y0 = y1 = H - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= W - 1:
        x0 = x1 = W - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return (
        (1 - ly) * (1 - lx) * image[y0, x0] + (1 - ly) * lx * image[y0, x1]
        + ly * (1 - lx) * image[y1, x0] + ly * lx * image[y1, x1]
    ).item()  # fmt: skip


@pytest.mark.parametrize("s", [2, 0])
@pytest.mark.parametrize("aligned", [True, False])
def test_roi_align_averages_bilinear_samples_by_hand(aligned, s):
    """Fixed sampling (2 x 2 points per bin) and adaptive (s <= 0: ceil(roi side / bins) points
    per axis, different for each RoI and axis)."""
    g = torch.Generator().manual_seed(2)
    features = torch.randn(2, 3, 7, 9, generator=g, dtype=torch.float64)
    rois = torch.tensor([
        [0, 1.0, 1.0, 10.0, 6.0], [1, -3.0, -2.0, 4.0, 3.0],  # partly outside the image
        [1, 2.2, 3.7, 2.4, 3.9], [0, 15.0, 1.0, 30.0, 12.0],  # tiny; beyond the right edge
    ], dtype=torch.float64)  # fmt: skip
    scale, (ph, pw) = 0.5, (2, 3)
    out = roi_align(features, rois, (ph, pw), spatial_scale=scale, sampling_ratio=s, aligned=aligned)
    assert out.shape == (4, 3, ph, pw)
    offset = 0.5 if aligned else 0.0
    for r, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        x1, y1, x2, y2 = (v * scale - offset for v in (x1, y1, x2, y2))
        w, h = x2 - x1, y2 - y1
        if not aligned:
            w, h = max(w, 1.0), max(h, 1.0)
        gy, gx = (s, s) if s > 0 else (math.ceil(h / ph), math.ceil(w / pw))
        for c in range(3):
            for i in range(ph):
                for j in range(pw):
                    values = [
                        _bilinear_by_hand(features[int(b), c], y1 + i * h / ph + (iy + 0.5) * h / ph / gy,
                                          x1 + j * w / pw + (ix + 0.5) * w / pw / gx)
                        for iy in range(gy) for ix in range(gx)
                    ]  # fmt: skip
                    expected = sum(values) / max(len(values), 1)
                    assert out[r, c, i, j].item() == pytest.approx(expected, abs=1e-12)


def test_roi_align_equals_torchvision_where_installed():
    tv = pytest.importorskip("torchvision")
    g = torch.Generator().manual_seed(0)
    features = torch.randn(4, 3, 16, 16, generator=g, requires_grad=True)
    corner = torch.rand(40, 2, generator=g) * 70 - 3
    rois = torch.cat([torch.randint(0, 4, (40, 1), generator=g).float(), corner,
                      corner + torch.rand(40, 2, generator=g) * 30], 1)  # fmt: skip
    grad = torch.randn(40, 3, 7, 7, generator=g)
    for args in [(), (0.25,), (0.25, 2), (0.25, 1, True), (0.25, -1, True)]:
        ours, theirs = (
            roi_align(features, rois, (7, 7), *args),
            tv.ops.roi_align(features, rois, (7, 7), *args),
        )
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
        (g_ours,), (g_theirs,) = (torch.autograd.grad(o, features, grad) for o in (ours, theirs))
        torch.testing.assert_close(g_ours, g_theirs, atol=1e-4, rtol=1e-5)


def test_roi_align_of_a_linear_ramp_is_the_ramp_at_the_bin_centres():
    """Bilinear interpolation reproduces a linear function exactly, so each bin's mean is the
    ramp's value at the bin's centre (aligned: pixel k's value sits at k + 0.5)."""
    H, W = 16, 20
    ramp = (2 * torch.arange(W, dtype=torch.float64) + 0.5)[None, None, None].expand(1, 1, H, W)  # 2x + 0.5
    out = roi_align(
        ramp.contiguous(),
        torch.tensor([[0, 3.0, 2.0, 15.0, 10.0]], dtype=torch.float64),
        (2, 4),
        aligned=True,
    )
    centres = 3.0 + (torch.arange(4, dtype=torch.float64) + 0.5) * 3.0 - 0.5  # pixel index coordinates
    torch.testing.assert_close(out[0, 0], (2 * centres + 0.5).expand(2, 4))


def test_anchors_tile_the_cells_with_the_requested_areas_and_ratios():
    a = anchors((3, 4), stride=8, sizes=(16.0, 32.0), ratios=(0.5, 1.0, 2.0))
    assert a.shape == (3 * 4 * 6, 4)
    w, h = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    torch.testing.assert_close(w * h, torch.tensor([16.0**2] * 3 + [32.0**2] * 3).repeat(12))
    torch.testing.assert_close(h / w, torch.tensor([0.5, 1.0, 2.0] * 2).repeat(12))
    centres = ((a[:, :2] + a[:, 2:]) / 2).reshape(3, 4, 6, 2)
    torch.testing.assert_close(centres[2, 1, 0], torch.tensor([12.0, 20.0]))  # cell (i 2, j 1)
    clipped = clip_boxes(a, 24, 32)
    assert clipped[:, 0::2].min() >= 0 and clipped[:, 0::2].max() <= 32 and clipped[:, 1::2].max() <= 24


def _match_by_hand(iou, high, low, low_quality):
    G, N = len(iou), len(iou[0])
    matches = []
    for n in range(N):
        column = [iou[g][n] for g in range(G)]
        best = max(column) if G else -1.0
        g_best = column.index(best) if G else -1  # the first of equal maxima, as torch.max
        matches.append(g_best if best >= high else BACKGROUND if best < low else BETWEEN)
        if low_quality and any(iou[g][n] == max(iou[g]) > 0 for g in range(G)):
            matches[-1] = g_best
    return matches


@pytest.mark.parametrize("low_quality", [False, True])
def test_match_boxes_follows_the_thresholds_and_keeps_each_ground_truths_best(low_quality):
    """Against a loop, on IoUs in steps of 0.1 (ties, values exactly at the thresholds), with a
    padding row at -1 and a ground truth that overlaps nothing."""
    g = torch.Generator().manual_seed(0)
    iou = torch.randint(0, 9, (2, 5, 40), generator=g).double() / 10
    iou[..., :15] = torch.randint(0, 4, (2, 5, 15), generator=g).double() / 10  # some below low
    iou[0, 3] = -1.0  # padding
    iou[1, 4] = 0.0  # overlaps nothing: matches nothing
    got = match_boxes(iou, high=0.7, low=0.3, low_quality=low_quality)
    assert got.shape == (2, 40)
    for i in range(2):
        assert got[i].tolist() == _match_by_hand(iou[i].tolist(), 0.7, 0.3, low_quality)
    assert (got == BETWEEN).any() and (got == BACKGROUND).any()
    assert match_boxes(iou[:, :0], 0.7, 0.3).tolist() == [[BACKGROUND] * 40] * 2


def test_iou_broadcasts_over_leading_dimensions():
    g = torch.Generator().manual_seed(3)
    a, b = _random_boxes(30, g).reshape(3, 10, 4), _random_boxes(15, g).reshape(3, 5, 4)
    for f in (box_iou, generalized_box_iou):
        torch.testing.assert_close(f(a, b), torch.stack([f(a[i], b[i]) for i in range(3)]))
        torch.testing.assert_close(f(a, b[0]), torch.stack([f(a[i], b[0]) for i in range(3)]))


def test_crop_and_resize_is_roi_align_with_each_box_on_its_own_image():
    from deepzoo.ops.boxes import crop_and_resize

    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 20, 24, generator=g, dtype=torch.float64)
    corner = torch.rand(6, 2, generator=g, dtype=torch.float64) * 18 - 2  # some boxes cross the border
    boxes = torch.cat([corner, corner + 1 + torch.rand(6, 2, generator=g, dtype=torch.float64) * 10], 1)
    rois = torch.cat([torch.arange(6.0, dtype=torch.float64)[:, None], boxes], 1)
    expected = roi_align(images[:, None], rois, (7, 7), 1.0, sampling_ratio=2, aligned=True)[:, 0]
    torch.testing.assert_close(crop_and_resize(images, boxes, 7), expected, rtol=0, atol=1e-12)


def test_a_pasted_box_of_ones_is_its_bilinear_read_pixel_by_pixel():
    """paste_masks reads mask cell k (centre k + 0.5) bilinearly, zeros beyond the border. For a
    mask that is 1 on the cells [a, b) of each axis, the read at mask coordinate u is the tent
    clamp(min(u - a + 1/2, b + 1/2 - u), 0, 1) along each axis, and the pasted value their product,
    with u = (j + 0.5 - x1) / (x2 - x1) M for pixel (i, j) (v alike). Checked by brute force for a
    full mask of ones (1 where the centre is half a cell inside every edge; thresholded at 0.5 it
    covers the centres inside the box but for the corners, where the two blends multiply below
    0.5) and one whose left half is 1, boxes inside and across the border."""
    from deepzoo.ops.boxes import paste_masks

    g = torch.Generator().manual_seed(1)
    corner = torch.rand(8, 2, generator=g) * 30 - 4
    boxes = torch.cat([corner, corner + 2 + torch.rand(8, 2, generator=g) * 14], 1).double()
    ones = torch.ones(8, 28, 28, dtype=torch.float64)
    half = ones.clone()
    half[..., 14:] = 0

    def tent(u, a, b):
        return min(max(min(u - a + 0.5, b + 0.5 - u), 0.0), 1.0)

    inside_count = 0
    for mask, (a_x, b_x) in ((ones, (0, 28)), (half, (0, 14))):
        pasted = paste_masks(mask, boxes, 32, 36)
        for d, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
            for i in range(32):
                for j in range(36):
                    u, v = (j + 0.5 - x1) / (x2 - x1) * 28, (i + 0.5 - y1) / (y2 - y1) * 28
                    expected = tent(u, a_x, b_x) * tent(v, 0, 28)
                    assert abs(pasted[d, i, j].item() - expected) < 1e-9, (d, i, j)
                    centre_inside = 0.5 <= u <= 27.5 and 0.5 <= v <= 27.5  # half a cell in from each edge
                    if mask is ones and centre_inside:
                        inside_count += 1
                        assert pasted[d, i, j].item() > 1 - 1e-9
    assert inside_count > 0  # the boxes cover pixel centres (the check above is not vacuous)
    assert paste_masks(torch.zeros(0, 28, 28), torch.zeros(0, 4), 5, 5).shape == (0, 5, 5)
