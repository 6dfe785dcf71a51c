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

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer

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
