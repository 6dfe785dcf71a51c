"""Our GAE and returns against Stable-Baselines3's `RolloutBuffer`, the reference most users know.

SB3 stores episode starts, not the two kinds of episode end: a step that ends an episode cuts the
advantage recursion whichever kind it is, and its collector folds a time-limit truncation into the
reward, r_t + gamma V(s_{t+1}) (the final observation's value), bootstrapping there. Fed that
way, its buffer's advantages are our GAE(lambda) with `terminated` and `truncated` kept apart, and
its TD(lambda) returns A + V are our GAE + V; with lambda = 1 they are our Monte-Carlo returns.
SB3 computes in float32: each step adds a few roundings (4 here) of quantities no larger than
max |A| + 3 M (M bounds the rewards and values), and the recursion carries earlier errors on
multiplied by gamma lambda, so they sum to at most 4 (max |A| + 3 M) 2^-24 / (1 - gamma lambda).
"""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import A2C
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn

from deepzoo.rl.actor_critic import A2CConfig, ActorCritic
from deepzoo.rl.returns import discounted_returns, gae

FLOAT32 = 2.0**-24
"""Relative rounding error of one float32 operation (half an ulp)."""


def _rollout(T: int, N: int, seed: int) -> dict[str, torch.Tensor]:
    """Float32-valued rewards and values (T, N); episode ends of both kinds at random steps, the
    last row included; next_values[t] = values[t + 1] inside an episode, the final observation's
    own value where one ends or the rollout does."""
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(T, N, generator=g)
    values = torch.randn(T, N, generator=g)
    end = torch.rand(T, N, generator=g)
    terminated, truncated = end < 0.15, (end >= 0.15) & (end < 0.3)
    final_values = torch.randn(T, N, generator=g)
    next_values = torch.cat([values[1:], final_values[-1:]])
    next_values = torch.where(terminated | truncated, final_values, next_values)
    return dict(
        rewards=rewards, values=values, next_values=next_values, terminated=terminated, truncated=truncated
    )


def sb3_advantages_and_returns(
    r: dict[str, torch.Tensor], gamma: float, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """SB3's buffer, filled as its `collect_rollouts` fills it."""
    T, N = r["rewards"].shape
    box = spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)
    buffer = RolloutBuffer(T, box, box, device="cpu", gae_lambda=lam, gamma=gamma, n_envs=N)
    ended = (r["terminated"] | r["truncated"]).numpy()
    rewards = r["rewards"] + gamma * r["next_values"] * r["truncated"]  # SB3's time-limit bootstrap
    buffer.rewards[:] = rewards.numpy()
    buffer.values[:] = r["values"].numpy()
    buffer.episode_starts[:] = np.concatenate([np.ones((1, N)), ended[:-1]])  # the first row: any
    last_dones = r["terminated"][-1].numpy() | r["truncated"][-1].numpy()
    last_values = torch.where(r["truncated"][-1], 0.0, r["next_values"][-1])  # truncation: in the reward
    buffer.compute_returns_and_advantage(last_values=last_values, dones=last_dones)
    return buffer.advantages, buffer.returns


@pytest.mark.parametrize("gamma, lam", [(0.99, 0.95), (0.9, 1.0), (0.97, 0.0), (0.5, 0.7)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_and_lambda_returns_are_sb3s(gamma, lam, seed):
    T, N = 40, 5
    r = _rollout(T, N, seed)
    assert r["terminated"].any() and r["truncated"].any()
    their_advantages, their_returns = sb3_advantages_and_returns(r, gamma, lam)
    d = {k: v.double() for k, v in r.items()}
    ours = gae(d["rewards"], d["values"], d["next_values"], r["terminated"], r["truncated"], gamma, lam)
    bound = max(d["rewards"].abs().max(), d["values"].abs().max(), d["next_values"].abs().max()).item()
    tolerance = 4 * (ours.abs().max().item() + 3 * bound) * FLOAT32 / (1 - gamma * lam)
    torch.testing.assert_close(ours, torch.from_numpy(their_advantages).double(), rtol=0, atol=tolerance)
    torch.testing.assert_close(
        ours + d["values"], torch.from_numpy(their_returns).double(), rtol=0, atol=tolerance
    )
    if lam == 1.0:  # TD(1): the Monte-Carlo returns, bootstrapped at truncations and the rollout's end
        monte_carlo = discounted_returns(
            d["rewards"], d["next_values"], r["terminated"], r["truncated"], gamma
        )
        torch.testing.assert_close(
            monte_carlo, torch.from_numpy(their_returns).double(), rtol=0, atol=tolerance
        )


LAYERS = {
    f"{theirs}.{p}": f"{mine}.{p}"
    for theirs, mine in (
        ("mlp_extractor.policy_net.0", "actor.0"), ("mlp_extractor.policy_net.2", "actor.2"),
        ("action_net", "actor.4"), ("mlp_extractor.value_net.0", "critic.0"),
        ("mlp_extractor.value_net.2", "critic.2"), ("value_net", "critic.4"),
    )
    for p in ("weight", "bias")
}  # fmt: skip
"""SB3's MLP policy's parameters -> ours."""


def _sb3_a2c_with_our_weights(model: ActorCritic, n_envs: int, steps: int) -> A2C:
    """SB3's A2C over `n_envs` copies of our environment, its MLP policy holding our actor's and
    critic's weights (the same tanh layers: policy_net + action_net, value_net + value_net)."""
    c = model.config
    env = DummyVecEnv([lambda: gym.make(c.env)] * n_envs)
    sb3 = A2C(
        "MlpPolicy",
        env,
        n_steps=steps,
        gamma=c.gamma,
        gae_lambda=c.lam,
        ent_coef=c.entropy_coef,
        vf_coef=c.value_coef,
        normalize_advantage=c.normalize_advantage,
        max_grad_norm=1e12,  # no clipping: the gradient itself is compared
        policy_kwargs={
            "net_arch": {"pi": [c.hidden] * c.layers, "vf": [c.hidden] * c.layers},
            "activation_fn": nn.Tanh,
        },
        device="cpu",
    )
    ours = model.state_dict()
    state = {theirs: ours[mine] for theirs, mine in LAYERS.items()}
    if not model.discrete:
        state["log_std"] = ours["log_std"]
    missing, unexpected = sb3.policy.load_state_dict(state, strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    sb3.set_logger(Logger(None, []))
    return sb3


@pytest.mark.parametrize(
    "env, advantage, normalize, entropy",
    [
        ("CartPole-v1", "mc", False, 0.0),
        ("CartPole-v1", "gae", True, 0.01),
        ("Pendulum-v1", "td", True, 0.02),
    ],
)
def test_a2c_loss_terms_and_gradient_are_sb3s(env, advantage, normalize, entropy):
    """One rollout in SB3's buffer (its values our critic's) and in our batch: SB3's `A2C.train`
    logs the same policy, value and entropy terms and computes the same gradient as our loss,
    each parameter's mapped to ours. Both in float32 over T N = 40 rows: a mean or a gradient
    sums 40 terms of a few roundings each, so the tolerance is 64 roundings of its scale."""
    torch.manual_seed(0)
    config = A2CConfig(env=env, advantage=advantage, normalize_advantage=normalize, entropy_coef=entropy)
    model = ActorCritic(config)
    T, N = 8, 5
    g = torch.Generator().manual_seed(1)
    obs_dim = model.actor[0].in_features
    states = torch.randn(T + 1, N, obs_dim, generator=g)  # s_0 .. s_T
    terminated = torch.rand(T, N, generator=g) < 0.2
    rewards = torch.randn(T, N, generator=g)
    with torch.no_grad():
        actions = model.distribution(states[:-1]).sample()
        values = model.value(states)  # (T + 1, N)
    batch = {
        "obs": states[:-1], "next_obs": states[1:], "actions": actions, "rewards": rewards,
        "terminated": terminated, "truncated": torch.zeros_like(terminated),
    }  # fmt: skip

    sb3 = _sb3_a2c_with_our_weights(model, N, T)
    buffer = sb3.rollout_buffer
    buffer.reset()
    buffer.observations[:] = states[:-1].numpy()
    buffer.actions[:] = actions.reshape(T, N, -1).numpy()
    buffer.rewards[:] = rewards.numpy()
    buffer.values[:] = values[:-1].numpy()
    buffer.episode_starts[:] = torch.cat([torch.ones(1, N, dtype=torch.bool), terminated[:-1]]).numpy()
    buffer.full = True
    buffer.compute_returns_and_advantage(last_values=values[-1], dones=terminated[-1].numpy())
    grads = {}
    sb3.policy.optimizer.step = lambda *a, **k: grads.update(
        {name: p.grad.clone() for name, p in sb3.policy.named_parameters()}
    )
    sb3.train()
    logged = sb3.logger.name_to_value

    terms = model.loss(batch)
    terms["loss"].backward()
    for ours, theirs in (("policy_loss", "train/policy_loss"), ("value_loss", "train/value_loss")):
        assert terms[ours].item() == pytest.approx(logged[theirs], rel=64 * FLOAT32, abs=64 * FLOAT32)
    assert terms["entropy"].item() == pytest.approx(-logged["train/entropy_loss"], rel=64 * FLOAT32)
    mine = dict(model.named_parameters())
    for layer in sorted({name.rsplit(".", 1)[0] for name in LAYERS}):
        # a layer's largest entry sets the scale: its bias's rows can cancel (a softmax's logits'
        # gradients sum to zero over the classes), its weight's much less
        scale = max(grads[f"{layer}.{p}"].abs().max().item() for p in ("weight", "bias"))
        assert scale > 1e-4  # a gradient that is there
        for p in ("weight", "bias"):
            theirs = grads[f"{layer}.{p}"]
            ours = mine[LAYERS[f"{layer}.{p}"]].grad
            torch.testing.assert_close(ours, theirs, rtol=0, atol=64 * FLOAT32 * scale)
    if not model.discrete:
        torch.testing.assert_close(model.log_std.grad, grads["log_std"], rtol=64 * FLOAT32, atol=0)
