"""Advantage actor-critic (A2C; Mnih et al., 2016, synchronous form) for gymnasium environments.

A rollout (rollouts.py) of T steps of N environments gives (s_t, a_t, r_t, s_{t+1}, term_t,
trunc_t). With the critic V and the policy pi,

    A_t = GAE(lambda) of the TD errors r_t + gamma (1 - term_t) V(s_{t+1}) - V(s_t)    (returns.py)
          advantage "mc": lambda = 1, the Monte-Carlo return minus V (bootstrapped only where the
          rollout or a time limit cuts the episode); "td": lambda = 0, the one-step TD error;
          "reinforce": REINFORCE with the baseline V, the same return - V but only on the steps
          whose episode ends within the rollout (the loss averages over those)
    L    = -mean(log pi(a_t | s_t) A_t)                    (A_t detached: the actor's loss)
           + value_coef mean((G_t - V(s_t))^2),  G_t = A_t + V(s_t) detached   (the critic's)
           - entropy_coef mean(H(pi(. | s_t)))             (the entropy bonus)

the notes' three terms. Discrete actions: a categorical over logits; continuous: a Gaussian with a
state-independent learned log standard deviation (as in SB3 and the A3C paper's continuous form).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from deepzoo.config import Count, NonNegative, Probability
from deepzoo.nn.precision import upcast
from deepzoo.rl.returns import complete_episodes, gae
from deepzoo.rl.rollouts import play_episode


@dataclass(frozen=True)
class A2CConfig:
    env: str = "CartPole-v1"
    """gymnasium environment id (its spaces size the networks)."""
    hidden: Count = 64
    """Units of each hidden layer (tanh)."""
    layers: Count = 2
    """Hidden layers of the actor and of the critic."""
    shared: bool = False
    """One trunk for actor and critic (two heads) instead of two separate networks."""
    advantage: Literal["mc", "td", "gae", "reinforce"] = "mc"
    """mc: GAE(1) = return - V; td: GAE(0) = the TD error; gae: GAE(gae_lambda); reinforce:
    REINFORCE with V as baseline, return - V on the steps whose episode ends within the rollout
    only (no bootstrapping at the rollout's end; the other steps are left out of the loss)."""
    gae_lambda: Probability = 0.95
    """lambda of advantage 'gae'."""
    gamma: Probability = 0.99
    """Discount."""
    value_coef: NonNegative = 0.5
    """Weight of the critic's squared error."""
    entropy_coef: NonNegative = 0.0
    """Weight of the entropy bonus."""
    normalize_advantage: bool = False
    """Standardise the advantages of each rollout (SB3's A2C option)."""
    init_log_std: float = 0.0
    """Continuous actions: initial log standard deviation of the Gaussian policy."""

    @property
    def lam(self) -> float:
        return {"mc": 1.0, "td": 0.0, "gae": self.gae_lambda, "reinforce": 1.0}[self.advantage]


def mlp(d_in: int, hidden: int, layers: int, d_out: int, out_gain: float) -> nn.Sequential:
    """tanh MLP with orthogonal weights (gain sqrt 2 inside, `out_gain` on the last layer) and zero
    biases: the initialisation of the A2C/PPO reference implementations."""
    sizes = [d_in] + [hidden] * layers
    modules: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        modules += [nn.Linear(a, b), nn.Tanh()]
    modules.append(nn.Linear(sizes[-1], d_out))
    linears = [m for m in modules if isinstance(m, nn.Linear)]
    for i, linear in enumerate(linears):
        nn.init.orthogonal_(linear.weight, out_gain if i == len(linears) - 1 else 2**0.5)
        nn.init.zeros_(linear.bias)
    return nn.Sequential(*modules)


def _spaces(env_id: str) -> tuple[int, int, bool]:
    """(observation size, action count or size, discrete?) of a gymnasium environment."""
    import gymnasium as gym

    env = gym.make(env_id)
    obs_space, act_space = env.observation_space, env.action_space
    env.close()
    if len(obs_space.shape) != 1:
        raise ValueError(f"{env_id}: need flat observations, got shape {obs_space.shape}")
    if isinstance(act_space, gym.spaces.Discrete):
        return obs_space.shape[0], int(act_space.n), True
    if isinstance(act_space, gym.spaces.Box) and len(act_space.shape) == 1:
        return obs_space.shape[0], act_space.shape[0], False
    raise ValueError(f"{env_id}: need a Discrete or a flat Box action space, got {act_space}")


class ActorCritic(nn.Module):
    """Policy pi(a | s) and value V(s) over flat observations; `loss(batch)` is A2C's."""

    def __init__(self, config: A2CConfig = A2CConfig()) -> None:
        super().__init__()
        self.config = config
        obs_dim, act_dim, self.discrete = _spaces(config.env)
        h, n = config.hidden, config.layers
        if config.shared:
            self.trunk = mlp(obs_dim, h, n - 1, h, 2**0.5)
            self.actor, self.critic = nn.Linear(h, act_dim), nn.Linear(h, 1)
            nn.init.orthogonal_(self.actor.weight, 0.01)
            nn.init.orthogonal_(self.critic.weight, 1.0)
            nn.init.zeros_(self.actor.bias)
            nn.init.zeros_(self.critic.bias)
        else:
            self.trunk = None
            self.actor = mlp(obs_dim, h, n, act_dim, 0.01)
            self.critic = mlp(obs_dim, h, n, 1, 1.0)
        self.log_std = None if self.discrete else nn.Parameter(torch.full((act_dim,), config.init_log_std))

    def _features(self, obs: torch.Tensor) -> torch.Tensor:
        return obs if self.trunk is None else torch.tanh(self.trunk(obs))

    def distribution(self, obs: torch.Tensor) -> Distribution:
        """pi(. | s) of (..., obs_dim) observations."""
        out = upcast(self.actor(self._features(obs)))
        if self.discrete:
            return Categorical(logits=out)
        return Independent(Normal(out, self.log_std.exp().expand_as(out)), 1)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s) of (..., obs_dim) observations -> (...)."""
        return upcast(self.critic(self._features(obs))).squeeze(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """A sample of pi(. | s), or its mode (argmax / mean) when deterministic."""
        dist = self.distribution(obs)
        if not deterministic:
            return dist.sample()
        return dist.probs.argmax(-1) if self.discrete else dist.mean

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """The rendered frames (T, 3, H, W) of one deterministic episode reset with the generator's
        seed (`deepzoo sample RUN` writes them as a GIF and a grid of n frames)."""
        seed = 0 if generator is None else generator.initial_seed()
        return render_episode(self, seed)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A2C's loss on a rollout (see the module docstring)."""
        c = self.config
        obs, actions = batch["obs"], batch["actions"]
        dist, values = self.distribution(obs), self.value(obs)  # (T, N)
        with torch.no_grad():
            next_values = self.value(batch["next_obs"])
            advantages = gae(
                batch["rewards"], values.detach(), next_values, batch["terminated"], batch["truncated"],
                c.gamma, c.lam,
            )  # fmt: skip
            returns = advantages + values.detach()
            if c.advantage == "reinforce":
                used = complete_episodes(batch["terminated"], batch["truncated"])
            else:
                used = torch.ones_like(advantages, dtype=torch.bool)
            kept = advantages[used]
            if c.normalize_advantage and len(kept) > 1:
                advantages = (advantages - kept.mean()) / (kept.std() + 1e-8)
            weight = used.to(advantages.dtype) / used.sum().clamp_min(
                1
            )  # a mean over the used steps; 0 if none
        policy_loss = -(dist.log_prob(actions) * advantages * weight).sum()
        value_loss = ((values - returns).square() * weight).sum()
        entropy = (dist.entropy() * weight).sum()
        terms = {
            "loss": policy_loss + c.value_coef * value_loss - c.entropy_coef * entropy,
            "policy_loss": policy_loss.detach(),
            "value_loss": value_loss.detach(),
            "entropy": entropy.detach(),
        }
        if "episode_return" in batch and not torch.isnan(batch["episode_return"]):
            terms["episode_return"] = batch["episode_return"].float()
        return terms


def policy_function(model: ActorCritic, deterministic: bool = True) -> Callable[[Any], Any]:
    """The model as `play_episode`'s act: one numpy observation -> one numpy action."""
    device = next(model.parameters()).device

    def act(obs):
        return (
            model.act(torch.as_tensor(obs, dtype=torch.float32, device=device)[None], deterministic)[0]
            .cpu()
            .numpy()
        )

    return act


def render_episode(model: ActorCritic, seed: int, deterministic: bool = True) -> torch.Tensor:
    """Frames (T + 1, 3, H, W) in [0, 1] of one episode reset with `seed`, drawn by the
    environment (render_mode "rgb_array"; classic control needs pygame)."""
    import os

    import gymnasium as gym
    import numpy as np

    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame draws off-screen: no display needed
    env = gym.make(model.config.env, render_mode="rgb_array")
    _, frames = play_episode(env, policy_function(model, deterministic), seed, render=True)
    env.close()
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255


def evaluate_policy(model: ActorCritic, episodes: int, seed: int, deterministic: bool = True) -> list[float]:
    """Returns of `episodes` episodes of the model's environment, seeded seed, seed + 1, ...;
    actions are the policy's mode (deterministic) or samples."""
    import gymnasium as gym

    env = gym.make(model.config.env)
    act = policy_function(model, deterministic)
    returns = [play_episode(env, act, seed + episode)[0] for episode in range(episodes)]
    env.close()
    return returns
