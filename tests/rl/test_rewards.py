"""The dance reward of the sequence actor-critic (the Beat Align Score of the decoded dance), and
the actor-critic raising it for a music-conditioned DanceGPT."""

import pytest
import torch
from torch import nn

from deepzoo.data.skeleton import forward_kinematics
from deepzoo.metrics.dance import relative_to_start
from deepzoo.metrics.retrieval import beat_align_score, kinetic_beats
from deepzoo.models.dance import DanceGPT, DanceGPTConfig, MotionVQVAE, MotionVQVAEConfig
from deepzoo.models.gpt import GPTConfig
from deepzoo.rl.rewards import BeatAlignReward
from deepzoo.rl.sequence import SequenceACConfig, SequenceActorCritic

SMALL = MotionVQVAEConfig(downsample=2, hidden=16, num_codes=8, code_dim=8)  # 4 frames a code step
FRAMES, STEPS, PARTS = 64, 16, 2


def _reward():
    torch.manual_seed(0)
    return BeatAlignReward(MotionVQVAE(SMALL))


def test_the_reward_is_the_beat_align_score_of_the_decoded_dance():
    reward = _reward()
    assert not any(m.training for m in reward.modules()), "built from a VQ-VAE in train mode"
    beats = torch.zeros(6, FRAMES + 8, dtype=torch.bool)  # longer than the dance: cut to its frames
    beats[:, 6::16] = True
    beats[:, FRAMES - 1] = True  # past the FRAMES - 1 frames of the speed curve: not read (Bailando)
    beats[5] = False  # a window without beats scores 0
    codes = torch.randint(8, (6, STEPS * PARTS), generator=torch.Generator().manual_seed(1))
    got = reward({"beats": beats}, codes)
    expected = []
    for joints, music in zip(forward_kinematics(reward.decode(codes)), beats[:, : FRAMES - 1]):
        dance = kinetic_beats(relative_to_start(joints))
        expected.append(beat_align_score(torch.nonzero(music).view(-1), dance))
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float32))
    assert got[5] == 0 and (got[:5] > 0).all()
    narrow = BeatAlignReward(reward.vqvae, sigma=1.0)({"beats": beats}, codes)  # sigma reaches the score
    expected = []
    for joints, music in zip(forward_kinematics(reward.decode(codes)), beats[:, : FRAMES - 1]):
        dance = kinetic_beats(relative_to_start(joints))
        expected.append(beat_align_score(torch.nonzero(music).view(-1), dance, sigma=1.0))
    torch.testing.assert_close(narrow, torch.tensor(expected, dtype=torch.float32))
    assert (narrow[:5] <= got[:5]).all() and (narrow[:5] < got[:5]).any()  # misses score lower


def test_the_digit_reward_is_the_probability_of_the_target_digit_of_the_decoded_image():
    from deepzoo.models.features import mnist_feature_net
    from deepzoo.models.vqvae import VQVAE, VQVAEConfig
    from deepzoo.rl.rewards import DigitReward

    torch.manual_seed(0)
    vqvae = VQVAE(VQVAEConfig(hidden=16, res_hidden=8, num_codes=16, code_dim=4))
    reward = DigitReward(vqvae, mnist_feature_net().train(), target=3)
    assert not any(m.training for m in reward.modules()), "built from networks in train mode"
    codes = torch.randint(16, (5, 49), generator=torch.Generator().manual_seed(1))
    images = vqvae.decode(codes.view(5, 7, 7))
    torch.testing.assert_close(reward({}, codes), mnist_feature_net()(images).softmax(-1)[:, 3])
    reward.double()  # float64 models score in float64, not rounded to float32
    exact = mnist_feature_net().double()(vqvae.decode(codes.view(5, 7, 7))).softmax(-1)[:, 3]
    torch.testing.assert_close(reward({}, codes), exact, rtol=1e-12, atol=0)
    assert not any(p.requires_grad for p in reward.parameters()) and not reward.train().training


def test_the_codes_are_read_in_the_dance_gpts_order():
    """codes (B, P T'): the parts of each step in turn, as DanceGPT writes them."""
    reward = _reward()
    codes = torch.randint(8, (2, PARTS, STEPS), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(reward.decode(codes.transpose(1, 2).flatten(1)), reward.vqvae.decode(codes))


class HoldOrMove(nn.Module):
    """A one-part 'VQ-VAE' whose codes mean something known: code 0 holds the pose for its 4
    frames, code 1 turns the left shoulder at a constant speed. A hold between moves is a minimum
    of the joint speed, hence a kinetic beat; the dance is on the beat when it holds there."""

    parts, num_codes, frames_per_code = 1, 2, 4

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        speed = codes[:, 0].float().repeat_interleave(self.frames_per_code, 1) * 0.05
        motion = torch.zeros(*speed.shape, 75)
        motion[..., 16 * 3 + 2] = speed.cumsum(1)
        return motion


def _beat_windows(batch, device):
    """One beat every 16 frames at a random phase; the music's first feature marks the beat frames."""
    n = int(batch["size"])
    beats = (torch.arange(FRAMES) - torch.randint(16, (n, 1))) % 16 == 0
    music = torch.zeros(n, FRAMES, 4)
    music[..., 0] = beats.float()
    return {"music": music.to(device), "beats": beats.to(device)}


@pytest.mark.seeds_covered
def test_actor_critic_raises_the_beat_alignment_of_a_music_conditioned_dance_gpt():
    """A random DanceGPT over HoldOrMove's codes scores BAS about 0.23. 30 actor-critic steps
    (64 windows each, no KL, Adam 3e-3) lift it by more than 0.15 for seeds 0-4 (measured on
    seeds 0-4 and 15-24: to 0.51-0.56): the policy learns to hold where the music has a beat."""
    for seed in range(5):
        torch.manual_seed(seed)
        gpt = GPTConfig(vocab_size=0, block_size=STEPS + 1, layers=1, heads=2, dim=16)
        policy = DanceGPT(DanceGPTConfig(gpt=gpt, music_dim=4), HoldOrMove())
        policy.fit_normalization(_beat_windows({"size": 256}, "cpu")["music"])
        reward = BeatAlignReward(HoldOrMove())
        model = SequenceActorCritic(policy, reward, _beat_windows, SequenceACConfig(kl_coef=0.0))
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
        torch.manual_seed(100 + seed)
        with torch.no_grad():
            before = model.terms(*model.rollout({"size": 256}))["reward"]
        for _ in range(30):
            terms = model.loss({"size": 64})
            opt.zero_grad()
            terms["loss"].backward()
            opt.step()
        torch.manual_seed(100 + seed)
        with torch.no_grad():
            after = model.terms(*model.rollout({"size": 256}))["reward"]
        assert after > before + 0.15, (seed, before.item(), after.item())
