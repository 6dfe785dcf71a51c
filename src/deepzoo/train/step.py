"""The only code that changes weights: `opt.update(group, loss)`, one optimizer per named group.

A model names its parameter groups with `param_groups() -> {name: parameters}` (a GAN: "g", "d");
without it everything trainable is the one group "model". A model with a `train_step(batch, step,
opt)` calls `opt.update` once per update it makes (a GAN: the critic, then the generator); a model
with only `loss()` gets `default_step`: `opt.update(every group, model.loss(batch)["loss"])`.

`opt.update(names, loss)` for the named groups, in this order:
    backward (outside autocast) -> average the gradients over DDP ranks -> clip the group's
    gradient norm -> note a non-finite loss or norm on the device -> optimizer step -> drop all
    gradients (other groups' gradients from this backward are discarded, never applied later).
It never synchronises the host: a non-finite value is recorded as a device flag that the trainer
reads at its next log point (`raise_if_non_finite`), before anything is saved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from deepzoo.train import distributed
from deepzoo.train.config import OPTIMIZERS, OptimConfig, TrainConfig
from deepzoo.train.errors import NonFiniteLossError
from deepzoo.train.schedules import lr_factor

DEFAULT_GROUP = "model"


def named_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The model's `param_groups()`, checked to split its trainable parameters into disjoint
    groups that cover them all; without that method, {"model": every trainable parameter}."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not hasattr(model, "param_groups"):
        return {DEFAULT_GROUP: trainable} if trainable else {}
    groups = {name: [p for p in params if p.requires_grad] for name, params in model.param_groups().items()}
    owner: dict[int, str] = {}
    for name, params in groups.items():
        for p in params:
            if id(p) in owner:
                raise ValueError(f"a parameter is in both group {owner[id(p)]!r} and group {name!r}")
            owner[id(p)] = name
    if len(owner) != len(trainable) or any(id(p) not in owner for p in trainable):
        raise ValueError(f"param_groups() {sorted(groups)} must cover every trainable parameter")
    return groups


def build_optimizer(params: Sequence[nn.Parameter], g: OptimConfig) -> torch.optim.Optimizer:
    """torch.optim's SGD, Adam, AdamW, AdaGrad or RMSProp over `params` (the updates of
    deepzoo.optim); weight decay on tensors of 2+ dimensions only (AdamW's is decoupled; the others'
    is L2 added to the gradient, as torch.optim does)."""
    split = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": g.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    if g.optimizer == "sgd":
        return torch.optim.SGD(split, lr=g.lr, momentum=g.momentum, nesterov=g.nesterov)
    if g.optimizer in ("adam", "adamw"):
        # step 1 moves by lr / (1 - beta1) (bias correction), a float32 scalar in torch's Adam(W)
        if g.lr / (1 - g.betas[0]) > torch.finfo(torch.float32).max:
            name = "AdamW" if g.optimizer == "adamw" else "Adam"
            raise ValueError(
                f"train.lr {g.lr:g} is too large for {name}: its first step lr / (1 - beta1) "
                "overflows float32"
            )
        adam = torch.optim.AdamW if g.optimizer == "adamw" else torch.optim.Adam
        return adam(split, lr=g.lr, betas=g.betas, eps=g.eps)
    if g.optimizer == "adagrad":
        return torch.optim.Adagrad(split, lr=g.lr, eps=g.eps)
    if g.optimizer == "rmsprop":
        return torch.optim.RMSprop(split, lr=g.lr, alpha=g.alpha, eps=g.eps)
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {g.optimizer!r}")


class Optimizers:
    """What `train_step` receives as `opt`: the named groups, each with its own optimizer,
    learning-rate schedule and clipping (settings `cfg.group(name)`)."""

    def __init__(
        self, groups: dict[str, list[nn.Parameter]], cfg: TrainConfig, dist: distributed.DistInfo
    ) -> None:
        unknown = set(cfg.optim) - set(groups)
        if unknown:
            raise ValueError(
                f"train.optim names {sorted(unknown)}, but the model's parameter groups are {sorted(groups)}"
            )
        self.params = groups
        self.settings = {name: cfg.group(name) for name in groups}
        self.optimizers = {name: build_optimizer(p, self.settings[name]) for name, p in groups.items()}
        self.total_steps, self.dist = cfg.steps, dist
        self.horizon = cfg.steps  # where the decays end: set_horizon moves it under a time budget
        self.device = dist.device
        self.names = tuple(groups)
        # [first bad step (0: none), loss was non-finite (else the norm), group index]
        self._bad = torch.zeros(3, dtype=torch.long, device=self.device)
        self._step = torch.zeros((), dtype=torch.long, device=self.device)
        self._group_ids = torch.arange(len(self.names), device=self.device)

    # ---------------------------------------------------------------- per step
    def set_step(self, step: int) -> None:
        """Set every group's learning rate to its schedule at `step` (0-based)."""
        self._step.fill_(step + 1)
        for name, optimizer in self.optimizers.items():
            g = self.settings[name]
            factor = lr_factor(
                step, self.horizon, g.schedule, g.warmup_steps, g.min_lr_ratio, g.lr_milestones, g.lr_gamma,
                g.lr_cycles,
            )  # fmt: skip
            for param_group in optimizer.param_groups:
                param_group["lr"] = g.lr * factor

    def set_horizon(self, steps: int) -> None:
        """End the cosine/linear decays at `steps` (at least 1, at most train.steps) instead of
        train.steps; the rates follow at the next `set_step`."""
        self.horizon = max(1, min(self.total_steps, steps))

    def update(self, names: str | Iterable[str], loss: torch.Tensor) -> dict[str, torch.Tensor]:
        """One update of the groups `names` from `loss`; returns their gradient norms (before
        clipping) as {"grad_norm": ...} for the single group "model", else {"grad_norm_NAME": ...}."""
        names = (names,) if isinstance(names, str) else tuple(names)
        for name in names:
            if name not in self.optimizers:
                raise KeyError(f"no parameter group {name!r}; the model's groups are {list(self.names)}")
        with torch.autocast(self.device.type, enabled=False):
            loss.backward()
        norms = {}
        for name in names:
            params = self.params[name]
            self._average_over_ranks(params)
            clip = self.settings[name].grad_clip
            norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
            self._note_non_finite(loss.detach(), norm, self.names.index(name))
            self.optimizers[name].step()
            norms["grad_norm" if self.names == (DEFAULT_GROUP,) else f"grad_norm_{name}"] = norm.detach()
        for params in self.params.values():
            for p in params:
                p.grad = None
        return norms

    def lrs(self) -> dict[str, float]:
        """The current learning rate of each group, as logged ("lr", or "lr_NAME" per group)."""
        if self.names == (DEFAULT_GROUP,):
            return {"lr": self.optimizers[DEFAULT_GROUP].param_groups[0]["lr"]}
        return {f"lr_{name}": opt.param_groups[0]["lr"] for name, opt in self.optimizers.items()}

    # ---------------------------------------------------------------- DDP and non-finite values
    def _average_over_ranks(self, params: Sequence[nn.Parameter]) -> None:
        """Gradients averaged over ranks: each rank's loss is the mean over its equal shard, so
        the mean of the ranks' gradients is the gradient of the global batch's mean loss."""
        if not self.dist.enabled:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = _flatten_dense_tensors(grads)
        torch.distributed.all_reduce(flat)
        flat /= self.dist.world_size
        for grad, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
            grad.copy_(synced)

    def _note_non_finite(self, loss: torch.Tensor, norm: torch.Tensor, group: int) -> None:
        loss_finite = torch.isfinite(loss).all()
        first = (self._bad[0] == 0) & ~(loss_finite & torch.isfinite(norm))
        found = torch.stack([self._step, (~loss_finite).long(), self._group_ids[group]])
        self._bad = torch.where(first, found, self._bad)

    def raise_if_non_finite(self, run_dir: Any, saved_step: int) -> None:
        """Raise NonFiniteLossError if any update since the start saw a non-finite value (one
        host synchronisation; the trainer calls it at log points and before every save)."""
        step, was_loss, group = self._bad.tolist()
        if step:
            what = "loss" if was_loss else "gradient"
            where = "" if self.names == (DEFAULT_GROUP,) else f" (group {self.names[group]!r})"
            raise NonFiniteLossError(
                f"non-finite {what} at step {step}{where}; stopped, the last good checkpoint "
                f"(step {saved_step}) is kept in {run_dir}"
            )

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != set(self.optimizers):
            raise ValueError(
                f"the checkpoint holds optimizers {sorted(state)}, "
                f"the model's groups are {sorted(self.names)}"
            )
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])


StepFn = Callable[[dict[str, torch.Tensor], int, Optimizers], dict[str, torch.Tensor]]


def default_step(loss_fn: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> StepFn:
    """The step of a model with only `loss()`: one update of every group from out["loss"]."""

    def step(batch: dict[str, torch.Tensor], step: int, opt: Optimizers) -> dict[str, torch.Tensor]:
        out = loss_fn(batch)
        return out | opt.update(opt.names, out["loss"])

    return step
