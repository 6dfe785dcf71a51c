"""How a model is trained: `TrainConfig` (`--train.FIELD`) and per-group optimizer overrides
(`--train.optim.GROUP.FIELD`). Every field is checked when the config is built, so a bad value from
the command line or a damaged config.json is one line naming the field and its allowed range."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Literal

from deepzoo.train.schedules import SCHEDULES, ScheduleName

OptimizerName = Literal["sgd", "adamw", "rmsprop"]


def _require(ok: bool, name: str, expected: str, value: object) -> None:
    if not ok:
        raise ValueError(f"train.{name} must be {expected}, got {value!r}")


@dataclass(frozen=True)
class OptimConfig:
    """One named parameter group's optimizer. A field left None takes TrainConfig's value."""

    optimizer: OptimizerName | None = None
    """sgd (with momentum/nesterov), adamw or rmsprop."""
    lr: float | None = None
    """Peak learning rate of this group."""
    momentum: float | None = None
    """SGD momentum (RMSProp takes none, as in the WGAN paper)."""
    nesterov: bool | None = None
    """SGD with Nesterov momentum."""
    betas: tuple[float, float] | None = None
    """AdamW betas."""
    alpha: float | None = None
    """RMSProp smoothing constant of the squared-gradient average."""
    eps: float | None = None
    """AdamW and RMSProp: the constant added to the root of the squared-gradient average."""
    weight_decay: float | None = None
    """Decoupled weight decay on this group's weight matrices and kernels (never biases or norms)."""
    schedule: ScheduleName | None = None
    """Decay after warm-up: constant, cosine, linear or inverse-sqrt."""
    warmup_steps: int | None = None
    """Linear warm-up steps."""
    min_lr_ratio: float | None = None
    """Floor of the cosine/linear decay, as a fraction of lr."""
    grad_clip: float | None = None
    """Clip this group's gradient norm to this value (0: no clipping)."""

    def __post_init__(self) -> None:
        _check_optim(self, "optim.GROUP.")


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained. On the command line each field is `--train.FIELD`."""

    steps: int = 1000
    """Number of training steps (one batch each)."""
    batch_size: int = 128
    """Global batch size; under DDP each of the N ranks takes batch_size / N of it."""
    optimizer: OptimizerName = "adamw"
    """sgd (with momentum/nesterov), adamw or rmsprop: every group's, unless --train.optim.GROUP says."""
    lr: float = 1e-3
    """Peak learning rate."""
    momentum: float = 0.9
    """SGD momentum (RMSProp takes none, as in the WGAN paper)."""
    nesterov: bool = False
    """SGD with Nesterov momentum."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    alpha: float = 0.99
    """RMSProp smoothing constant."""
    eps: float = 1e-8
    """AdamW and RMSProp: the constant added to the root of the squared-gradient average (torch's
    default; SB3's A2C uses 1e-5)."""
    weight_decay: float = 0.0
    """Decoupled weight decay, applied to weight matrices and kernels only (not biases or norms)."""
    schedule: ScheduleName = "cosine"
    """Decay after warm-up: constant, cosine, linear or inverse-sqrt."""
    warmup_steps: int = 0
    """Linear warm-up steps."""
    min_lr_ratio: float = 0.0
    """Floor of the cosine/linear decay, as a fraction of lr."""
    grad_clip: float = 0.0
    """Clip the global gradient norm to this value (0: no clipping; the norm is logged either way)."""
    optim: dict[str, OptimConfig] = field(default_factory=dict)
    """Overrides for the parameter groups a model names (e.g. --train.optim.d.lr 4e-4)."""
    ema_decay: float = 0.0
    """Keep an exponential moving average of the weights with this decay (0: none)."""
    ema_of: str = ""
    """Average only this submodule (e.g. 'generator'); empty: the whole model."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """bf16 autocast or fp32; auto picks bf16 on CUDA with bf16 and on CPUs with AMX."""
    device: str = "auto"
    """auto (cuda > mps > cpu), or a torch device string."""
    compile: bool = False
    """torch.compile the model's training forward (the saved weights stay uncompiled)."""
    seed: int = 0
    """Seed of the initialization, the data order and every random draw."""
    log_every: int = 50
    """Write averaged training terms every this many steps (non-finite values are acted on here)."""
    eval_every: int = 500
    """Evaluate every this many steps (and at the end)."""
    checkpoint_every: int = 500
    """Save weights and state every this many steps (and at the end)."""
    max_seconds: float = 0.0
    """Stop after this much training wall time, evaluations not counted (0: no limit)."""
    horizon: Literal["steps", "time"] = "steps"
    """What the cosine/linear decay spans: train.steps, or 'time': the steps max_seconds allows at
    the speed measured so far (re-estimated at every log point), so that a slower machine still
    decays before its budget ends; its rates then depend on timing (resume is not bit-exact)."""
    diverge_factor: float = 100.0
    """Stop as diverged when the logged loss exceeds this multiple of the first logged |loss| (0: never)."""
    target: str = ""
    """Stop at the first evaluation that meets this, e.g. 'accuracy>=0.99'."""
    keep_best: str = ""
    """Keep the weights of the best evaluation as best.safetensors, e.g. 'accuracy:max' or 'val_loss:min'."""
    patience: int = 0
    """Early stopping: stop after this many evaluations without a new best (0: never; needs keep_best)."""
    progress: bool = True
    """Show a progress bar."""
    tensorboard: bool = False
    """Also write TensorBoard event files to run_dir/tensorboard (needs the tensorboard package)."""

    def __post_init__(self) -> None:
        _require(self.steps >= 0, "steps", ">= 0", self.steps)
        _require(self.batch_size >= 1, "batch_size", ">= 1", self.batch_size)
        _check_optim(self, "")
        _require(0.0 <= self.ema_decay < 1.0, "ema_decay", "in [0, 1)", self.ema_decay)
        _require(
            self.precision in ("auto", "bf16", "fp32"), "precision", "auto, bf16 or fp32", self.precision
        )
        for name in ("log_every", "eval_every", "checkpoint_every"):
            _require(getattr(self, name) >= 1, name, ">= 1", getattr(self, name))
        _require(self.max_seconds >= 0, "max_seconds", ">= 0", self.max_seconds)
        _require(self.horizon in ("steps", "time"), "horizon", "steps or time", self.horizon)
        if self.horizon == "time" and not self.max_seconds:
            raise ValueError("train.horizon 'time' needs a time budget: set train.max_seconds > 0")
        _require(self.diverge_factor >= 0, "diverge_factor", ">= 0", self.diverge_factor)
        _require(self.patience >= 0, "patience", ">= 0", self.patience)

    def group(self, name: str) -> OptimConfig:
        """The fully resolved settings of parameter group `name` (its overrides over the defaults)."""
        resolved = {f.name: getattr(self, f.name) for f in fields(OptimConfig)}
        overrides = self.optim.get(name, OptimConfig())
        resolved |= {k: v for k, v in vars(overrides).items() if v is not None}
        return OptimConfig(**resolved)

    def with_group(self, name: str, **settings) -> TrainConfig:
        """A copy with group `name`'s overrides updated by `settings`."""
        group = replace(self.optim.get(name, OptimConfig()), **settings)
        return replace(self, optim={**self.optim, name: group})


def _check_optim(c: TrainConfig | OptimConfig, prefix: str) -> None:
    """Ranges shared by the defaults and the per-group overrides (None: not set, not checked)."""

    def check(name: str, ok, expected: str) -> None:
        value = getattr(c, name)
        if value is not None:
            _require(ok(value), prefix + name, expected, value)

    check("optimizer", lambda v: v in ("sgd", "adamw", "rmsprop"), "sgd, adamw or rmsprop")
    check("lr", lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
    check("momentum", lambda v: 0 <= v < 1, "in [0, 1)")
    check("betas", lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1)")
    check("alpha", lambda v: 0 <= v < 1, "in [0, 1)")
    check("eps", lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
    check("weight_decay", lambda v: v >= 0, ">= 0")
    check("schedule", lambda v: v in SCHEDULES, f"one of {', '.join(SCHEDULES)}")
    check("warmup_steps", lambda v: v >= 0, ">= 0")
    check("min_lr_ratio", lambda v: 0 <= v <= 1, "in [0, 1]")
    check("grad_clip", lambda v: v >= 0, ">= 0")
