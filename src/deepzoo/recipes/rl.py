"""Recipes of the reinforcement-learning family: A2C and REINFORCE on gymnasium's classic-control
tasks (a training step is one update on one rollout of `rollout.num_envs` x `rollout.steps`
environment steps; evaluation is the mean return of deterministic episodes, the policy's mode),
and the sequence-level actor-critic fine-tuning of a VQ-VAE prior towards a target digit."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from deepzoo.config import Count, Range, Seed, ranged
from deepzoo.recipes.common import sequence_ac_train
from deepzoo.recipes.registry import Recipe, register
from deepzoo.rl.actor_critic import A2CConfig, ActorCritic, evaluate_policy
from deepzoo.rl.rewards import DigitReward
from deepzoo.rl.rollouts import Rollouts
from deepzoo.rl.sequence import PromptedGPT, SequenceACConfig, SequenceActorCritic
from deepzoo.train.config import TrainConfig

Digit = ranged(int, Range(0, 9))


@dataclass(frozen=True)
class RolloutConfig:
    num_envs: Count = 8
    """Environments stepped together (gymnasium's synchronous vector)."""
    steps: Count = 5
    """Steps of each environment per rollout (per update)."""


@dataclass(frozen=True)
class PolicyEval:
    episodes: Count = 20
    """Deterministic episodes averaged."""
    seed: Seed = 10_000
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
    """RMSprop (alpha 0.99) at a constant rate unless `schedule` says, gradients clipped at norm
    0.5 (the A2C paper's and SB3's settings), no weight decay."""
    kw.setdefault("schedule", "constant")
    return TrainConfig(
        steps=updates, batch_size=8, optimizer="rmsprop", alpha=0.99, lr=lr,
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

_a2c(
    "a2c-lunarlander",
    "A2C on LunarLander-v3 (Box2D), rl-zoo's settings: gamma 0.995, lr 8.3e-4 decayed linearly to 0",
    A2CRun(
        A2CConfig(env="LunarLander-v3", gamma=0.995, entropy_coef=1e-5),
        train=a2c_train(5000, 8.3e-4, 500, schedule="linear", min_lr_ratio=0.0, eps=1e-5),
    ),
    "SB3 A2C (rl-zoo settings, RMSprop eps 1e-5 as here, 200k env steps): about 150 +- 80; random about -180",
)


@dataclass(frozen=True)
class PriorFinetuneRun:
    prior_run: str = ""
    """The `vqvae-prior-mnist` run whose GPT is the starting policy (its VQ-VAE decodes); required."""
    target: Digit = 3
    """The digit the reward asks for, whatever the class token of the prompt."""
    model: SequenceACConfig = SequenceACConfig(kl_coef=0.02)
    samples: Count = 500
    """Sequences the evaluation draws (prompts: the class tokens 0, 1, ..., 9 in turn)."""
    train: TrainConfig = TrainConfig()


class _Sizes:
    """The batch source of a policy that writes its own data: batch t is {"size": batch size}."""

    def __init__(self, size: int) -> None:
        self.size = size

    def next(self, step: int) -> dict[str, torch.Tensor]:
        return {"size": torch.tensor(self.size)}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _prior(config: PriorFinetuneRun):
    from deepzoo.recipes.runs import load_parent

    return load_parent(config.prior_run, ("vqvae-prior-mnist",), "prior-run").model


def _build_finetune(config: PriorFinetuneRun) -> SequenceActorCritic:
    """The prior's GPT (a copy) as the policy, its class tokens as prompts, its VQ-VAE and the
    feature classifier as the reward."""
    import copy

    from deepzoo.models.features import mnist_feature_net

    prior = _prior(config)
    codes, classes = prior.num_codes, prior.config.num_classes

    def contexts(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        size = int(batch["size"])
        return {"prompt": (codes + torch.arange(size, device=device) % classes)[:, None]}

    reward = DigitReward(copy.deepcopy(prior.tokenizer), mnist_feature_net(), config.target)
    h, w = prior.grid
    policy = PromptedGPT(copy.deepcopy(prior.gpt), new_tokens=h * w, max_token=codes)
    return SequenceActorCritic(policy, reward, contexts, config.model)


def _evaluate_finetune(
    model: SequenceActorCritic, data: None, run_dir: Path, config: PriorFinetuneRun
) -> dict[str, float]:
    """Mean reward (p(target) of the decoded samples), the share classified as the target, the
    sequence KL to the starting policy, over `samples` sequences; the first 100 to a grid."""
    from deepzoo.viz import save_image_grid

    torch.manual_seed(0)
    context, codes = model.rollout({"size": torch.tensor(config.samples)})
    terms = model.terms(context, codes)
    images = model.reward.decode(codes)
    hits = (model.reward.classifier(images).argmax(-1) == config.target).float().mean()
    save_image_grid(images[:100].cpu(), run_dir / "samples" / "samples.png", nrow=10)
    return {"reward": terms["reward"].item(), "target_share": hits.item(), "kl": terms["kl"].item()}


register(
    Recipe(
        name="ac-vqvae-prior-mnist",
        summary="sequence actor-critic: fine-tune a VQ-VAE prior (--prior-run) to draw a target digit",
        default=PriorFinetuneRun(train=sequence_ac_train(100, 64, 3e-4, 25)),
        build=_build_finetune,
        data=lambda config, device: (_Sizes(config.train.batch_size), None),
        evaluate=_evaluate_finetune,
        metric="reward",
        reference="Bailando fine-tunes its motion GPT so; here MNIST codes, reward = p(target digit)",
    )
)
