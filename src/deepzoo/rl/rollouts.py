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
environment without `unwrapped.state` resumes from a fresh reset (said when it happens).
"""

from __future__ import annotations

import warnings
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
        self.env_id, self.steps, self.device = env_id, steps, torch.device(device)
        self.envs = make_envs(env_id, num_envs)
        self.seed = seed + 1000 * _rank()
        self.obs, _ = self.envs.reset(seed=[self.seed + i for i in range(num_envs)])
        self.running = np.zeros(num_envs)
        self.policy: Policy | None = None

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
        space = self.envs.single_action_space
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
                "state": None if state is None else torch.as_tensor(np.asarray(state, dtype=np.float64)),
                "elapsed": _elapsed(env),
            })  # fmt: skip
        return {
            "envs": envs,
            "obs": torch.as_tensor(np.asarray(self.obs)),
            "running": torch.as_tensor(self.running),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        for env, saved in zip(self.envs.envs, state["envs"]):
            inner = env.unwrapped
            if saved["state"] is None:
                warnings.warn(
                    f"{self.env_id} keeps no `state`: its environments resume from a reset", stacklevel=2
                )
                continue
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
