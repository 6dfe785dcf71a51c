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
    x = (motion - model.mean) / model.std  # each part's codes are its forward's
    for i, (dims, part) in enumerate(zip(model.part_dims, model.part_vqvaes)):
        assert torch.equal(codes[:, i], part(x[..., dims])[1].codes)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert torch.equal(model.train().encode(motion), codes)  # training mode updates nothing
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    model.eval()
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


def test_the_context_must_hold_the_start_token_and_one_code_step():
    from deepzoo.models.dance import DanceGPT

    model = _dance_gpt(block=3)  # start + the two parts of one step
    with pytest.raises(ValueError, match="block_size"):
        DanceGPT(replace(model.config, gpt=replace(model.config.gpt, block_size=2)), model.vqvae)


def test_inputs_of_the_wrong_shape_are_clear_errors():
    """Codes must have one row per part; one pass of the actor-critic's view holds at most
    block_size tokens (exactly block_size is fine); generation needs a code step of music."""
    model = _dance_gpt(block=9)  # start + 4 steps of 2 parts
    for parts in (1, 3):
        with pytest.raises(ValueError, match="need codes"):
            model.vqvae.decode(torch.zeros(2, parts, 3, dtype=torch.long))
    music = torch.randn(2, 20, 6)
    model.action_logits({"music": music}, torch.zeros(2, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="exceed the context of 9"):
        model.action_logits({"music": music}, torch.zeros(2, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 4 frames"):
        model.generate_codes(torch.randn(2, 3, 6))


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
    model = model.double()  # a float64 model keeps its loss in float64
    assert model.loss({"motion": motion.double(), "music": music.double()})["loss"].dtype == torch.float64


def test_the_music_of_a_code_step_is_the_mean_of_its_frames_standardized():
    """m_j = mean over the 4 frames of step j of (music - mean) / std, the statistics fitted on the
    training music; a tail shorter than a step is dropped."""
    model = _dance_gpt()
    g = torch.Generator().manual_seed(0)
    model.fit_normalization(torch.randn(5, 16, 6, generator=g) * 3 + 2)
    music = torch.randn(2, 18, 6, generator=g)
    steps = model.music_steps(music)
    assert steps.shape == (2, 4, 6)
    standardized = (music - model.music_mean) / model.music_std
    for j in range(4):
        torch.testing.assert_close(steps[:, j], standardized[:, 4 * j : 4 * j + 4].mean(1))


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


def test_training_reads_a_random_window_at_a_code_step_and_evaluation_the_whole_dance():
    """In training the VQ-VAE encodes window_steps code steps (here 3 x 4 frames) starting at a
    multiple of frames_per_code, offsets drawn anew each call, the last one included (6 steps: 4
    offsets, each missed by 60 draws with probability 0.75^60 = 3e-8); in evaluation the whole
    sequence. The VQ-VAE stays frozen and in eval mode."""
    model = _dance_gpt()
    model.config = replace(model.config, window_steps=3)
    motion, music = torch.randn(2, 24, 75), torch.randn(2, 24, 6)
    encoded = []
    encode = model.vqvae.encode

    def recording_encode(motion):
        encoded.append(motion)
        return encode(motion)

    model.vqvae.encode = recording_encode
    model.train()
    for _ in range(60):
        model.loss({"motion": motion, "music": music})
    starts = set()
    for window in encoded:
        assert window.shape == (2, 12, 75)
        starts.add(next(f for f in range(13) if torch.equal(motion[:, f : f + 12], window)))
    assert starts == {0, 4, 8, 12}
    assert not model.vqvae.training and not any(p.requires_grad for p in model.vqvae.parameters())
    encoded.clear()
    model.eval().loss({"motion": motion, "music": music})
    assert torch.equal(encoded[0], motion)


def test_the_residual_blocks_see_nine_frames_and_every_level_has_one():
    """Dilations 1 and 3 of 3-tap convolutions: an output frame depends on the 1 + 2 + 6 = 9
    frames around it. Each of the encoder's downsample levels ends in such a block, each decoder
    level starts with one and upsamples by nearest neighbour."""
    from torch import nn

    from deepzoo.models.dance import ResidualBlock1d

    torch.manual_seed(0)
    block = ResidualBlock1d(4)
    for conv in block.modules():
        if isinstance(conv, nn.Conv1d):
            nn.init.constant_(conv.bias, 10.0)  # every ReLU open (the input is positive too)
    x = (torch.rand(1, 4, 31) + 0.1).requires_grad_()
    block(x)[0, :, 15].sum().backward()
    seen = torch.nonzero(x.grad[0].abs().sum(0) > 0).flatten()
    assert seen.tolist() == list(range(11, 20))
    part = MotionVQVAE(SMALL).part_vqvaes[0]
    for net in (part.encoder, part.decoder):
        assert sum(isinstance(m, ResidualBlock1d) for m in net.modules()) == SMALL.downsample
    assert all(m.mode == "nearest" for m in part.decoder.modules() if isinstance(m, nn.Upsample))


def test_each_part_has_the_documented_layers():
    """docs/dance.md: conv 3, ReLU, `downsample` x [conv 4 stride 2, ReLU, residual block], conv 3
    to D; the decoder mirrors it: conv 3, `downsample` x [residual block, nearest x2, conv 3],
    ReLU, conv 3 back to the part's values."""
    from torch import nn

    from deepzoo.models.dance import ResidualBlock1d

    def layout(net):
        out = []
        for m in net:
            if isinstance(m, nn.Conv1d):
                out.append(("conv", m.kernel_size[0], m.stride[0], m.in_channels, m.out_channels))
            else:
                out.append(type(m).__name__)
        return out

    config = replace(SMALL, downsample=3)
    part = MotionVQVAE(config).part_vqvaes[1]  # the lower body: 30 values
    h, d = config.hidden, config.code_dim
    down = [("conv", 4, 2, h, h), "ReLU", ResidualBlock1d.__name__]
    up = [ResidualBlock1d.__name__, "Upsample", ("conv", 3, 1, h, h)]
    assert layout(part.encoder) == [("conv", 3, 1, 30, h), "ReLU", *down * 3, ("conv", 3, 1, h, d)]
    assert layout(part.decoder) == [("conv", 3, 1, d, h), *up * 3, "ReLU", ("conv", 3, 1, h, 30)]


def test_the_quantizer_settings_reach_every_part_and_a_loss_trained_codebook_is_its_own_group():
    """beta, EMA and the dead-code threshold are each part's quantizer's; with EMA the codebooks
    have no trainable parameters, without it they form the "codebook" group (the trainer's
    `named_groups`: disjoint groups covering every trainable parameter)."""
    from deepzoo.train.step import named_groups

    config = replace(SMALL, beta=0.02, dead_threshold=0.5)
    for q in (part.quantizer for part in MotionVQVAE(config).part_vqvaes):
        assert (q.beta, q.ema, q.dead_threshold, q.num_codes, q.dim) == (0.02, True, 0.5, 32, 8)
    assert set(named_groups(MotionVQVAE(config))) == {"model"}
    model = MotionVQVAE(replace(config, ema=False))
    groups = named_groups(model)
    codebooks = {id(part.quantizer.codebook) for part in model.part_vqvaes}
    assert set(groups) == {"model", "codebook"}
    assert {id(p) for p in groups["codebook"]} == codebooks
    assert not codebooks & {id(p) for p in groups["model"]}


def test_the_policy_samples_every_code_whatever_the_configured_top_k():
    """The actor-critic's policy is softmax(logits / T) over all of a part's codes: with the
    config's top_k = 1 (greedy generation) its samples still leave the argmax (32 codes of an
    untrained model, near uniform: all 64 draws the argmax has probability ~ 32^-64)."""
    model = _dance_gpt()
    model.config = replace(model.config, top_k=1)
    music = torch.randn(4, 32, 6)
    actions = model.sample({"music": music}, temperature=1.0, generator=torch.Generator().manual_seed(0))
    _, logits = model.action_logits({"music": music}, actions)
    assert not torch.equal(logits.argmax(-1), actions)
    greedy = model.generate_codes(music).transpose(1, 2).flatten(1)  # top_k 1: the argmax at each step
    assert torch.equal(model.action_logits({"music": music}, greedy)[1].argmax(-1), greedy)
    model.config = replace(model.config, top_k=0)  # an explicit top_k overrides the config's
    greedy = model.generate_codes(music, top_k=1).transpose(1, 2).flatten(1)
    assert torch.equal(model.action_logits({"music": music}, greedy)[1].argmax(-1), greedy)


def test_the_defaults_are_the_ones_the_docs_state():
    """docs/dance.md: K = 256 codes of D = 64, one per 8 frames, VQ-VAE's commitment beta = 0.25 (Bailando's
    config: 0.02) and the EMA decay 0.99 (Bailando's l_mu), w_v = w_a = 1."""
    config = MotionVQVAEConfig()
    assert (config.num_codes, config.code_dim, 2**config.downsample, config.beta) == (256, 64, 8, 0.25)
    assert (config.velocity_weight, config.acceleration_weight) == (1.0, 1.0)
    quantizer = MotionVQVAE(config).part_vqvaes[0].quantizer
    assert quantizer.ema and quantizer.decay == 0.99
