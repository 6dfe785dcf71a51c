"""Sequence-level actor-critic for a token policy: a policy writes a whole sequence for a context
(a prompt, or music), a reward scores it, a critic head predicts each token's value, and the
policy follows the advantage, held near its starting point by a KL penalty (the fine-tuning
Bailando applies to its motion GPT; the form of RL fine-tuning of language models, without PPO's
clipping).

For a context c the policy writes L actions a_1..a_L ~ pi(. | c, a_<t). With pi_0 the frozen
starting policy, beta the KL weight and R the finished sequence's reward,

    r_t = -beta (log pi(a_t | .) - log pi_0(a_t | .)) + [t = L] R(c, a)   (per-token rewards)
    G_t = sum_{k >= t} r_k                                                  (gamma = 1)
    A_t = G_t - V(s_t)                    (detached; V: a linear head on the policy's features, detached)
    L   = -mean_t log pi(a_t | .) A_t + value_coef mean_t (V(s_t) - G_t)^2

sum_t (log pi - log pi_0)(a_t) is a one-sample estimate of KL(pi || pi_0) of the sequence, logged
as "kl". The critic reads the policy's features without moving
them (the features are detached), so the actor's loss never changes the critic and the critic's
never changes the actor.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from deepzoo.config import NonNegative, Positive
from deepzoo.models.gpt import GPT
from deepzoo.nn.precision import upcast
from deepzoo.rl.returns import discounted_returns

Context = dict[str, torch.Tensor]


class TokenPolicy(Protocol):
    """What the actor-critic needs of a policy (an nn.Module): `feature_dim`, the width of its
    features; `sample` draws actions (B, L) for a context at a temperature; `action_logits` gives,
    for a context and its actions, the features of the states s_t (B, L, feature_dim) and the
    logits (B, L, K) over the actions allowed at each t (their ids index the last axis)."""

    feature_dim: int

    def sample(
        self, context: Context, temperature: float, generator: torch.Generator | None = None
    ) -> torch.Tensor: ...

    def action_logits(self, context: Context, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class PromptedGPT(nn.Module):
    """A GPT as a `TokenPolicy`: context {"prompt": (B, P) ids}, actions the next `new_tokens`
    ids, each below `max_token` when set (a vocabulary whose top ids are prompts only)."""

    def __init__(self, gpt: GPT, new_tokens: int, max_token: int | None = None) -> None:
        super().__init__()
        self.gpt, self.new_tokens, self.max_token = gpt, new_tokens, max_token
        self.feature_dim = gpt.config.dim

    def sample(
        self, context: Context, temperature: float, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        prompt = context["prompt"]
        tokens = self.gpt.generate(
            prompt, self.new_tokens, temperature, generator=generator, max_token=self.max_token
        )
        return tokens[:, prompt.shape[1] :]

    def action_logits(self, context: Context, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prompt = context["prompt"]
        tokens = torch.cat([prompt, actions], dim=1)
        features = self.gpt.features(tokens[:, :-1])[:, prompt.shape[1] - 1 :]
        return features, self.gpt.head(features)[..., : self.max_token]


@dataclass(frozen=True)
class SequenceACConfig:
    kl_coef: NonNegative = 0.05
    """beta, the weight of the per-token KL penalty to the starting policy."""
    value_coef: NonNegative = 0.5
    """Weight of the critic's squared error."""
    temperature: Positive = 1.0
    """Sampling temperature of the rollouts."""


class SequenceActorCritic(nn.Module):
    """policy: a `TokenPolicy` (trained, the starting point); reward: (context, actions (B, L)) ->
    (B,) rewards of the finished sequences; contexts: (the trainer's
    batch, the model's device) -> the context of each sequence to write. `loss(batch)` rolls out
    fresh sequences and returns the actor-critic loss."""

    def __init__(
        self,
        policy: nn.Module,
        reward: Callable[[Context, torch.Tensor], torch.Tensor],
        contexts: Callable[[dict[str, torch.Tensor], torch.device], Context],
        config: SequenceACConfig = SequenceACConfig(),
    ) -> None:
        super().__init__()
        self.config, self.reward, self.contexts = config, reward, contexts  # a Module reward moves with .to()
        self.policy = policy
        self.reference = copy.deepcopy(policy).requires_grad_(False).eval()
        self.value_head = nn.Linear(policy.feature_dim, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def train(self, mode: bool = True) -> SequenceActorCritic:
        super().train(mode)
        self.reference.eval()
        return self

    def _log_probs(self, logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        logits = upcast(logits) / self.config.temperature
        return logits.log_softmax(-1).gather(-1, actions[..., None]).squeeze(-1)

    def terms(self, context: Context, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss and its parts for the finished actions (B, L) of a context (see the module docstring)."""
        c = self.config
        features, logits = self.policy.action_logits(context, actions)
        log_probs = self._log_probs(logits, actions)
        values = upcast(self.value_head(features.detach()).squeeze(-1))
        with torch.no_grad():
            reference = self._log_probs(self.reference.action_logits(context, actions)[1], actions)
            kl = log_probs - reference
            score = self.reward(context, actions).to(values.dtype)
            rewards = -c.kl_coef * kl
            rewards[:, -1] += score
            ended = torch.zeros_like(rewards, dtype=torch.bool)
            ended[:, -1] = True
            returns = discounted_returns(
                rewards.T, torch.zeros_like(rewards.T), ended.T, torch.zeros_like(ended.T), 1.0
            ).T  # (B, L)
            advantages = returns - values
        policy_loss = -(log_probs * advantages).mean()
        value_loss = F.mse_loss(values, returns)
        return {
            "loss": policy_loss + c.value_coef * value_loss,
            "policy_loss": policy_loss.detach(),
            "value_loss": value_loss.detach(),
            "reward": score.mean(),
            "kl": kl.sum(1).mean(),
        }

    @torch.no_grad()
    def rollout(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> tuple[Context, torch.Tensor]:
        """(context, actions (B, L)): the contexts of a batch and fresh actions of the current policy."""
        context = self.contexts(batch, self.value_head.weight.device)
        return context, self.policy.sample(context, self.config.temperature, generator)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One on-policy rollout for the batch's contexts and its actor-critic terms."""
        return self.terms(*self.rollout(batch))
