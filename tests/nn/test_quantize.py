import math

import pytest
import torch

from deepzoo.nn.quantize import Quantized, VectorQuantizer, kmeans, nearest_code, perplexity


def _quantizer(**kw) -> VectorQuantizer:
    torch.manual_seed(0)
    return VectorQuantizer(**({"num_codes": 16, "dim": 4} | kw))


def test_nearest_code_equals_brute_force_cdist():
    torch.manual_seed(0)
    x, codebook = torch.randn(3000, 8), torch.randn(100, 8)
    expected = torch.cdist(x.double(), codebook.double()).argmin(dim=1)
    assert torch.equal(nearest_code(x, codebook), expected)


def test_codes_are_the_same_under_bf16_autocast():
    vq = _quantizer(num_codes=64, dim=16).eval()
    z = torch.randn(4, 16, 5, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vq(z.bfloat16())
    assert torch.equal(out.codes, vq(z.bfloat16().float()).codes)
    assert out.z_q.dtype == torch.bfloat16


@pytest.mark.parametrize("shape", [(2, 4, 3, 5), (2, 7, 4), (9, 4)])
def test_layouts_quantize_each_vector_to_its_code(shape):
    vq = _quantizer().eval()
    z = torch.randn(shape)
    out = vq(z)
    vectors = z.permute(0, 2, 3, 1).reshape(-1, 4) if z.ndim == 4 else z.reshape(-1, 4)
    assert torch.equal(out.codes.flatten(), nearest_code(vectors, vq.codebook))
    assert out.z_q.shape == z.shape
    torch.testing.assert_close(vq.lookup(out.codes), out.z_q)  # z + sg[e - z] = e up to rounding


@pytest.mark.parametrize("shape", [(2, 4, 3, 5), (2, 7, 4), (9, 4)])
@pytest.mark.parametrize("options", [{}, {"normalize": True}, {"ema": False, "dead_threshold": 2.0}])
def test_nearest_gives_forwards_codes_and_leaves_the_quantizer_as_it_was(shape, options):
    """Even in training mode (where forward updates the EMA codebook, restarts dead codes and
    starts k-means): `nearest` only reads."""
    vq = _quantizer(**({"dead_threshold": 2.0} | options))
    z = torch.randn(shape)
    state = {k: v.clone() for k, v in vq.state_dict().items()}
    codes = vq.train().nearest(z)
    assert all(torch.equal(v, state[k]) for k, v in vq.state_dict().items())
    assert torch.equal(codes, vq.eval()(z).codes)
    fresh = _quantizer(kmeans_init=True).train()
    fresh.nearest(torch.randn(9, 4))
    assert not bool(fresh.initialized)


def test_wrong_channel_count_is_a_clear_error():
    with pytest.raises(ValueError, match="expected 4 channels"):
        _quantizer()(torch.randn(2, 5, 3, 3))


def test_straight_through_gradient_reaches_the_encoder_unchanged():
    vq = _quantizer(ema=False).eval()
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    upstream = torch.randn(2, 4, 3, 3)
    (vq(z).z_q * upstream).sum().backward()
    assert torch.equal(z.grad, upstream)


@pytest.mark.parametrize("beta", [0.25, 2.0])
def test_beta_weights_the_commitment_and_never_the_codebook_term(beta):
    """dL/dz = beta * 2 (z - e) / n (commitment only); dL/de = 2 (e - z) / n summed per code
    (codebook term only, whatever beta)."""
    vq = _quantizer(ema=False, beta=beta).eval()
    z = torch.randn(30, 4, requires_grad=True)
    out = vq(z)
    out.loss.backward()
    e = vq.codebook.detach()[out.codes]
    n = z.numel()
    torch.testing.assert_close(z.grad, beta * 2 * (z.detach() - e) / n)
    expected = torch.zeros_like(vq.codebook).index_add_(0, out.codes, 2 * (e - z.detach()) / n)
    torch.testing.assert_close(vq.codebook.grad, expected)


def test_each_term_sends_its_gradient_to_one_side_only():
    vq = _quantizer(ema=False).eval()
    z = torch.randn(30, 4, requires_grad=True)
    vq(z).codebook.backward()
    assert z.grad is None and vq.codebook.grad.abs().sum() > 0
    vq.codebook.grad = None
    vq(z).commit.backward()
    assert vq.codebook.grad is None and z.grad.abs().sum() > 0


def test_ema_codebook_gets_no_gradient_and_its_loss_is_beta_commit():
    vq = _quantizer(ema=True, beta=0.5).eval()
    z = torch.randn(30, 4, requires_grad=True)
    out = vq(z)
    assert not vq.codebook.requires_grad
    torch.testing.assert_close(out.loss, 0.5 * out.commit)


def test_ema_update_equals_a_hand_computation():
    decay, eps = 0.5, 0.1
    vq = VectorQuantizer(2, 1, ema=True, decay=decay, eps=eps)
    vq.codebook.copy_(torch.tensor([[0.0], [10.0]]))
    vq.code_sum.copy_(vq.codebook)
    vq.code_count.fill_(1.0)
    vq.train()(torch.tensor([[1.0], [2.0], [3.0], [12.0]]))
    # code 0 takes 1, 2, 3 (n=3, sum 6); code 1 takes 12 (n=1, sum 12)
    counts = torch.tensor([0.5 * 1 + 0.5 * 3, 0.5 * 1 + 0.5 * 1])  # [2, 1]
    sums = torch.tensor([0.5 * 0 + 0.5 * 6, 0.5 * 10 + 0.5 * 12])  # [3, 11]
    total = counts.sum()
    smoothed = (counts + eps) / (total + 2 * eps) * total
    torch.testing.assert_close(vq.code_count, counts)
    torch.testing.assert_close(vq.codebook.squeeze(1), sums / smoothed)


def test_unused_code_is_restarted_from_an_encoder_output():
    vq = VectorQuantizer(3, 2, decay=0.9, dead_threshold=0.95)
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [1e3, 1e3]]))  # code 2 is never nearest
    vq.code_sum.copy_(vq.codebook)
    z = torch.rand(64, 2)
    out = vq.train()(z)
    assert (out.codes != 2).all()
    fresh = vq.codebook[2]
    assert torch.isclose(z, fresh).all(dim=1).any(), "the dead code should now be one of the batch's vectors"
    assert vq.code_count[2] == pytest.approx(0.95)
    live = _quantizer(dead_threshold=0.0).train()
    before = live.codebook.clone()
    live(torch.full((8, 4), 50.0))  # every vector takes one code; no restart without a threshold
    assert torch.isclose(live.codebook, before).all(dim=1).sum() == 15


def test_loss_mode_restarts_too_and_keeps_its_parameter():
    vq = VectorQuantizer(3, 2, ema=False, decay=0.9, dead_threshold=0.95)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [1e3, 1e3]]))
    vq.train()(torch.rand(64, 2))
    assert vq.codebook[2].abs().max() <= 1.0
    assert isinstance(vq.codebook, torch.nn.Parameter)


@pytest.mark.parametrize("ema", [True, False])
def test_training_quantizes_with_the_codebook_that_chose_the_codes(ema):
    """The update after the assignment (EMA step, restart of code 2) must not reach this batch's
    z_q or its commitment loss: z_q == codebook_before[codes] (the references' convention)."""
    vq = VectorQuantizer(3, 2, ema=ema, decay=0.5, dead_threshold=0.95)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [1e3, 1e3]]))
    if ema:
        vq.code_sum.copy_(vq.codebook)
    before = vq.codebook.detach().clone()
    z = torch.rand(64, 2, generator=torch.Generator().manual_seed(0))
    out = vq.train()(z)
    assert not torch.equal(vq.codebook[2], before[2])  # code 2 was restarted during this call
    torch.testing.assert_close(out.z_q, before[out.codes], rtol=0, atol=1e-6)
    torch.testing.assert_close(out.commit, ((z - before[out.codes]) ** 2).mean())
    if ema:
        assert not torch.allclose(vq.codebook[:2], before[:2])  # the EMA did move the used codes


def test_a_code_chosen_in_this_batch_is_not_restarted():
    vq = VectorQuantizer(2, 1, ema=True, decay=0.9, dead_threshold=5.0)
    vq.codebook.copy_(torch.tensor([[0.0], [10.0]]))
    vq.code_sum.copy_(vq.codebook)  # counts 1 < 5: both codes are "dead" by their EMA count
    vq.train()(torch.tensor([[0.1], [0.2], [9.0]]))
    # code 1 took 9.0: EMA sum 0.9 * 10 + 0.1 * 9, count 0.9 + 0.1 = 1 -> stays near 9.9, not a batch vector
    assert vq.codebook[1].item() == pytest.approx(9.9, rel=0.01)


def test_a_restarted_code_keeps_its_new_vector_on_the_next_step():
    """Restart resets the code's running sum with its count: an EMA step in which nothing
    chooses it leaves it where it was restarted (up to Laplace smoothing), not back at 1e3."""
    torch.manual_seed(0)
    vq = VectorQuantizer(3, 2, decay=0.9, dead_threshold=0.95, eps=1e-5)
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [1e3, 1e3]]))
    vq.code_sum.copy_(vq.codebook)
    vq.train()(torch.rand(64, 2))
    fresh = vq.codebook[2].clone()
    vq.dead_threshold = 0.0  # no second restart: watch the EMA alone
    # a batch sitting exactly on code 0, so that nothing chooses the restarted code 2 (a random
    # batch near the origin picked it for some seeds, and then it rightly moved)
    out = vq(vq.codebook[0].expand(64, 2).clone())
    assert (out.codes == 0).all()
    torch.testing.assert_close(vq.codebook[2], fresh, rtol=1e-3, atol=1e-3)


def test_perplexity_is_exp_entropy_of_usage():
    codes = torch.tensor([0, 0, 1, 2])
    p = torch.tensor([0.5, 0.25, 0.25])
    assert perplexity(codes, 8).item() == pytest.approx(math.exp(-(p * p.log()).sum().item()))
    assert perplexity(torch.arange(16), 16).item() == pytest.approx(16.0)
    assert perplexity(torch.zeros(10, dtype=torch.long), 16).item() == pytest.approx(1.0)
    vq = _quantizer().eval()
    out = vq(torch.randn(200, 4))
    assert out.perplexity.item() == pytest.approx(perplexity(out.codes, 16).item())
    assert out.usage.item() == pytest.approx(out.codes.unique().numel() / 16)


def test_kmeans_lowers_inertia_to_a_fixed_point_and_initializes_the_codebook():
    torch.manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = (centers[:, None] + 0.1 * torch.randn(3, 100, 2)).reshape(-1, 2)

    def inertia(centroids):
        return torch.cdist(x, centroids).min(dim=1).values.square().sum()

    start = kmeans(x, 3, iters=0, generator=torch.Generator().manual_seed(3))
    found = kmeans(x, 3, iters=20, generator=torch.Generator().manual_seed(3))
    assert inertia(found) <= inertia(start)
    # a fixed point of Lloyd's step: each non-empty cluster's centroid is its mean (a cluster can
    # end empty when two starts fall in one blob, as at seed offset 12; it keeps its centroid,
    # tested below), and no centroid is NaN
    assign = nearest_code(x, found)
    assert torch.isfinite(found).all()
    for k in assign.unique().tolist():
        torch.testing.assert_close(found[k], x[assign == k].mean(dim=0))
    # the first training batch initializes the codebook by k-means (started from random rows, as
    # vector-quantize-pytorch does; two starts in one cluster end in a local optimum, so where the
    # codes land depends on the seed, but that they are the k-means of the batch does not)
    vq = VectorQuantizer(3, 2, kmeans_init=True, kmeans_iters=20).train()
    assert not bool(vq.initialized)
    state = torch.get_rng_state()
    expected = kmeans(x, 3, iters=20)
    torch.set_rng_state(state)
    vq(x)
    assert bool(vq.initialized)
    # equal up to fp32 summation order: a centroid averages up to 300 points of norm <= 10.5
    # (a relative error of up to 300 eps = 2e-5, 2e-4 absolute; seed offset 9 measured 3.8e-5)
    torch.testing.assert_close(vq.codebook, expected, rtol=2e-5, atol=2e-4)


def test_normalized_codes_pick_the_largest_cosine_and_stay_unit_length():
    torch.manual_seed(0)
    for ema in (True, False):
        vq = VectorQuantizer(num_codes=16, dim=4, normalize=True, ema=ema, dead_threshold=0.5)
        z = torch.randn(64, 4) * torch.rand(64, 1) * 10  # lengths must not matter
        out = vq.eval()(z)
        cosine = torch.nn.functional.normalize(z, dim=1) @ vq.codes().T
        assert torch.equal(out.codes, cosine.argmax(1))
        torch.testing.assert_close(out.z_q.norm(dim=1), torch.ones(64))
        unit = torch.nn.functional.normalize(z, dim=1)  # the commitment is measured between unit vectors
        torch.testing.assert_close(out.commit, (unit - vq.codes()[out.codes]).square().mean())
        vq.train()
        for _ in range(5):
            vq(torch.randn(64, 4))
        torch.testing.assert_close(vq.codes().norm(dim=1), torch.ones(16))
        if ema:
            torch.testing.assert_close(vq.codebook.norm(dim=1), torch.ones(16))
            continue
        # gradient mode: an optimizer step moves the learned rows off the sphere; the lookup must
        # still compare and return unit codes, the rows' directions
        with torch.no_grad():
            vq.codebook.mul_(torch.rand(16, 1) * 3 + 0.5)
        out = vq.eval()(z)
        directions = torch.nn.functional.normalize(vq.codebook.detach(), dim=1)
        assert torch.equal(out.codes, (torch.nn.functional.normalize(z, dim=1) @ directions.T).argmax(1))
        torch.testing.assert_close(out.z_q, directions[out.codes])
        torch.testing.assert_close(vq.lookup(out.codes), directions[out.codes])


def test_kmeans_starts_from_seeded_random_rows_and_an_empty_cluster_keeps_its_centroid():
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(1))
    start = torch.randperm(50, generator=torch.Generator().manual_seed(5))[:4]
    torch.testing.assert_close(kmeans(x, 4, iters=0, generator=torch.Generator().manual_seed(5)), x[start])
    # N >= k: k distinct rows (a repeated row would start a cluster that stays empty)
    grid = torch.arange(10.0).view(5, 2)
    for seed in range(10):
        drawn = kmeans(grid, 5, iters=0, generator=torch.Generator().manual_seed(seed))
        assert sorted(drawn[:, 0].tolist()) == [0.0, 2.0, 4.0, 6.0, 8.0]
    # k > N: rows are drawn with replacement, so some start twice; the copy that loses every tie
    # to its twin has an empty cluster and must keep its place (not move to 0, the empty mean)
    rows = torch.tensor([[1.0, 1.0], [5.0, 5.0]])
    centroids = kmeans(rows, 4, iters=3, generator=torch.Generator().manual_seed(0))
    assert all(any(torch.equal(c, r) for r in rows) for c in centroids)


def test_a_normalized_codebook_starts_on_the_unit_sphere_and_bad_sizes_are_refused():
    for ema in (True, False):
        torch.testing.assert_close(
            _quantizer(normalize=True, ema=ema).codebook.detach().norm(dim=1), torch.ones(16)
        )
    for kw, message in (
        (dict(num_codes=0), "num_codes >= 1"),
        (dict(dim=0), "dim >= 1"),
        (dict(decay=1.0), r"decay must be in \[0, 1\)"),
        (dict(decay=-0.1), r"decay must be in \[0, 1\)"),
    ):
        with pytest.raises(ValueError, match=message):
            _quantizer(**kw)


def test_kmeans_init_waits_for_a_training_batch():
    vq = _quantizer(kmeans_init=True).eval()
    before = vq.codebook.clone()
    vq(torch.randn(32, 4))
    assert not bool(vq.initialized) and torch.equal(vq.codebook, before)
    vq.train()(torch.randn(32, 4))
    assert bool(vq.initialized) and not torch.equal(vq.codebook, before)


def test_usage_counts_codes_chosen_at_least_once_and_a_normalized_kmeans_init_is_unit_length():
    vq = _quantizer(ema=False).eval()
    z = vq.codebook.detach()[[0, 3, 3, 7, 9, 9, 9]]  # four codes, two of them only once
    assert vq(z).usage.item() == 4 / 16
    # gradient mode, where no EMA step renormalizes the codes after the k-means start
    normalized = _quantizer(kmeans_init=True, normalize=True, ema=False).train()
    normalized(torch.randn(64, 4) * 5)
    torch.testing.assert_close(normalized.codebook.detach().norm(dim=1), torch.ones(16))


@pytest.mark.parametrize("beta", [0.25, 1.5])
def test_the_loss_trained_quantizer_is_diffusers_vector_quantizer_with_legacy_off(beta):
    """diffusers' (taming-transformers') VectorQuantizer given our codebook, in float64: the same
    codes, z_q, loss and gradients for z and the codebook with `legacy=False` (beta on the
    commitment, the VQ-VAE paper's). Its default `legacy=True`, which VQGAN's released models
    were trained with, puts beta on the codebook term instead: the same value (both terms are
    ||z - e||^2), but the gradients of beta times our loss at 1 / beta."""
    from diffusers.models.autoencoders.vae import VectorQuantizer as Theirs

    torch.manual_seed(0)
    z = torch.randn(2, 4, 3, 5, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 4, 3, 5, dtype=torch.float64)  # a downstream loss sum(w z_q)

    def ours(b: float) -> tuple[Quantized, torch.Tensor]:
        torch.manual_seed(1)  # the same codebook for every beta
        vq = VectorQuantizer(16, 4, beta=b, ema=False).double().eval()
        return vq(z), vq.codebook

    def gradients(loss: torch.Tensor, z_q: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad(loss + (z_q * weights).sum(), [z, codebook])

    out, codebook = ours(beta)
    for legacy in (False, True):
        theirs = Theirs(16, 4, beta=beta, legacy=legacy, sane_index_shape=True).double()
        theirs.embedding.weight.data.copy_(codebook.detach())
        z_q, loss, (_, _, codes) = theirs(z)
        assert torch.equal(codes, out.codes)
        torch.testing.assert_close(z_q, out.z_q, rtol=0, atol=0)
        torch.testing.assert_close(loss, out.loss, rtol=1e-12, atol=0)
        expected = gradients(loss, z_q, theirs.embedding.weight)
        if legacy:
            swapped, swapped_codebook = ours(1 / beta)
            got = gradients(beta * swapped.loss, swapped.z_q, swapped_codebook)
        else:
            got = gradients(out.loss, out.z_q, codebook)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-15)
