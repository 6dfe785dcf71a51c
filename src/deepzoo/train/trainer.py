"""The training loop: the one place in deepzoo that runs training steps.

Each step reads this rank's batch from a batch source (`batches.py`) and calls the model's
`train_step(batch, step, opt)`, or for a model with only `loss()` the default step (`step.py`);
`opt.update` is the only code that changes weights. Batches are a pure function of the step for
datasets and generated data, which is what makes `resume` and DDP reproduce an uninterrupted
single-process run.

The host is synchronised only at log points (every `log_every` steps), before evaluations and
before saves: logged terms are summed on the device, and a non-finite loss or gradient is a device
flag read there. A non-finite value or a diverging loss stops the run before anything is saved,
so the last checkpoint on disk is the last good one. Ctrl-C (SIGINT) or SIGTERM ends the current
step, saves a checkpoint and says how to resume.
"""

from __future__ import annotations

import contextlib
import operator
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from deepzoo.data.tensors import TensorData
from deepzoo.train import checkpoint as ckpt
from deepzoo.train import distributed
from deepzoo.train.batches import BatchSource, GeneratedBatches, ShuffledBatches, batch_indices
from deepzoo.train.config import OptimConfig, TrainConfig
from deepzoo.train.ema import EMA
from deepzoo.train.errors import DivergedError, NonFiniteLossError, TrainingInterrupted, TrainingStopped
from deepzoo.train.logging import MetricsLog, TensorBoardLog
from deepzoo.train.rundir import RunDirLock, claim_new_run
from deepzoo.train.schedules import cycle_ends
from deepzoo.train.step import Optimizers, default_step, named_groups

__all__ = [
    "DivergedError",
    "NonFiniteLossError",
    "OptimConfig",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingInterrupted",
    "TrainingStopped",
    "batch_indices",
    "evaluation_mode",
    "use_bf16",
]

Evaluate = Callable[[nn.Module, int, Path], dict[str, float]]


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


@contextlib.contextmanager
def evaluation_mode(model: nn.Module, device: torch.device, bf16: bool) -> Iterator[nn.Module]:
    """How every evaluation runs (the trainer's and `deepzoo eval`): eval mode, no gradients,
    the training precision; the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            yield model
    finally:
        model.train(was_training)


def parse_target(target: str) -> Callable[[dict[str, float]], bool] | None:
    """'name>=value' or 'name<=value' as a predicate on evaluation metrics."""
    if not target:
        return None
    for symbol, compare in ((">=", operator.ge), ("<=", operator.le)):
        if symbol in target:
            name, value = target.split(symbol)
            threshold = float(value)
            return lambda metrics: name.strip() in metrics and compare(metrics[name.strip()], threshold)
    raise ValueError(f"train.target must look like 'accuracy>=0.99' or 'loss<=1.5', got {target!r}")


def parse_keep_best(keep_best: str) -> tuple[str, str] | None:
    """'name:max' or 'name:min' -> (name, mode)."""
    if not keep_best:
        return None
    name, _, mode = keep_best.rpartition(":")
    if not name or mode not in ("max", "min"):
        raise ValueError(
            f"train.keep_best must look like 'accuracy:max' or 'val_loss:min', got {keep_best!r}"
        )
    return name, mode


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


class _StopSignals:
    """While active, the first SIGINT/SIGTERM sets `requested` (the loop stops after its step);
    a second SIGINT interrupts at once. Only the main thread can own signal handlers."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


NO_PARAMETERS = "this model has no trainable parameters: train it with --train.steps 0"


class Trainer:
    """Trains `model` on `data` (a TensorData, shuffled, or any batch source) under `cfg`,
    writing everything to `run_dir`.

    run_dir holds config.json (the `config_record` given), metrics.jsonl, curves.png,
    model.safetensors (and ema.safetensors), and state.pt (every group's optimizer, step, RNG and
    batch-source states, elapsed time). With `resume=True` training continues from run_dir's
    checkpoint and ends with the same weights as an uninterrupted run.
    """

    def __init__(
        self,
        model: nn.Module,
        data: TensorData | BatchSource,
        cfg: TrainConfig,
        run_dir: str | Path,
        *,
        evaluate: Evaluate | None = None,
        config_record: dict | None = None,
        resume: bool = False,
        dist: distributed.DistInfo | None = None,
        name: str = "",
        overwrite: bool = False,
    ) -> None:
        self.cfg = cfg
        self.dist = dist or distributed.setup(cfg.device)
        self.device = self.dist.device
        self.bf16 = use_bf16(cfg.precision, self.device)
        self.run_dir = Path(run_dir)
        self.name = name or self.run_dir.name
        self.evaluate_fn = evaluate
        self.target = parse_target(cfg.target)
        self.keep_best = parse_keep_best(cfg.keep_best)
        if cfg.patience and not self.keep_best:
            raise ValueError("train.patience (early stopping) needs train.keep_best, e.g. 'accuracy:max'")
        self.best: dict[str, Any] = {"value": None, "step": None, "bad_evals": 0}
        if cfg.batch_size % self.dist.world_size:
            raise ValueError(
                f"train.batch_size {cfg.batch_size} is not divisible by {self.dist.world_size} ranks"
            )
        self.model = model.to(self.device)
        if isinstance(data, TensorData):
            data = ShuffledBatches(
                data.to(self.device), cfg.batch_size, cfg.seed, self.dist.rank, self.dist.world_size
            )
        elif isinstance(data, GeneratedBatches):
            data = data.placed(self.dist.rank, self.dist.world_size, self.device)
        self.batches: BatchSource = data
        groups = named_groups(self.model)
        self.opt = Optimizers(groups, cfg, self.dist) if groups else None
        if self.opt is None and cfg.steps > 0:
            raise ValueError(NO_PARAMETERS)
        self.step_fn = self._step_function()
        self.ema = EMA(self.model, cfg.ema_decay, cfg.ema_of) if cfg.ema_decay else None
        self.step, self.elapsed, self.saved_step = 0, 0.0, 0
        self.initial_loss: float | None = None  # |loss| of the first step, the divergence yardstick
        self._first_loss: torch.Tensor | None = None
        self.lock = RunDirLock(self.run_dir) if self.dist.is_main else None
        try:
            if self.dist.is_main and not resume:
                claim_new_run(self.run_dir, overwrite)
                if config_record is not None:
                    ckpt.write_json(self.run_dir / ckpt.CONFIG, config_record)
            distributed.barrier(self.dist)
            if resume:
                self._load_checkpoint()
            else:
                torch.manual_seed(cfg.seed + self.dist.rank)
        except BaseException:
            self.release()
            raise
        self.log = (
            MetricsLog(self.run_dir / "metrics.jsonl", self.step if resume else None)
            if self.dist.is_main
            else None
        )
        self.tensorboard = TensorBoardLog(self.run_dir) if cfg.tensorboard and self.dist.is_main else None

    def release(self) -> None:
        """Free the run directory for other processes (done when `fit` returns or fails)."""
        if getattr(self, "tensorboard", None) is not None:
            self.tensorboard.close()
        if self.lock is not None:
            self.lock.release()

    def _step_function(self):
        if self.opt is None:  # nothing to optimize (a kNN): fit() only evaluates
            return None
        if hasattr(self.model, "train_step"):
            if self.cfg.compile:
                raise ValueError("train.compile compiles loss(); compile inside train_step for this model")
            return self.model.train_step
        if self.cfg.compile:
            return default_step(torch.compile(self.model.loss))
        return default_step(self.model.loss)

    # ---------------------------------------------------------------- the loop
    def fit(self) -> TrainResult:
        try:
            return self._fit()
        finally:
            self.release()

    def _fit(self) -> TrainResult:
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
            desc=f"{self.name} (training batches)",
        )
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}  # a term may be logged on some steps only (a GAN's generator loss)
        window = 0
        started = time.perf_counter() - self.elapsed
        with _StopSignals() as stop:
            try:
                while self.step < cfg.steps:
                    terms = self._train_step()
                    self.step += 1
                    window += 1
                    for key, value in terms.items():
                        value = value.detach().float()
                        sums[key] = sums[key] + value if key in sums else value
                        counts[key] = counts.get(key, 0) + 1
                    self.elapsed = time.perf_counter() - started
                    self._save_snapshot()
                    bar.update(1)
                    at_log = self.step % cfg.log_every == 0 or self.step == cfg.steps
                    if at_log:
                        self._estimate_horizon()
                        means = self._log_window(sums, counts, window)
                        bar.set_postfix({k: f"{v:.4g}" for k, v in means.items()}, refresh=False)
                        sums, counts, window = {}, {}, 0
                    out_of_time = cfg.max_seconds > 0 and self.elapsed >= cfg.max_seconds
                    if self.dist.enabled:  # every rank must take the same branch
                        out_of_time = at_log and distributed.any_rank(out_of_time, self.dist)
                    last = self.step == cfg.steps or out_of_time
                    if self.step % cfg.eval_every == 0 or last:
                        result.metrics = self._evaluate()
                        started = time.perf_counter() - self.elapsed  # evaluation time is not training time
                        if self.target and self.target(result.metrics):
                            result.reached_target = last = True
                        if self._track_best(result.metrics):
                            result.stopped_early = last = True
                    if self.step % cfg.checkpoint_every == 0 or last:
                        self._save_checkpoint()
                    if self._stop_requested(stop, at_log):
                        self._save_checkpoint()
                        raise TrainingInterrupted(
                            f"{stop.requested or 'a signal'} at step {self.step}: a checkpoint of it is in "
                            f"{self.run_dir}; continue with `deepzoo train --resume {self.run_dir}`"
                        )
                    if last:
                        break
            finally:
                bar.close()
        result.step = self.step
        result.best = dict(self.best)
        return result

    def _estimate_horizon(self) -> None:
        """Under `horizon="time"`, end the decays at the steps max_seconds allows at the mean speed
        so far, max_seconds * step / elapsed, with the slowest rank's elapsed time (the budget's
        end is the slowest rank's too), so every rank sets the same rates."""
        if self.cfg.horizon != "time" or self.opt is None or self.step == 0:
            return
        elapsed = distributed.max_over_ranks(self.elapsed, self.dist)
        self.opt.set_horizon(round(self.cfg.max_seconds * self.step / max(elapsed, 1e-9)))

    def _stop_requested(self, stop: _StopSignals, at_log: bool) -> bool:
        if not self.dist.enabled:
            return stop.requested is not None
        return at_log and distributed.any_rank(stop.requested is not None, self.dist)

    def _train_step(self) -> dict[str, torch.Tensor]:
        self.opt.set_step(self.step)
        batch = self.batches.next(self.step)
        self.model.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            terms = self.step_fn(batch, self.step, self.opt)
        if self.ema is not None:
            self.ema.update()
        if self.step == 0 and "loss" in terms:
            self._first_loss = terms["loss"].detach().float()
        return terms

    def _log_window(
        self, sums: dict[str, torch.Tensor], counts: dict[str, int], window: int
    ) -> dict[str, float]:
        """Check for non-finite values and divergence, then record the window's mean terms (one
        host synchronisation for all of them)."""
        self.opt.raise_if_non_finite(self.run_dir, self.saved_step)
        names = list(sums)
        values = torch.stack([sums[k] for k in names]).tolist() if names else []
        means = {k: v / counts[k] for k, v in zip(names, values)}
        if self.initial_loss is None and self._first_loss is not None:
            self.initial_loss = abs(float(self._first_loss))
        factor = self.cfg.diverge_factor
        if factor and self.initial_loss and "loss" in means and means["loss"] > factor * self.initial_loss:
            raise DivergedError(
                f"the loss diverged: {means['loss']:.4g} over steps {self.step - window + 1}-{self.step}, "
                f"more than {factor:g} times the first step's |loss| {self.initial_loss:.4g} (a smaller "
                f"--train.lr?); stopped, the last good checkpoint (step {self.saved_step}) is kept in "
                f"{self.run_dir}"
            )
        self._record("train", means | self.opt.lrs())
        return means

    # ---------------------------------------------------------------- evaluation and logs
    @property
    def eval_model(self) -> nn.Module:
        if self.ema is None:
            return self.model
        self.ema.copy_rest()
        return self.ema.module

    def _evaluate(self) -> dict[str, float]:
        if self.opt is not None:
            self.opt.raise_if_non_finite(self.run_dir, self.saved_step)
        metrics: dict[str, float] = {}
        if self.dist.is_main and self.evaluate_fn is not None:
            with evaluation_mode(self.eval_model, self.device, self.bf16) as model:
                metrics = self.evaluate_fn(model, self.step, self.run_dir)
            self._record("eval", metrics)
        return distributed.broadcast_object(metrics, self.dist)

    def _save_snapshot(self) -> None:
        """At the end of each lr cycle (`schedules.cycle_ends` of the train-level warm-up and
        lr_cycles; a group's own overrides do not move them) under train.snapshots, the weights
        evaluations use, to snapshots/step-NNNNNN.safetensors."""
        cfg = self.cfg
        if (
            cfg.snapshots
            and self.dist.is_main
            and self.step in cycle_ends(cfg.steps, cfg.warmup_steps, cfg.lr_cycles)
        ):
            path = ckpt.snapshot_path(self.run_dir, self.step)
            path.parent.mkdir(exist_ok=True)
            ckpt.write_bytes(path, ckpt.weights_bytes(self.eval_model, self.step))

    def _track_best(self, metrics: dict[str, float]) -> bool:
        """Save best.safetensors when the watched metric improves; True when patience runs out.
        Without an evaluation (speed measurements) there is nothing to watch."""
        if self.keep_best is None or self.evaluate_fn is None:
            return False
        name, mode = self.keep_best
        if name not in metrics:
            raise ValueError(f"train.keep_best watches {name!r}, but the evaluation gives {sorted(metrics)}")
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
            record |= {k: float(v) for k, v in terms.items()}
            self.log.write(record)
            if self.tensorboard is not None:
                self.tensorboard.write(record)

    # ---------------------------------------------------------------- checkpoints
    def _save_checkpoint(self) -> None:
        if self.opt is not None:
            self.opt.raise_if_non_finite(self.run_dir, self.saved_step)
        mine = {"rng": _rng_state(self.device), "batches": self.batches.state_dict()}
        if self.dist.enabled:
            gathered = [None] * self.dist.world_size if self.dist.is_main else None
            torch.distributed.gather_object(mine, gathered, dst=0)
            per_rank = gathered
        else:
            per_rank = [mine]
        if self.dist.is_main:
            files = {ckpt.WEIGHTS: ckpt.weights_bytes(self.model, self.step)}
            if self.ema is not None:
                files[ckpt.EMA_WEIGHTS] = ckpt.weights_bytes(self.eval_model, self.step)
            state = {
                "step": self.step,
                "elapsed": self.elapsed,
                "optimizers": self.opt.state_dict() if self.opt else {},
                "rng": [r["rng"] for r in per_rank],
                "batches": [r["batches"] for r in per_rank],
                "best": self.best,
                "initial_loss": self.initial_loss,
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
            raise ckpt.DamagedRunFile(
                f"{weights_path} is from step {ckpt.file_step(weights_path)} but {state_path} from step "
                f"{state['step']}: the checkpoint is inconsistent; train the run again"
            )
        ckpt.load_weights(weights_path, self.model)
        if self.ema is not None:
            ckpt.load_weights(self.run_dir / ckpt.EMA_WEIGHTS, self.ema.module)
        optimizers = state.get("optimizers", {"model": state.get("optimizer", {})})
        if self.opt is not None:
            self.opt.load_state_dict(optimizers)
        rng_states = state["rng"]
        if len(rng_states) != self.dist.world_size:
            raise ValueError(
                f"the checkpoint was written by {len(rng_states)} processes; resume it with "
                f"as many (got {self.dist.world_size})"
            )
        _set_rng_state(rng_states[self.dist.rank], self.device)
        self.batches.load_state_dict(state.get("batches", [{}] * len(rng_states))[self.dist.rank])
        self.step, self.elapsed = int(state["step"]), float(state["elapsed"])
        self._estimate_horizon()
        self.best = state.get("best", self.best)
        self.initial_loss = state.get("initial_loss")
        self.saved_step = self.step
