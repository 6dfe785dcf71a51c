"""How a model is trained: `TrainConfig` (`--train.FIELD`) and per-group optimizer overrides
(`--train.optim.GROUP.FIELD`). Every field is checked when the config is built, so a bad value from
the command line or a damaged config.json is one line naming the field and its allowed range."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Literal

from deepzoo.config import (
    Count,
    Index,
    NonNegative,
    Positive,
    Probability,
    Range,
    Rate,
    Seed,
    check_ranges,
    ranged,
)
from deepzoo.train.schedules import CYCLIC, SCHEDULES, ScheduleName

OptimizerName = Literal["sgd", "adam", "adamw", "adagrad", "rmsprop"]
OPTIMIZERS = ("sgd", "adam", "adamw", "adagrad", "rmsprop")
Betas = ranged(tuple[float, float], Range(0, 1, high_open=True))
Milestones = ranged(tuple[float, ...], Range(0, 1))
Factor = ranged(float, Range(0, 1, low_open=True))


def _require(ok: bool, flag: str, expected: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{flag} must be {expected}, got {value!r}")


@dataclass(frozen=True)
class OptimConfig:
    """One named parameter group's optimizer. A field left None takes TrainConfig's value."""

    optimizer: OptimizerName | None = None
    """sgd (with momentum/nesterov), adam (L2 weight decay), adamw (decoupled), adagrad or rmsprop."""
    lr: Positive | None = None
    """Peak learning rate of this group."""
    momentum: Rate | None = None
    """SGD momentum (RMSProp takes none, as in the WGAN paper)."""
    nesterov: bool | None = None
    """SGD with Nesterov momentum."""
    betas: Betas | None = None
    """Adam(W) betas."""
    alpha: Rate | None = None
    """RMSProp smoothing constant of the squared-gradient average."""
    eps: Positive | None = None
    """Adam(W), AdaGrad and RMSProp: the constant added to the root of the squared-gradient sum."""
    weight_decay: NonNegative | None = None
    """Weight decay of this group's weight matrices and kernels (never biases or norms): decoupled
    in adamw, L2 added to the gradient in the others."""
    schedule: ScheduleName | None = None
    """Decay after warm-up: constant, cosine, linear, inverse-sqrt or step."""
    warmup_steps: Index | None = None
    """Linear warm-up steps."""
    min_lr_ratio: Probability | None = None
    """Floor of the cosine/linear decay, as a fraction of lr."""
    lr_milestones: Milestones | None = None
    """Step schedule: where the rate drops, as fractions of the steps after warm-up."""
    lr_gamma: Factor | None = None
    """Step schedule: what the rate is multiplied by at each milestone."""
    lr_cycles: Count | None = None
    """Cosine/linear decay: warm restarts, the steps after warm-up split in this many cycles."""
    grad_clip: NonNegative | None = None
    """Clip this group's gradient norm to this value (0: no clipping)."""

    def __post_init__(self) -> None:
        _check_optim(self, "train.optim.GROUP.")


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained. On the command line each field is `--train.FIELD`."""

    steps: Index = 1000
    """Number of training steps (one batch each)."""
    batch_size: Count = 128
    """Global batch size; under DDP each of the N ranks takes batch_size / N of it."""
    optimizer: OptimizerName = "adamw"
    """sgd (with momentum/nesterov), adam (L2 weight decay), adamw (decoupled), adagrad or rmsprop:
    every group's, unless --train.optim.GROUP says."""
    lr: Positive = 1e-3
    """Peak learning rate."""
    momentum: Rate = 0.9
    """SGD momentum (RMSProp takes none, as in the WGAN paper)."""
    nesterov: bool = False
    """SGD with Nesterov momentum."""
    betas: Betas = (0.9, 0.999)
    """Adam(W) betas."""
    alpha: Rate = 0.99
    """RMSProp smoothing constant."""
    eps: Positive = 1e-8
    """Adam(W), AdaGrad and RMSProp: the constant added to the root of the squared-gradient average
    or sum (torch's Adam default; SB3's A2C uses 1e-5)."""
    weight_decay: NonNegative = 0.0
    """Weight decay of weight matrices and kernels only (not biases or norms): decoupled in adamw,
    L2 added to the gradient in the others."""
    schedule: ScheduleName = "cosine"
    """Decay after warm-up: constant, cosine, linear, inverse-sqrt or step."""
    warmup_steps: Index = 0
    """Linear warm-up steps."""
    min_lr_ratio: Probability = 0.0
    """Floor of the cosine/linear decay, as a fraction of lr."""
    lr_milestones: Milestones = (0.5, 0.75)
    """Step schedule: where the rate drops, as fractions of the steps after warm-up (ResNet's)."""
    lr_gamma: Factor = 0.1
    """Step schedule: what the rate is multiplied by at each milestone."""
    lr_cycles: Count = 1
    """Cosine/linear decay: warm restarts (SGDR): the steps after warm-up split in this many equal
    cycles, each decaying from lr (1: none)."""
    snapshots: bool = False
    """Save the weights at the end of each lr cycle to run_dir/snapshots/ (snapshot ensembles:
    `deepzoo eval RUN --snapshots --out DIR`)."""
    grad_clip: NonNegative = 0.0
    """Clip the global gradient norm to this value (0: no clipping; the norm is logged either way)."""
    optim: dict[str, OptimConfig] = field(default_factory=dict)
    """Overrides for the parameter groups a model names (e.g. --train.optim.d.lr 4e-4)."""
    ema_decay: Rate = 0.0
    """Keep an exponential moving average of the weights with this decay (0: none)."""
    ema_of: str = ""
    """Average only this submodule (e.g. 'generator'); empty: the whole model."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """bf16 autocast or fp32; auto picks bf16 on CUDA with bf16 and on CPUs with AMX."""
    device: str = "auto"
    """auto (cuda > mps > cpu), or a torch device string."""
    compile: bool = False
    """torch.compile the model's training forward (the saved weights stay uncompiled)."""
    seed: Seed = 0
    """Seed of the initialization, the data order and every random draw."""
    log_every: Count = 50
    """Write averaged training terms every this many steps (non-finite values are acted on here)."""
    eval_every: Count = 500
    """Evaluate every this many steps (and at the end)."""
    checkpoint_every: Count = 500
    """Save weights and state every this many steps (and at the end)."""
    max_seconds: NonNegative = 0.0
    """Stop after this much training wall time, evaluations not counted (0: no limit)."""
    horizon: Literal["steps", "time"] = "steps"
    """What the cosine/linear/step decay spans: train.steps, or 'time': the steps max_seconds allows at
    the speed measured so far (re-estimated at every log point), so that a slower machine still
    decays before its budget ends; its rates then depend on timing (resume is not bit-exact)."""
    diverge_factor: NonNegative = 100.0
    """Stop as diverged when the logged loss exceeds this multiple of the first logged |loss| (0: never)."""
    target: str = ""
    """Stop at the first evaluation that meets this, e.g. 'accuracy>=0.99'."""
    keep_best: str = ""
    """Keep the weights of the best evaluation as best.safetensors, e.g. 'accuracy:max' or 'val_loss:min'
    (a tie with the best so far is not a new best: the earlier weights stay, as in Keras)."""
    patience: Index = 0
    """Early stopping: stop after this many evaluations without a new best (0: never; needs keep_best)."""
    progress: bool = True
    """Show a progress bar."""
    tensorboard: bool = False
    """Also write TensorBoard event files to run_dir/tensorboard (needs the tensorboard package)."""

    def __post_init__(self) -> None:
        """The ranges of the annotations (`check_ranges`), and what tyro checks on the command
        line but a config.json does not pass through: the choices and the betas' length."""
        _check_optim(self, "train.")
        _require(
            self.precision in ("auto", "bf16", "fp32"),
            "train.precision",
            "auto, bf16 or fp32",
            self.precision,
        )
        _require(self.horizon in ("steps", "time"), "train.horizon", "steps or time", self.horizon)
        if self.horizon == "time" and not self.max_seconds:
            raise ValueError("train.horizon 'time' needs a time budget: set train.max-seconds > 0")
        if self.snapshots and self.horizon == "time":
            raise ValueError("train.snapshots needs cycles of known steps: train.horizon steps, not time")

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
    """The ranges (`check_ranges`, naming fields after `prefix`) and the choices shared by the
    defaults and the per-group overrides (None: not set, not checked)."""
    check_ranges(c, prefix)
    if c.optimizer is not None:
        _require(
            c.optimizer in OPTIMIZERS, prefix + "optimizer", f"one of {', '.join(OPTIMIZERS)}", c.optimizer
        )
    if c.betas is not None:
        _require(len(c.betas) == 2, prefix + "betas", "two numbers", c.betas)
    if c.schedule is not None:
        _require(c.schedule in SCHEDULES, prefix + "schedule", f"one of {', '.join(SCHEDULES)}", c.schedule)
    if c.lr_cycles not in (None, 1) and c.schedule is not None and c.schedule not in CYCLIC:
        raise ValueError(
            f"{prefix}lr-cycles {c.lr_cycles} (warm restarts) needs a cosine or linear {prefix}schedule, "
            f"not {c.schedule}"
        )
