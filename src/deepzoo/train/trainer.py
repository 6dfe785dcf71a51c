"""The training loop: the one place in deepzoo where optimizer steps happen.

A model meets the contract of ARCHITECTURE.md: `model.loss(batch) -> {"loss": Tensor, ...}`;
every other key is a logged term. The data are a TensorData held on the device; batch t is the
t-th slice of a permutation drawn from (seed, epoch), so the data order is a pure function of the
step, which is what makes `resume` and DDP reproduce an uninterrupted single-process run.
"""

from __future__ import annotations

import math
import operator
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from deepzoo.data.tensors import TensorData
from deepzoo.train import checkpoint as ckpt
from deepzoo.train import distributed
from deepzoo.train.ema import EMA
from deepzoo.train.logging import MetricsLog
from deepzoo.train.schedules import ScheduleName, lr_factor

Evaluate = Callable[[nn.Module, int, Path], dict[str, float]]


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained. On the command line each field is `--train.FIELD`."""

    steps: int = 1000
    """Number of optimizer steps."""
    batch_size: int = 128
    """Global batch size; under DDP each of the N ranks takes batch_size / N of it."""
    optimizer: Literal["sgd", "adamw"] = "adamw"
    """sgd (with momentum/nesterov) or adamw."""
    lr: float = 1e-3
    """Peak learning rate."""
    momentum: float = 0.9
    """SGD momentum."""
    nesterov: bool = False
    """SGD with Nesterov momentum."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
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
    ema_decay: float = 0.0
    """Keep an exponential moving average of the weights with this decay (0: none)."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """bf16 autocast or fp32; auto picks bf16 on CUDA with bf16 and on CPUs with AMX."""
    device: str = "auto"
    """auto (cuda > mps > cpu), or a torch device string."""
    seed: int = 0
    """Seed of the initialization, the data order and every random draw."""
    log_every: int = 50
    """Write averaged training terms every this many steps."""
    eval_every: int = 500
    """Evaluate every this many steps (and at the end)."""
    checkpoint_every: int = 500
    """Save weights and state every this many steps (and at the end)."""
    max_seconds: float = 0.0
    """Stop after this much training wall time (0: no limit)."""
    target: str = ""
    """Stop at the first evaluation that meets this, e.g. 'accuracy>=0.99'."""
    keep_best: str = ""
    """Keep the weights of the best evaluation as best.safetensors, e.g. 'accuracy:max' or 'val_loss:min'."""
    patience: int = 0
    """Early stopping: stop after this many evaluations without a new best (0: never; needs keep_best)."""
    progress: bool = True
    """Show a progress bar."""


class NonFiniteLossError(RuntimeError):
    """The loss or gradient became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    metrics: dict[str, float] = field(default_factory=dict)
    reached_target: bool = False
    stopped_early: bool = False
    best: dict[str, Any] = field(default_factory=dict)


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether to autocast to bf16: asked for, or `auto` on hardware where it is faster."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
    return False


def parse_target(target: str) -> Callable[[dict[str, float]], bool] | None:
    """'name>=value' or 'name<=value' as a predicate on evaluation metrics."""
    if not target:
        return None
    for symbol, compare in ((">=", operator.ge), ("<=", operator.le)):
        if symbol in target:
            name, value = target.split(symbol)
            threshold = float(value)
            return lambda metrics: name.strip() in metrics and compare(metrics[name.strip()], threshold)
    raise ValueError(f"target must look like 'accuracy>=0.99' or 'loss<=1.5', got {target!r}")


def parse_keep_best(keep_best: str) -> tuple[str, str] | None:
    """'name:max' or 'name:min' -> (name, mode)."""
    if not keep_best:
        return None
    name, _, mode = keep_best.rpartition(":")
    if not name or mode not in ("max", "min"):
        raise ValueError(f"keep_best must look like 'accuracy:max' or 'val_loss:min', got {keep_best!r}")
    return name, mode


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> torch.Tensor:
    """Indices of global batch `step`: consecutive slices of a fresh permutation every epoch."""
    per_epoch = n // batch_size
    if per_epoch == 0:
        raise ValueError(f"batch size {batch_size} exceeds the dataset size {n}")
    epoch, i = divmod(step, per_epoch)
    perm = _permutation(n, seed, epoch)
    return perm[i * batch_size : (i + 1) * batch_size]


_perm_cache: dict[tuple[int, int, int], torch.Tensor] = {}


def _permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    key = (n, seed, epoch)
    if key not in _perm_cache:
        _perm_cache.clear()
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        _perm_cache[key] = torch.randperm(n, generator=generator)
    return _perm_cache[key]


class _LossForward(nn.Module):
    """Routes DDP's forward to `model.loss` so gradient synchronisation hooks are armed."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.model.loss(batch)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD or AdamW; weight decay on tensors of 2+ dimensions only."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {cfg.optimizer!r}")


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


class Trainer:
    """Trains `model` on `data` under `cfg`, writing everything to `run_dir`.

    run_dir holds config.json (the `config_record` given), metrics.jsonl, curves.png,
    model.safetensors (and ema.safetensors), and state.pt (optimizer, step, RNG, elapsed time).
    With `resume=True` training continues from run_dir's checkpoint and ends with the same
    weights as an uninterrupted run.
    """

    def __init__(
        self,
        model: nn.Module,
        data: TensorData,
        cfg: TrainConfig,
        run_dir: str | Path,
        *,
        evaluate: Evaluate | None = None,
        config_record: dict | None = None,
        resume: bool = False,
    ) -> None:
        self.cfg = cfg
        self.dist = distributed.setup(cfg.device)
        self.device = self.dist.device
        self.bf16 = use_bf16(cfg.precision, self.device)
        self.run_dir = Path(run_dir)
        self.evaluate_fn = evaluate
        self.target = parse_target(cfg.target)
        self.keep_best = parse_keep_best(cfg.keep_best)
        if cfg.patience and not self.keep_best:
            raise ValueError("early stopping (patience) needs keep_best, e.g. 'accuracy:max'")
        self.best: dict[str, Any] = {"value": None, "step": None, "bad_evals": 0}
        if cfg.batch_size % self.dist.world_size:
            raise ValueError(f"batch size {cfg.batch_size} is not divisible by {self.dist.world_size} ranks")
        self.model = model.to(self.device)
        self.data = data.to(self.device)
        trainable = any(p.requires_grad for p in self.model.parameters())
        self.optimizer = build_optimizer(self.model, cfg) if trainable else None
        if self.optimizer is None and cfg.steps > 0:
            raise ValueError("this model has no trainable parameters: train it with --train.steps 0")
        self.ema = EMA(self.model, cfg.ema_decay) if cfg.ema_decay else None
        self.step, self.elapsed = 0, 0.0
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if config_record is not None and not resume:
                ckpt.write_json(self.run_dir / ckpt.CONFIG, config_record)
        if resume:
            self._load_checkpoint()
        else:
            torch.manual_seed(cfg.seed + self.dist.rank)
        self.log = (
            MetricsLog(self.run_dir / "metrics.jsonl", self.step if resume else None)
            if self.dist.is_main
            else None
        )
        self.forward = (
            DistributedDataParallel(
                _LossForward(self.model),
                device_ids=[self.device] if self.device.type == "cuda" else None,
            )
            if self.dist.enabled
            else _LossForward(self.model)
        )

    # ---------------------------------------------------------------- the loop
    def fit(self) -> TrainResult:
        cfg = self.cfg
        result = TrainResult(self.run_dir, self.step)
        if self.step == 0:
            self._save_checkpoint()  # a run directory is loadable from its first moment
        if cfg.steps == 0:  # nothing to optimize (a kNN): evaluate what was fitted
            result.metrics = self._evaluate()
            self._save_checkpoint()
            return result
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            disable=not (cfg.progress and self.dist.is_main),
            dynamic_ncols=True,
            desc=self.run_dir.parent.name or "train",
        )
        sums: dict[str, float] = defaultdict(float)
        window = 0
        started = time.perf_counter() - self.elapsed
        try:
            while self.step < cfg.steps:
                terms = self._train_step()
                self.step += 1
                window += 1
                for key, value in terms.items():
                    sums[key] += value
                self.elapsed = time.perf_counter() - started
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    means = {k: v / window for k, v in sums.items()}
                    self._record("train", means)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in means.items()}, refresh=False)
                    sums.clear()
                    window = 0
                out_of_time = cfg.max_seconds > 0 and self.elapsed >= cfg.max_seconds
                last = self.step == cfg.steps or out_of_time
                if self.step % cfg.eval_every == 0 or last:
                    result.metrics = self._evaluate()
                    started = time.perf_counter() - self.elapsed  # evaluation time counts
                    if self.target and self.target(result.metrics):
                        result.reached_target = last = True
                    if self._track_best(result.metrics):
                        result.stopped_early = last = True
                if self.step % cfg.checkpoint_every == 0 or last:
                    self._save_checkpoint()
                if last:
                    break
        finally:
            bar.close()
        result.step = self.step
        result.best = dict(self.best)
        return result

    def _train_step(self) -> dict[str, float]:
        cfg = self.cfg
        factor = lr_factor(self.step, cfg.steps, cfg.schedule, cfg.warmup_steps, cfg.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * factor
        index = batch_indices(self.step, len(self.data), cfg.batch_size, cfg.seed)
        index = index[self.dist.rank :: self.dist.world_size].to(self.device)
        batch = self.data[index]
        self.model.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.forward(batch)
        loss = out["loss"]
        loss.backward()
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        terms = {k: float(v.detach()) for k, v in out.items()}
        terms["grad_norm"] = float(grad_norm)
        if not all(math.isfinite(v) for v in (terms["loss"], terms["grad_norm"])):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(
                f"non-finite {'loss' if not math.isfinite(terms['loss']) else 'gradient'} at "
                f"step {self.step + 1} ({', '.join(f'{k}={v:.4g}' for k, v in terms.items())}); "
                f"stopped, the last good checkpoint (step {self.saved_step}) is kept in "
                f"{self.run_dir}"
            )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        return terms

    # ---------------------------------------------------------------- evaluation and logs
    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _evaluate(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.dist.is_main and self.evaluate_fn is not None:
            model = self.eval_model
            was_training = model.training
            model.eval()
            with (
                torch.no_grad(),
                torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16),
            ):
                metrics = self.evaluate_fn(model, self.step, self.run_dir)
            model.train(was_training)
            self._record("eval", metrics)
        metrics = distributed.broadcast_object(metrics, self.dist)
        return metrics

    def _track_best(self, metrics: dict[str, float]) -> bool:
        """Save best.safetensors when the watched metric improves; True when patience runs out."""
        if self.keep_best is None:
            return False
        name, mode = self.keep_best
        if name not in metrics:
            raise ValueError(f"keep_best watches {name!r}, but the evaluation gives {sorted(metrics)}")
        value, best = metrics[name], self.best["value"]
        if best is None or (value > best if mode == "max" else value < best):
            self.best = {"value": value, "step": self.step, "bad_evals": 0}
            if self.dist.is_main:
                ckpt.write_bytes(
                    self.run_dir / ckpt.BEST_WEIGHTS, ckpt.weights_bytes(self.eval_model, self.step)
                )
            return False
        self.best["bad_evals"] += 1
        return self.cfg.patience > 0 and self.best["bad_evals"] >= self.cfg.patience

    def _record(self, split: str, terms: dict[str, float]) -> None:
        if self.log is not None:
            record = {"step": self.step, "split": split, "time": round(self.elapsed, 4)}
            if split == "train":
                record["lr"] = self.optimizer.param_groups[0]["lr"]
            self.log.write(record | {k: float(v) for k, v in terms.items()})

    # ---------------------------------------------------------------- checkpoints
    saved_step = 0

    def _save_checkpoint(self) -> None:
        rng = _rng_state(self.device)
        if self.dist.enabled:
            gathered = [None] * self.dist.world_size if self.dist.is_main else None
            torch.distributed.gather_object(rng, gathered, dst=0)
            rng_states = gathered
        else:
            rng_states = [rng]
        if self.dist.is_main:
            files = {ckpt.WEIGHTS: ckpt.weights_bytes(self.model, self.step)}
            if self.ema is not None:
                files[ckpt.EMA_WEIGHTS] = ckpt.weights_bytes(self.ema.module, self.step)
            state = {
                "step": self.step,
                "elapsed": self.elapsed,
                "optimizer": self.optimizer.state_dict() if self.optimizer else {},
                "rng": rng_states,
                "best": self.best,
            }
            files[ckpt.STATE] = ckpt.state_bytes(state)
            ckpt.save_checkpoint(self.run_dir, files)
            if self.log is not None and self.log.records:
                from deepzoo.viz import plot_curves

                plot_curves(self.log.records, self.run_dir / "curves.png")
        self.saved_step = self.step
        distributed.barrier(self.dist)

    def _load_checkpoint(self) -> None:
        state_path, weights_path = self.run_dir / ckpt.STATE, self.run_dir / ckpt.WEIGHTS
        if self.dist.is_main:
            ckpt.recover_checkpoint(self.run_dir)
        distributed.barrier(self.dist)
        if not state_path.exists() or not weights_path.exists():
            raise FileNotFoundError(f"{self.run_dir} holds no checkpoint to resume from")
        state = ckpt.load_state(state_path)
        if ckpt.file_step(weights_path) != state["step"]:
            raise RuntimeError(
                f"{weights_path} is from step {ckpt.file_step(weights_path)} but {state_path} "
                f"from step {state['step']}: the checkpoint is inconsistent"
            )
        ckpt.load_weights(weights_path, self.model)
        if self.ema is not None:
            ckpt.load_weights(self.run_dir / ckpt.EMA_WEIGHTS, self.ema.module)
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        rng_states = state["rng"]
        if len(rng_states) != self.dist.world_size:
            raise ValueError(
                f"the checkpoint was written by {len(rng_states)} processes; resume it with "
                f"as many (got {self.dist.world_size})"
            )
        _set_rng_state(rng_states[self.dist.rank], self.device)
        self.step, self.elapsed = int(state["step"]), float(state["elapsed"])
        self.best = state.get("best", self.best)
        self.saved_step = self.step
