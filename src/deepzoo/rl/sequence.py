"""Sequence-level actor-critic for a token policy: a GPT writes a whole sequence, a reward scores
it, a critic head predicts each token's value, and the policy follows the advantage, held near
its starting point by a KL penalty (the fine-tuning Bailando applies to its motion GPT; the form
of RL fine-tuning of language models, without PPO's clipping).

A prompt p (B, P) is continued by L tokens a_1..a_L ~ pi(. | p, a_<t). With pi_0 the frozen
starting policy, beta the KL weight and R the sequence's reward,

    r_t = -beta (log pi(a_t | .) - log pi_0(a_t | .)) + [t = L] R(a)      (per-token rewards)
    G_t = sum_{k >= t} r_k                                                  (gamma = 1)
    A_t = G_t - V(s_t)                    (detached; V: a linear head on the GPT's features, detached)
    L   = -mean_t log pi(a_t | .) A_t + value_coef mean_t (V(s_t) - G_t)^2

sum_t (log pi - log pi_0)(a_t) is a one-sample estimate of KL(pi || pi_0) of the sequence, logged
as "kl". The critic reads the policy's features without moving them (the features are detached),
so the actor's loss never changes the critic and the critic's never changes the actor.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from deepzoo.models.gpt import GPT
from deepzoo.rl.returns import discounted_returns


@dataclass(frozen=True)
class SequenceACConfig:
    new_tokens: int = 49
    """Tokens generated after the prompt (L)."""
    kl_coef: float = 0.05
    """beta, the weight of the per-token KL penalty to the starting policy."""
    value_coef: float = 0.5
    """Weight of the critic's squared error."""
    max_token: int | None = None
    """Only ids below it are generated (e.g. a VQ-VAE prior's codes, not its class tokens)."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts."""


class SequenceActorCritic(nn.Module):
    """policy: a GPT (trained, the starting point); reward: tokens (B, P + L) -> (B,) rewards;
    prompts: (batch size, generator) -> (B, P) prompt ids. `loss({"size": ...})` rolls out fresh
    sequences and returns the actor-critic loss."""

    def __init__(
        self,
        policy: GPT,
        reward: Callable[[torch.Tensor], torch.Tensor],
        prompts: Callable[[int, torch.device], torch.Tensor],
        config: SequenceACConfig = SequenceACConfig(),
    ) -> None:
        super().__init__()
        self.config, self.reward, self.prompts = config, reward, prompts  # a Module reward moves with .to()
        self.policy = policy
        self.reference = copy.deepcopy(policy).requires_grad_(False).eval()
        self.value_head = nn.Linear(policy.config.dim, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def train(self, mode: bool = True) -> SequenceActorCritic:
        super().train(mode)
        self.reference.eval()
        return self

    def _log_probs(self, logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        logits = logits[..., : self.config.max_token].float() / self.config.temperature
        return logits.log_softmax(-1).gather(-1, actions[..., None]).squeeze(-1)

    def terms(self, tokens: torch.Tensor, prompt_length: int) -> dict[str, torch.Tensor]:
        """The loss and its parts for finished sequences tokens (B, P + L) (see the module docstring)."""
        c, start = self.config, prompt_length - 1
        actions = tokens[:, prompt_length:]  # (B, L)
        features = self.policy.features(tokens[:, :-1])[:, start:]  # (B, L, D): the states s_t
        log_probs = self._log_probs(self.policy.head(features), actions)
        values = self.value_head(features.detach()).squeeze(-1).float()
        with torch.no_grad():
            reference = self._log_probs(self.reference(tokens[:, :-1])[:, start:], actions)
            kl = log_probs - reference
            score = self.reward(tokens).float()
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
    def rollout(self, size: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
        """(tokens (size, P + L), P): fresh sequences of the current policy after fresh prompts."""
        device = self.value_head.weight.device
        prompt = self.prompts(size, device)
        tokens = self.policy.generate(
            prompt, self.config.new_tokens, self.config.temperature, generator=generator,
            max_token=self.config.max_token,
        )  # fmt: skip
        return tokens, prompt.shape[1]

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """batch {"size": () batch size}: one on-policy rollout and its actor-critic terms."""
        tokens, prompt_length = self.rollout(int(batch["size"]))
        return self.terms(tokens, prompt_length)


class DigitReward(nn.Module):
    """R(tokens) = p(target | decoded image) under the feature classifier: tokens (B, 1 + h w) =
    [class token, the VQ-VAE's h x w codes] -> (B,). Frozen: no parameter of it is trained."""

    def __init__(self, vqvae: nn.Module, classifier: nn.Module, target: int) -> None:
        super().__init__()
        self.vqvae, self.classifier, self.target = vqvae.eval(), classifier.eval(), target
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> DigitReward:
        return super().train(False)  # always in eval mode

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, 1 + h w) -> the images (B, 1, 28, 28) the reward scores."""
        return self.vqvae.decode(tokens[:, 1:].reshape(-1, *self.vqvae.grid))

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.decode(tokens)).float().softmax(-1)[:, self.target]
