"""Recipes of the reinforcement-learning family: A2C on gymnasium's classic-control tasks. A
training step is one update on one rollout of `rollout.num_envs` x `rollout.steps` environment
steps; evaluation is the mean return of deterministic episodes (the policy's mode)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from deepzoo.recipes.registry import Recipe, register
from deepzoo.rl.actor_critic import A2CConfig, ActorCritic, evaluate_policy
from deepzoo.rl.rollouts import Rollouts
from deepzoo.train.config import TrainConfig


@dataclass(frozen=True)
class RolloutConfig:
    num_envs: int = 8
    """Environments stepped together (gymnasium's synchronous vector)."""
    steps: int = 5
    """Steps of each environment per rollout (per update)."""


@dataclass(frozen=True)
class PolicyEval:
    episodes: int = 20
    """Deterministic episodes averaged."""
    seed: int = 10_000
    """Episode i resets with seed + i (apart from the training environments' seeds)."""


@dataclass(frozen=True)
class A2CRun:
    model: A2CConfig = A2CConfig()
    rollout: RolloutConfig = RolloutConfig()
    eval: PolicyEval = PolicyEval()
    train: TrainConfig = TrainConfig()


def rollouts(config: A2CRun, device: torch.device) -> tuple[Rollouts, None]:
    """The training rollouts (the recipe's model is attached by the runner); nothing to evaluate on:
    evaluation plays its own episodes."""
    r = config.rollout
    return Rollouts(config.model.env, r.num_envs, r.steps, config.train.seed, device), None


def _evaluate(model: ActorCritic, data: None, run_dir: Path, config: A2CRun) -> dict[str, float]:
    """Mean, minimum and maximum return of `eval.episodes` deterministic episodes."""
    returns = evaluate_policy(model, config.eval.episodes, config.eval.seed)
    return {
        "mean_return": sum(returns) / len(returns),
        "min_return": min(returns),
        "max_return": max(returns),
    }


def a2c_train(updates: int, lr: float, eval_every: int, **kw) -> TrainConfig:
    """RMSprop (alpha 0.99) at a constant rate, gradients clipped at norm 0.5 (the A2C paper's and
    SB3's settings), no weight decay."""
    return TrainConfig(
        steps=updates, batch_size=8, optimizer="rmsprop", alpha=0.99, lr=lr, schedule="constant",
        grad_clip=0.5, weight_decay=0.0, eval_every=eval_every, checkpoint_every=eval_every * 4,
        log_every=eval_every, diverge_factor=0.0, precision="fp32", **kw,
    )  # fmt: skip


def _a2c(name: str, summary: str, default: A2CRun, reference: str) -> Recipe:
    return register(
        Recipe(
            name=name,
            summary=summary,
            default=replace(default, train=replace(default.train, batch_size=default.rollout.num_envs)),
            build=lambda c: ActorCritic(c.model),
            data=rollouts,
            evaluate=_evaluate,
            metric="mean_return",
            reference=reference,
            samples="episode",
        )
    )


_a2c(
    "a2c-cartpole",
    "A2C on CartPole-v1: separate tanh MLP actor and critic, Monte-Carlo advantages (--model.advantage td)",
    A2CRun(A2CConfig(normalize_advantage=True), train=a2c_train(2500, 1.5e-3, 25, target="mean_return>=475")),
    "SB3 A2C (rl-zoo settings) solves CartPole-v1 in a median 15k env steps; goal here <= 10k",
)
_a2c(
    "reinforce-cartpole",
    "REINFORCE with a learned baseline on CartPole-v1: whole-episode returns, 8 x 100-step rollouts",
    A2CRun(
        A2CConfig(advantage="reinforce", normalize_advantage=True),
        RolloutConfig(steps=100),
        train=a2c_train(125, 3e-3, 2, target="mean_return>=475"),
    ),
    "for comparison with a2c-cartpole at equal environment steps (Williams, 1992; Sutton & Barto 13.4)",
)
_a2c(
    "a2c-acrobot",
    "A2C on Acrobot-v1: separate tanh MLP actor and critic, GAE(0.95), normalised advantages",
    A2CRun(
        A2CConfig(env="Acrobot-v1", advantage="gae", entropy_coef=0.0, normalize_advantage=True),
        train=a2c_train(5000, 7e-4, 500),
    ),
    "SB3 A2C (rl-zoo): about -80 to -100 after 500k env steps; random policy -500",
)
