"""Returns and advantages of a rollout, as plain functions (Sutton & Barto; GAE: Schulman et al., 2016).

All inputs are time-major (T, N): T steps of N environments. At step t an environment in state s_t
took an action, got reward r_t and moved to s_{t+1}; `terminated[t]` says s_{t+1} is terminal (its
value is 0 by definition), `truncated[t]` says the episode was cut there by a time limit (s_{t+1}
is an ordinary state: bootstrap from V(s_{t+1})). Either way the next row of that environment
belongs to a new episode. `values[t]` = V(s_t); `next_values[t]` = V(s_{t+1}) of the true next
state (the final observation when the episode ended, not the reset one). The rollout's last row
is cut like a truncation: it bootstraps from next_values[T - 1].

    TD error     delta_t = r_t + gamma (1 - term_t) V(s_{t+1}) - V(s_t)
    GAE(lambda)  A_t = delta_t + gamma lambda (1 - term_t)(1 - trunc_t) A_{t+1},   A_T = 0
    returns      G_t = r_t + gamma (1 - term_t) [(1 - trunc_t) G_{t+1} + trunc_t V(s_{t+1})],
                 G_{T-1} bootstrapped from V(s_T)
    n-step       G^(n)_t = sum_{k<m} gamma^k r_{t+k} + gamma^m (1 - term) V(s_{t+m}), m = n or up
                 to the episode's or the rollout's end

so GAE(1) = G - V (the Monte-Carlo advantage) and GAE(0) = delta (the one-step TD error) exactly.
"""

from __future__ import annotations

import torch


def _check(*tensors: torch.Tensor) -> None:
    shape = tensors[0].shape
    if len(shape) != 2 or any(t.shape != shape for t in tensors):
        raise ValueError(f"need (T, N) tensors of one shape, got {[tuple(t.shape) for t in tensors]}")


def td_errors(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """delta_t = r_t + gamma (1 - term_t) V(s_{t+1}) - V(s_t), (T, N)."""
    _check(rewards, values, next_values, terminated)
    return rewards + gamma * (~terminated.bool()) * next_values - values


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """Generalized advantage estimates A_t (T, N) (see the module docstring)."""
    _check(rewards, values, next_values, terminated, truncated)
    delta = td_errors(rewards, values, next_values, terminated, gamma)
    carry = gamma * lam * (~(terminated.bool() | truncated.bool())).to(delta.dtype)
    advantages = torch.zeros_like(delta)
    running = torch.zeros_like(delta[0])
    for t in range(len(delta) - 1, -1, -1):
        running = delta[t] + carry[t] * running
        advantages[t] = running
    return advantages


def discounted_returns(
    rewards: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """Monte-Carlo returns G_t (T, N) to the end of each episode, bootstrapped from V(s_{t+1}) where
    an episode is truncated or the rollout ends (see the module docstring)."""
    _check(rewards, next_values, terminated, truncated)
    alive, cut = ~terminated.bool(), truncated.bool()
    returns = torch.zeros_like(rewards)
    following = next_values[-1]  # the rollout's end: bootstrap
    for t in range(len(rewards) - 1, -1, -1):
        if t < len(rewards) - 1:
            following = torch.where(cut[t], next_values[t], returns[t + 1])
        returns[t] = rewards[t] + gamma * alive[t] * following
    return returns


def nstep_returns(
    rewards: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    n: int,
) -> torch.Tensor:
    """n-step returns G^(n)_t (T, N): n rewards (fewer at an episode's or the rollout's end), then
    the discounted value of the state reached (0 if it is terminal)."""
    _check(rewards, next_values, terminated, truncated)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    steps = len(rewards)
    ended = terminated.bool() | truncated.bool()
    returns = torch.zeros_like(rewards)
    for t in range(steps):
        total = torch.zeros_like(rewards[0])
        discount = torch.ones_like(rewards[0])
        open_ = torch.ones_like(ended[0])  # this environment's episode has not ended since t
        for k in range(min(n, steps - t)):
            last = (k == n - 1) | (t + k == steps - 1) | ended[t + k]  # bootstrap after this step
            total = total + open_ * discount * rewards[t + k]
            discount = discount * gamma
            bootstrap = open_ & last
            total = total + bootstrap * discount * (~terminated[t + k].bool()) * next_values[t + k]
            open_ = open_ & ~last
        returns[t] = total
    return returns


def complete_episodes(terminated: torch.Tensor, truncated: torch.Tensor) -> torch.Tensor:
    """(T, N) True at the steps whose episode ends within the rollout (at or before each
    environment's last end): there the return needs no value estimate but at a truncation. The
    steps after an environment's last end belong to an episode that goes on in the next rollout."""
    _check(terminated, truncated)
    ended = (terminated.bool() | truncated.bool()).int()
    # a step is complete when an end follows it (itself included): a reversed cumulative sum > 0
    return ended.flip(0).cumsum(0).flip(0) > 0
