"""Adversarial objectives, kept apart from the networks they train.

A discriminator (critic) D maps x to one real score per example: a logit for the minimax,
non-saturating and hinge games, an unbounded value for the Wasserstein ones. Each objective is
two losses, both minimized; batch means stand for expectations over p (data) and q (generator):

    minimax (Goodfellow et al., 2014):  V(D, G) = E_p log D(x) + E_q log(1 - D(x~)),  D = sigmoid(logit)
        d: -V = E_p softplus(-l) + E_q softplus(l);   g: E_q log(1 - D) = -E_q softplus(l)
        For fixed G the best D is D* = p / (p + q), where V(D*, G) = -log 4 + 2 JSD(p || q).
    non-saturating: d as minimax;  g: -E_q log D = E_q softplus(-l)
        dg/dl is -sigmoid(l) for minimax (-> 0 as D(x~) -> 0: the generator's gradient vanishes
        exactly when it is worst) and sigmoid(l) - 1 (-> -1) for the non-saturating loss.
    wgan (Arjovsky et al., 2017): d: E_q f - E_p f;  g: -E_q f. The critic f is kept K-Lipschitz
        by clipping every weight into [-c, c] after each critic step (`clip_weights`); its
        maximized E_p f - E_q f estimates K W1(p, q) (Kantorovich-Rubinstein duality).
    wgan_gp (Gulrajani et al., 2017): wgan + lambda E_x^ (||grad_x^ f(x^)||_2 - 1)^2 on
        x^ = eps x + (1 - eps) x~, eps ~ U[0, 1] per example (`gradient_penalty`).
    hinge (Lim & Ye, 2017; Miyato et al., 2018): d: E_p relu(1 - f) + E_q relu(1 + f);  g: -E_q f.

Any of them may add R1 (Mescheder et al., 2018) to the critic's loss: (gamma / 2) E_p ||grad_x f(x)||^2,
a penalty on the critic's gradient at the data only, which makes the game converge locally to
the equilibrium (`r1_penalty`; gamma = `r1_weight`, 0 = off).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Critic = Callable[[torch.Tensor], torch.Tensor]
"""x (B, ...) -> scores (B,) or (B, 1)."""

ObjectiveName = Literal["minimax", "non_saturating", "wgan", "wgan_gp", "hinge"]


def gradient_penalty(
    critic: Critic, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """E (||grad f(x^)||_2 - 1)^2 over x^ = eps real + (1 - eps) fake, eps ~ U[0, 1] per example.
    The gradient is taken with create_graph=True so the penalty trains the critic."""
    eps_shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    eps = torch.rand(eps_shape, generator=generator, device=real.device, dtype=real.dtype)
    x_hat = (eps * real + (1 - eps) * fake).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


def r1_penalty(scores: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """E_p ||grad_x f(x)||_2^2 for the scores (B,) of real (B, ...), which must require grad; the
    gradient is taken with create_graph=True so the penalty trains the critic."""
    (grad,) = torch.autograd.grad(scores.sum(), real, create_graph=True)
    return grad.flatten(1).square().sum(dim=1).mean()


@torch.no_grad()
def clip_weights(parameters: Iterable[nn.Parameter], c: float) -> None:
    """WGAN's Lipschitz constraint: every parameter clamped into [-c, c], in place."""
    for p in parameters:
        p.clamp_(-c, c)


@dataclass(frozen=True)
class Objective:
    """The two losses of one adversarial game (module docstring), on the critic's scores."""

    name: ObjectiveName = "non_saturating"
    gp_weight: float = 10.0
    """wgan_gp: lambda of the gradient penalty."""
    r1_weight: float = 0.0
    """gamma of the R1 penalty (gamma / 2) E_p ||grad f||^2 on the critic; 0: none."""

    def __post_init__(self) -> None:
        if self.name not in ("minimax", "non_saturating", "wgan", "wgan_gp", "hinge"):
            raise ValueError(f"unknown adversarial objective {self.name!r}")
        if self.r1_weight < 0:
            raise ValueError(f"r1_weight must be >= 0, got {self.r1_weight}")

    @property
    def wasserstein(self) -> bool:
        return self.name in ("wgan", "wgan_gp")

    def discriminator_loss(
        self, critic: Critic, real: torch.Tensor, fake: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """{"loss_d": what the critic minimizes, and its terms}. fake must be detached from G."""
        if self.r1_weight:
            real = real.detach().requires_grad_(True)
        s_real, s_fake = critic(real).flatten(), critic(fake).flatten()
        out: dict[str, torch.Tensor] = {}
        if self.name in ("minimax", "non_saturating"):
            loss = F.softplus(-s_real).mean() + F.softplus(s_fake).mean()
            out["d_real"] = torch.sigmoid(s_real).mean().detach()  # mean D(x), D(x~): 1/2 at D* = G
            out["d_fake"] = torch.sigmoid(s_fake).mean().detach()
        elif self.name == "hinge":
            loss = F.relu(1 - s_real).mean() + F.relu(1 + s_fake).mean()
        else:
            gap = s_real.mean() - s_fake.mean()
            loss = -gap
            out["w_estimate"] = gap.detach()  # E_p f - E_q f, the critic's W1 estimate
            if self.name == "wgan_gp":
                penalty = gradient_penalty(critic, real, fake)
                loss = loss + self.gp_weight * penalty
                out["gp"] = penalty.detach()
        if self.r1_weight:
            r1 = r1_penalty(s_real, real)
            loss = loss + self.r1_weight / 2 * r1
            out["r1"] = r1.detach()
        return {"loss_d": loss} | out

    def generator_loss(self, critic: Critic, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"loss_g": what the generator minimizes}; fake carries the generator's graph."""
        return {"loss_g": self.generator_loss_of_scores(critic(fake).flatten())}

    def generator_loss_of_scores(self, s_fake: torch.Tensor) -> torch.Tensor:
        if self.name == "minimax":
            return -F.softplus(s_fake).mean()  # E log(1 - sigmoid(l))
        if self.name == "non_saturating":
            return F.softplus(-s_fake).mean()  # -E log sigmoid(l)
        return -s_fake.mean()
