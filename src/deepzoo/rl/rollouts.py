"""On-policy rollouts from vectorized gymnasium environments, as the trainer's batch source.

Batch t is `steps` steps of `num_envs` environments acting with the attached policy:

    obs (T, N, *obs_shape), actions (T, N[, act_dim]), rewards, terminated, truncated (T, N),
    next_obs (T, N, *obs_shape): the true next observation (the final one where an episode ended,
    not the reset observation that replaced it), so a truncated episode can bootstrap from it;
    episode_return (): the mean return of the episodes that ended in this rollout (NaN if none).

Environments reset themselves in the same step an episode ends (gymnasium's SAME_STEP autoreset),
so every row is a real transition. Continuous actions are clipped to the action space's bounds
when stepping (the stored action is the policy's sample). Under DDP rank r seeds its environments
with seed + 1000 r + i.

State for a checkpoint: each environment's RNG, its physical state (`unwrapped.state`, which the
classic-control environments keep whole), its time-limit counter, the current observations and
running returns: enough to resume CartPole, Acrobot, Pendulum, MountainCar exactly. An
environment without `unwrapped.state` (LunarLander's Box2D world) resumes from fresh resets with
seeds drawn from the saved generators (said when it happens): reproducible, but not the
uninterrupted run.

The environments are made on first use, so a run that is only evaluated builds none.
`play_episode` plays one episode of a single environment with any policy function, for evaluation,
rendering and the benchmark's peers.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch


class Policy(Protocol):
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """(N, *obs_shape) -> (N[, act_dim]) actions, without gradients."""
        ...


def make_envs(env_id: str, num_envs: int) -> Any:
    """A synchronous vector of `num_envs` copies of `env_id` that reset in the step they end."""
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode

    return gym.make_vec(
        env_id, num_envs, vectorization_mode="sync", vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP}
    )


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class Rollouts:
    """A batch source (train/batches.py) of `steps`-step rollouts; call `attach(policy)` first."""

    def __init__(
        self, env_id: str, num_envs: int, steps: int, seed: int, device: torch.device | str = "cpu"
    ) -> None:
        if num_envs < 1 or steps < 1:
            raise ValueError(f"need num_envs >= 1 and steps >= 1, got {num_envs}, {steps}")
        self.env_id, self.num_envs, self.steps, self.device = env_id, num_envs, steps, torch.device(device)
        self.seed = seed + 1000 * _rank()
        self._envs: Any = None
        self.policy: Policy | None = None

    @property
    def envs(self) -> Any:
        """The vector of environments, made and reset with seeds seed, seed + 1, ... on first use."""
        if self._envs is None:
            self._envs = make_envs(self.env_id, self.num_envs)
            self.obs, _ = self._envs.reset(seed=[self.seed + i for i in range(self.num_envs)])
            self.running = np.zeros(self.num_envs)
        return self._envs

    def attach(self, policy: Policy) -> None:
        self.policy = policy

    def _tensor(self, x: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=dtype, device=self.device)

    def next(self, step: int) -> dict[str, torch.Tensor]:
        if self.policy is None:
            raise RuntimeError("Rollouts has no policy: call attach(model) before training")
        rows: dict[str, list] = {
            k: [] for k in ("obs", "actions", "rewards", "terminated", "truncated", "next_obs")
        }
        finished = []
        space = self.envs.single_action_space  # (makes the environments on first use)
        for _ in range(self.steps):
            obs = self._tensor(self.obs, torch.float32)
            with torch.no_grad():
                action = self.policy.act(obs)
            env_action = action.cpu().numpy()
            if hasattr(space, "low"):  # Box: step with the action clipped into bounds
                env_action = np.clip(env_action, space.low, space.high)
            new_obs, reward, terminated, truncated, info = self.envs.step(env_action)
            next_obs = np.array(new_obs, copy=True)
            ended = terminated | truncated
            for i in np.flatnonzero(ended):
                next_obs[i] = info["final_obs"][i]
            self.running += reward
            finished += list(self.running[ended])
            self.running[ended] = 0.0
            rows["obs"].append(obs)
            rows["actions"].append(action)
            rows["next_obs"].append(self._tensor(next_obs, torch.float32))
            rows["rewards"].append(self._tensor(reward, torch.float32))
            rows["terminated"].append(self._tensor(terminated))
            rows["truncated"].append(self._tensor(truncated))
            self.obs = new_obs
        batch = {k: torch.stack(v) for k, v in rows.items()}
        batch["episode_return"] = torch.tensor(float(np.mean(finished)) if finished else float("nan"))
        return batch

    def state_dict(self) -> dict[str, Any]:
        envs = []
        for env in self.envs.envs:
            inner = env.unwrapped
            state = getattr(inner, "state", None)
            envs.append({
                "rng": inner.np_random.bit_generator.state,
                "state": None if state is None else torch.tensor(np.asarray(state, dtype=np.float64)),
                "elapsed": _elapsed(env),
            })  # fmt: skip
        return {  # copies: the environments and the running returns change in place as they step
            "envs": envs,
            "obs": torch.tensor(np.asarray(self.obs)),
            "running": torch.tensor(self.running),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        if any(saved["state"] is None for saved in state["envs"]):
            warnings.warn(
                f"{self.env_id} keeps no `state`: its environments resume from fresh resets", stacklevel=2
            )
            self.obs, _ = self.envs.reset(seed=[_seed_from(saved["rng"]) for saved in state["envs"]])
            self.running = np.zeros(self.num_envs)
            return
        for env, saved in zip(self.envs.envs, state["envs"]):
            inner = env.unwrapped
            inner.np_random.bit_generator.state = saved["rng"]
            inner.state = saved["state"].numpy().astype(np.asarray(inner.state).dtype)
            _set_elapsed(env, saved["elapsed"])
        self.obs = state["obs"].numpy()
        self.running = state["running"].numpy().copy()


def _time_limit(env: Any) -> Any:
    while env is not None:
        if hasattr(env, "_elapsed_steps"):
            return env
        env = getattr(env, "env", None)
    return None


def _elapsed(env: Any) -> int:
    limit = _time_limit(env)
    return -1 if limit is None else int(limit._elapsed_steps)


def _set_elapsed(env: Any, elapsed: int) -> None:
    limit = _time_limit(env)
    if limit is not None and elapsed >= 0:
        limit._elapsed_steps = elapsed


def _seed_from(rng_state: dict[str, Any]) -> int:
    """A reset seed drawn from a saved numpy generator state."""
    generator = np.random.Generator(getattr(np.random, rng_state["bit_generator"])())
    generator.bit_generator.state = rng_state
    return int(generator.integers(2**31))


def play_episode(
    env: Any, act: Callable[[np.ndarray], Any], seed: int, render: bool = False
) -> tuple[float, list[np.ndarray]]:
    """Play one episode of the (single) environment `env`, reset with `seed`, choosing each action
    as `act(observation)`; Box actions are clipped into the action space's bounds. Returns the
    undiscounted return and, when `render`, the frames `env.render()` drew (before the first
    action and after each; the environment must have been made with render_mode "rgb_array")."""
    space = env.action_space
    obs, _ = env.reset(seed=seed)
    frames = [env.render()] if render else []
    total, done = 0.0, False
    while not done:
        action = np.asarray(act(obs))
        action = np.clip(action, space.low, space.high) if hasattr(space, "low") else action.item()
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        if render:
            frames.append(env.render())
        done = terminated or truncated
    return total, frames
