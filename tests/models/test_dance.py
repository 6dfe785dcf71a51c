"""The motion VQ-VAE (Bailando's choreographic memory): body parts, shapes, losses, learning."""

from dataclasses import replace

import pytest
import torch

from deepzoo.models.dance import MotionVQVAE, MotionVQVAEConfig, body_parts, temporal_l1

SMALL = MotionVQVAEConfig(downsample=2, hidden=32, num_codes=32, code_dim=8)


def test_the_body_parts_cover_every_motion_value_once():
    upper, lower = body_parts(True)
    assert len(upper) == 45 and len(lower) == 30
    assert sorted(upper + lower) == list(range(75))
    assert {72, 73, 74} <= set(lower) and {0, 1, 2} <= set(lower)  # root translation and orientation
    assert body_parts(False) == [list(range(75))]


def test_temporal_l1_differences_along_time():
    x = torch.tensor([[[0.0], [1.0], [4.0], [9.0]]])
    y = torch.zeros_like(x)
    assert temporal_l1(x, y, 0).item() == pytest.approx(14 / 4)
    assert temporal_l1(x, y, 1).item() == pytest.approx((1 + 3 + 5) / 3)
    assert temporal_l1(x, y, 2).item() == pytest.approx(2.0)


@pytest.mark.parametrize("split", [True, False])
def test_codes_and_reconstructions_have_the_documented_shapes(split):
    torch.manual_seed(0)
    model = MotionVQVAE(replace(SMALL, split_body=split)).eval()
    motion = torch.randn(3, 32, 75)
    codes = model.encode(motion)
    assert codes.shape == (3, 2 if split else 1, 8) and codes.max() < 32
    assert model.decode(codes).shape == motion.shape
    with pytest.raises(ValueError, match="divisible"):
        model.encode(torch.randn(1, 30, 75))


def test_normalization_is_undone_by_decode():
    torch.manual_seed(0)
    model = MotionVQVAE(SMALL)
    motion = torch.randn(4, 16, 75) * 3 + 5
    model.fit_normalization(motion)
    torch.testing.assert_close(model.mean, motion.reshape(-1, 75).mean(0), rtol=1e-4, atol=1e-4)
    model.eval()
    decoded = model.decode(model.encode(motion))
    # an untrained decoder outputs about 0 in standardized units: about the mean in data units
    assert (decoded - motion.reshape(-1, 75).mean(0)).abs().mean() < (motion - 5).abs().mean()


def _dance(seconds: float = 4.0) -> torch.Tensor:
    from deepzoo.data.synthetic_dance import make_song

    song = make_song(seed=7, genre=1, seconds=seconds)
    return torch.from_numpy(song.motion[: int(seconds * 60) // 16 * 16]).float()[None]


def test_a_short_run_reconstructs_its_dance_better_than_the_mean_pose():
    torch.manual_seed(0)
    motion = _dance()
    model = MotionVQVAE(SMALL)
    model.fit_normalization(motion)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(150):
        out = model.loss({"motion": motion})
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
    error = (model.eval().reconstruct(motion) - motion).abs().mean()
    mean_pose = (motion.mean(1, keepdim=True) - motion).abs().mean()
    assert error < 0.5 * mean_pose


def test_the_loss_adds_its_weighted_terms():
    torch.manual_seed(0)
    config = replace(SMALL, velocity_weight=0.3, acceleration_weight=2.0)
    model = MotionVQVAE(config).eval()
    out = model.loss({"motion": torch.randn(2, 16, 75)})
    vq = config.beta * out["commit"] * model.parts  # EMA codebooks: only the commitment, summed over parts
    expected = out["position"] + 0.3 * out["velocity"] + 2.0 * out["acceleration"] + vq
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["velocity"] > 0 and out["acceleration"] > out["velocity"]  # white noise: |D^2| > |D| > 0


def _dance_gpt(block: int = 121, split: bool = True):
    from deepzoo.models.dance import DanceGPT, DanceGPTConfig
    from deepzoo.models.gpt import GPTConfig

    torch.manual_seed(0)
    vqvae = MotionVQVAE(replace(SMALL, split_body=split)).eval()
    gpt = GPTConfig(vocab_size=0, block_size=block, layers=1, heads=2, dim=16, positions="learned")
    return DanceGPT(DanceGPTConfig(gpt=gpt, music_dim=6), vqvae)


def test_the_sequence_takes_the_parts_of_each_step_in_turn():
    model = _dance_gpt()
    codes = torch.tensor([[[1, 2, 3], [4, 5, 6]]])  # (B, P, T')
    assert model.sequence(codes).tolist() == [[1, 32 + 4, 2, 32 + 5, 3, 32 + 6]]
    assert model.start == 64


def test_the_loss_scores_each_token_among_its_parts_codes():
    model = _dance_gpt()
    motion, music = torch.randn(2, 16, 75), torch.randn(2, 16, 6)
    s = model.sequence(model.vqvae.encode(motion))
    inputs = torch.cat([torch.full((2, 1), model.start), s[:, :-1]], 1)
    logits = model.gpt(inputs, extra=model.conditioning(model.music_steps(music), 0, s.shape[1]))
    expected = 0.0
    for i in range(s.shape[1]):
        part = i % 2
        allowed = logits[:, i, part * 32 : (part + 1) * 32]
        expected += torch.nn.functional.cross_entropy(allowed, s[:, i] - part * 32) / s.shape[1]
    assert model.loss({"motion": motion, "music": music})["loss"].item() == pytest.approx(
        expected.item(), rel=1e-5
    )


def test_a_code_sees_the_music_of_its_own_step_and_before_only():
    model = _dance_gpt()
    motion, music = torch.randn(1, 16, 75), torch.randn(1, 16, 6)
    s = model.sequence(model.vqvae.encode(motion))
    inputs = torch.cat([torch.full((1, 1), model.start), s[:, :-1]], 1)

    def logits(m):
        return model.gpt(inputs, extra=model.conditioning(model.music_steps(m), 0, s.shape[1]))

    changed = music.clone()
    changed[:, 8:12] += 3.0  # the frames of code step 2 (4 frames per code)
    a, b = logits(music), logits(changed)
    assert torch.equal(a[:, :4], b[:, :4])  # tokens of steps 0 and 1
    assert not torch.allclose(a[:, 4:], b[:, 4:])


@pytest.mark.parametrize("block", [121, 5])  # 5: the window slides (start + 2 steps of 2 parts)
def test_generation_with_the_cache_equals_generation_without(block):
    model = _dance_gpt(block)
    music = torch.randn(3, 32, 6)
    cached = model.generate_codes(music, torch.Generator().manual_seed(1), use_cache=True)
    plain = model.generate_codes(music, torch.Generator().manual_seed(1), use_cache=False)
    assert cached.shape == (3, 2, 8) and torch.equal(cached, plain)
    assert 0 <= cached.min() and cached.max() < 32
    assert model.generate(music, torch.Generator().manual_seed(1)).shape == (3, 32, 75)


def test_a_sliding_window_always_begins_at_a_code_step():
    """Training sequences start with the start token, then the upper body's code of a step; past
    the context the window [start, s_first .. s_(i-1)] keeps that: first is a multiple of P."""
    model = _dance_gpt(block=7)
    lengths = []
    forward = model.gpt.forward

    def spy(tokens, caches=None, extra=None):
        lengths.append(tokens.shape[1])
        return forward(tokens, caches, extra)

    model.gpt.forward = spy
    model.generate_codes(torch.randn(1, 40, 6), torch.Generator().manual_seed(0), use_cache=False)
    firsts = [i - (length - 1) for i, length in enumerate(lengths)]
    assert len(lengths) == 20 and max(lengths) <= 7 and min(firsts) == 0
    assert all(first % 2 == 0 for first in firsts) and max(firsts) > 0


def test_the_actor_critics_view_scores_the_codes_the_policy_samples():
    """sample (step by step, cached) and action_logits (one pass) are the same policy: at a
    temperature near 0 each sampled code is the argmax of its position's logits, and the sample
    is in sequence order (part-local ids), as the reward reads it."""
    model = _dance_gpt()
    with torch.no_grad():
        for p in model.gpt.parameters():
            p.normal_(0.0, 0.5)  # peaked logits: no near-ties for the argmax
    music = torch.randn(4, 32, 6)
    actions = model.sample({"music": music}, temperature=1e-4)
    features, logits = model.action_logits({"music": music}, actions)
    assert actions.shape == (4, 16) and logits.shape == (4, 16, 32) and features.shape == (4, 16, 16)
    assert torch.equal(logits.argmax(-1), actions)
    codes = model.generate_codes(music, temperature=1e-4)
    assert torch.equal(codes.transpose(1, 2).flatten(1), actions)
