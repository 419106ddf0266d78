"""The training loop, shared by every task.

The loop knows nothing of segmentation: the :class:`~pixelseg.tasks.base.Task` forms
batches, calls the model, computes the loss and the metrics. The trainer owns
optimisation (accumulation, clipping, AMP, schedules), validation, best-checkpoint
selection, early stopping and exact resume. Read it top to bottom: set-up, ``fit``, one
epoch, one step, validation and selection.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pixelseg.checkpoints import save_checkpoint
from pixelseg.config import ExperimentConfig, TrainConfig
from pixelseg.engine.device import (
    autocast_context,
    make_grad_scaler,
    model_layout,
    move_to_device,
    resolve_runtime,
)
from pixelseg.engine.distributed import DistContext, process_runtime, wrap_for_processes
from pixelseg.engine.ema import make_ema
from pixelseg.engine.run_state import TrainState, restore_run, run_payload
from pixelseg.engine.sampling import EpochBatchSampler, SeededDataset, seed_worker
from pixelseg.engine.schedules import LRSchedule, build_optimizer, build_plateau, lr_scale
from pixelseg.engine.validation import validate
from pixelseg.errors import ConfigError, NonFiniteError, TrainingDivergedError
from pixelseg.tasks.base import Task

__all__ = ["TrainState", "Trainer"]

log = logging.getLogger(__name__)


class Trainer:
    """Train ``model`` on ``train_set`` for the task, validating on ``val_set``.

    ``checkpoint_meta`` is stored in every checkpoint next to the states (the task, model
    spec, class names, normalisation...), so that prediction needs nothing but the
    checkpoint. ``dist`` says which process this is; only rank 0 writes and calls back.
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        train_set: Dataset,
        val_set: Dataset | None,
        config: ExperimentConfig,
        run_dir: str | Path,
        checkpoint_meta: dict[str, Any],
        callbacks: list[Any] | None = None,
        dist: DistContext | None = None,
    ) -> None:
        self.config, self.task, self.train_cfg = config, task, config.train
        self.run_dir, self.checkpoint_meta = Path(run_dir), checkpoint_meta
        self.dist = dist or DistContext()
        self.callbacks = list(callbacks or []) if self.dist.is_main else []
        self.runtime = process_runtime(resolve_runtime(self.train_cfg), self.dist)
        self.best_metric, self.best_mode = resolve_best(self.train_cfg, task)
        self._check_best_metric()
        # ``model`` is the module itself (saved, averaged, validated); ``train_model`` is
        # what the training forward calls: the same module, or its DDP wrapper.
        self.model = model.to(self.runtime.device)
        if self.runtime.memory_format is not torch.contiguous_format:
            self.model = self.model.to(memory_format=model_layout(self.model, self.runtime))
        self.train_model = wrap_for_processes(self.model, self.train_cfg, self.runtime, self.dist)
        self.model = getattr(self.train_model, "module", self.train_model)
        decay = self.train_cfg.ema_decay
        self.ema = make_ema(self.model, decay) if decay is not None else None
        self.train_set = SeededDataset(train_set, config.seed)
        self.val_set = val_set
        global_batch = config.data.batch_size * self.dist.world_size
        self.steps_per_epoch = math.ceil(len(train_set) / global_batch)  # type: ignore[arg-type]
        if self.steps_per_epoch == 0:
            raise ValueError("the training set is empty")
        scale = lr_scale(self.train_cfg.lr_scaling, self.dist.world_size)
        self.optimizer = build_optimizer(self.model.parameters(), self.train_cfg, scale)
        self.schedule = LRSchedule(
            self.optimizer,
            self.train_cfg,
            self._total_optimizer_steps(),
            math.ceil(self.steps_per_epoch / self.train_cfg.accumulate),
            scale,
        )
        self.schedule.apply(0)
        self.plateau = build_plateau(self.optimizer, self.train_cfg, self.best_mode)
        self.scaler = make_grad_scaler(self.runtime)
        self.state = TrainState()
        self.epoch_loss = self.epoch_images_per_s = float("nan")
        self.elapsed = self.excluded_seconds = 0.0
        self.stop_reason, self._stopped_by = "", "length"
        self._started = time.perf_counter()
        self._first_iteration, self._seconds_before = 0, 0.0
        self._batches: Iterator[Any] | None = None

    # ----------------------------------------------------------------- set-up helpers
    def _check_best_metric(self) -> None:
        """Refuse an unknown ``train.best_metric`` before the first step, not after an epoch."""
        names = [*self.task.metric_names, "val_loss"]
        if self.best_metric not in names:
            raise ConfigError(
                f"train.best_metric {self.best_metric!r} is not a validation metric "
                f"of the {self.task.name!r} task; choose one of {', '.join(names)}"
            )

    def _total_optimizer_steps(self) -> int:
        cfg = self.train_cfg
        if cfg.iterations is not None:
            return cfg.iterations
        return cfg.epochs * math.ceil(self.steps_per_epoch / cfg.accumulate)  # type: ignore[operator]

    @property
    def inference_model(self) -> nn.Module:
        """The weights that are validated and saved as ``model``: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def plateau_owns_lr(self) -> bool:
        """After warm-up, reduce-on-plateau sets the rate; the per-step schedule would reset it."""
        warmup = self.train_cfg.scheduler.warmup_iters
        return self.plateau is not None and self.state.iteration > warmup

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                method(self, *args)

    def save(self, name: str = "last.pt") -> Path | None:
        """Write a checkpoint (rank 0 only: the others hold the same states)."""
        if not self.dist.is_main:
            return None
        self.state.elapsed_seconds = time.perf_counter() - self._started
        self.state.excluded_seconds = self.excluded_seconds
        return save_checkpoint(run_payload(self), self.run_dir / name)

    def resume(self, path: str | Path) -> None:
        restore_run(self, path)

    def training_seconds(self, started: float | None = None) -> float:
        """Wall-clock seconds spent training since ``started`` (default: this fit's start),
        validation left out.

        Callbacks that do their own evaluation (benchmarks) add its time to
        ``excluded_seconds`` so that a ``max_minutes`` budget counts training alone.
        """
        begin = self._started if started is None else started
        return time.perf_counter() - begin - self.excluded_seconds

    # ----------------------------------------------------------------- the run
    def fit(self, resume: str | Path | None = None) -> dict[str, Any]:
        """Run training to the end (or resume it) and return the last validation metrics."""
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume is not None:
            self.resume(resume)
        if self.state.finished:
            log.info("run in %s already finished; nothing to do", self.run_dir)
            return self.state.history[-1] if self.state.history else {}
        self._call("on_train_start")
        started = time.perf_counter() - self.elapsed
        self._started, self._first_iteration = started, self.state.iteration
        self._seconds_before = self.training_seconds(started)  # spent by earlier fits
        try:
            self._train_to_end(started)
        finally:
            self._batches = None  # shuts the training loader's workers down
        self._call("on_train_end")
        if self.stop_reason:
            log.info("training stopped: %s", self.stop_reason)
        return self.state.history[-1] if self.state.history else {}

    def _train_to_end(self, started: float) -> None:
        max_epochs = self.train_cfg.epochs if self.train_cfg.iterations is None else None
        stop = False
        while not stop and (max_epochs is None or self.state.epoch < max_epochs):
            epoch_before = self.state.epoch
            stop = self._run_epoch(started)
            self.elapsed = time.perf_counter() - started
            epoch_done = self.state.epoch > epoch_before
            last = stop or (max_epochs is not None and self.state.epoch >= max_epochs)
            # Validate on schedule, and always before the run ends (mid-epoch stops included).
            scheduled = epoch_done and self.state.epoch % self.train_cfg.val_every == 0
            if scheduled or last:
                stop = self._validate_and_track() or stop
            self._call("on_epoch_end")
            self.state.finished = stop or (
                max_epochs is not None and self.state.epoch >= max_epochs
            )
            if self.state.finished:
                self.state.stopped_by = self._stopped_by
            self.save("last.pt")

    # ----------------------------------------------------------------- one epoch
    def _train_batches(self) -> Iterator[Any]:
        """The training batches from the current position on, one loader for the whole run.

        Workers (if any) persist across epochs and prefetch over epoch boundaries; the
        order and augmentation still depend only on ``(seed, epoch, position)``.
        """
        if self._batches is None:
            data = self.config.data
            sampler = EpochBatchSampler(
                len(self.train_set),
                data.batch_size,
                seed=self.config.seed,
                epoch=self.state.epoch,
                start_batch=self.state.batch_in_epoch,
                num_replicas=self.dist.world_size,
                rank=self.dist.rank,
            )
            loader = DataLoader(
                self.train_set,
                batch_sampler=sampler,
                num_workers=data.num_workers,
                collate_fn=self.task.collate,
                worker_init_fn=seed_worker,
                generator=torch.Generator().manual_seed(self.config.seed + self.state.epoch),
                pin_memory=self.runtime.device.type == "cuda",
            )
            self._batches = iter(loader)
        return self._batches

    def _run_epoch(self, started: float) -> bool:
        """Train one epoch (or its remainder). Returns True if the run must stop."""
        self.model.train()
        remaining = self.steps_per_epoch - self.state.batch_in_epoch
        losses, images, tick = [], 0, time.perf_counter()
        every = self.train_cfg.checkpoint_every
        for batch in itertools.islice(self._train_batches(), remaining):
            value, stepped = self._train_batch(batch)
            self.state.batch_in_epoch += 1
            losses.append(value)
            images += self.task.batch_size(batch)
            rate = images / max(time.perf_counter() - tick, 1e-9)
            self._call("on_step", {"loss": value, "lr": self.current_lr, "images_per_s": rate})
            if stepped and every and self.state.iteration % every == 0:
                self.save("last.pt")
            if stepped and self._should_stop(started):
                break
        self.epoch_loss = sum(losses) / max(len(losses), 1)
        self.epoch_images_per_s = images / max(time.perf_counter() - tick, 1e-9)
        finished_epoch = self.state.batch_in_epoch >= self.steps_per_epoch
        if finished_epoch:
            self.state.epoch += 1
            self.state.batch_in_epoch = 0
        return not finished_epoch or self._should_stop(started)

    def _should_stop(self, started: float) -> bool:
        """Iteration or time budget reached; rank 0's clock decides for every process."""
        cfg = self.train_cfg
        reason, kind = "", ""
        if cfg.iterations is not None and self.state.iteration >= cfg.iterations:
            reason, kind = f"reached {cfg.iterations} iterations", "length"
        elif cfg.max_minutes is not None and self.training_seconds(started) > cfg.max_minutes * 60:
            reason, kind = f"reached the {cfg.max_minutes} minute budget", "budget"
        stop = self.dist.decide(bool(reason))
        if stop:
            self.stop_reason = reason or "rank 0 stopped the run"
            # Rank 0 decides; another rank's own reading of the clock may differ.
            self._stopped_by = kind if reason else "budget"
        return stop

    # ----------------------------------------------------------------- one step
    def _train_batch(self, batch: Any) -> tuple[float, bool]:
        batch = move_to_device(batch, self.runtime.device, self.runtime.memory_format)
        # Step every `accumulate` batches, and on the epoch's last batch so that no partial
        # accumulation leaks into the next epoch. Between steps, DDP skips its all-reduce.
        position = self.state.batch_in_epoch + 1
        stepped = position % self.train_cfg.accumulate == 0 or position >= self.steps_per_epoch
        no_sync = getattr(self.train_model, "no_sync", None)
        with contextlib.nullcontext() if stepped or no_sync is None else no_sync():
            problem = None
            try:
                with autocast_context(self.runtime):
                    output = self.task.forward_train(self.train_model, batch)
                    loss = self.task.loss(output, batch)
                value = float(loss.detach())
                if not math.isfinite(value):
                    problem = f"loss became {value}"
            except NonFiniteError as error:
                # NaN weights surface as NaN logits, which the model or loss rejects first.
                problem = f"loss became non-finite values ({error})"
            # Every process stops together: one that raised alone would leave the others
            # waiting in DDP's gradient all-reduce until dist_timeout_minutes.
            if self.dist.any_process(problem is not None):
                raise self._diverged(problem or "another process's loss became non-finite")
            self.scaler.scale(loss / self._window(position)).backward()
        if stepped:
            self._optimizer_step()
        return value, stepped

    def _window(self, position: int) -> int:
        """Batches in the accumulation window of batch ``position`` (1-based in the epoch):
        ``accumulate``, or fewer in the epoch's last window, whose mean is taken alike."""
        accumulate = self.train_cfg.accumulate
        start = (position - 1) // accumulate * accumulate
        return min(accumulate, self.steps_per_epoch - start)

    def _optimizer_step(self) -> None:
        if self.train_cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.train_cfg.grad_clip)
        if not self.scaler.is_enabled():
            # A finite loss can still give infinite gradients; stepping would write NaN
            # into the weights (and the next checkpoint). fp16's scaler skips such steps.
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            if grads and not torch.isfinite(nn.utils.get_total_norm(grads)):
                raise self._diverged("the gradients became non-finite (the loss did not)")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.state.iteration += 1
        seconds = self.dist.share_float(self.training_seconds(self._started))
        steps_timed = self.state.iteration - self._first_iteration
        self.schedule.fit_to_budget(
            self.state.iteration, steps_timed, seconds - self._seconds_before, spent=seconds
        )
        if not self.plateau_owns_lr():
            self.schedule.apply(self.state.iteration)

    def _diverged(self, what: str) -> TrainingDivergedError:
        kept = self.run_dir / "last.pt"
        where = f"{kept} (written before it)" if kept.is_file() else "no checkpoint yet"
        return TrainingDivergedError(
            f"{what} at epoch {self.state.epoch + 1}, iteration {self.state.iteration + 1} "
            f"(batch {self.state.batch_in_epoch + 1}); the weights were not updated with it: "
            f"{where}"
        )

    # ----------------------------------------------------------------- validation
    def validate(self) -> dict[str, Any]:
        """The task's metrics of :attr:`inference_model` over the validation set."""
        data = self.config.data
        metrics = validate(
            self.inference_model,
            self.val_set,  # type: ignore[arg-type]
            self.task,
            self.runtime,
            self.dist,
            batch_size=data.val_batch_size or data.batch_size,
            num_workers=data.num_workers,
        )
        self.model.train()
        return metrics

    def _validate_and_track(self) -> bool:
        """Validate, update best checkpoint and early stopping. Returns True to stop early."""
        if self.val_set is None:
            return False
        tick = time.perf_counter()
        metrics = self.validate()
        self.excluded_seconds += time.perf_counter() - tick
        name = self.best_metric
        value = float(metrics[name])
        self.state.history.append({"epoch": self.state.epoch, **_scalars(metrics)})
        if self.plateau_owns_lr():
            self.plateau.step(value)  # type: ignore[union-attr]
        sign = 1.0 if self.best_mode == "max" else -1.0
        delta = self.train_cfg.early_stopping_min_delta
        # NaN (an empty or all-ignored validation set) never becomes the best value.
        improved = not math.isnan(value) and (
            self.state.best_value is None or sign * (value - self.state.best_value) > delta
        )
        self.state.best_metric = f"{name}:{self.best_mode}"
        if improved:
            self.state.best_value, self.state.best_epoch = value, self.state.epoch
            self.state.bad_validations = 0
        else:
            self.state.bad_validations += 1
        self._call("on_validation", metrics)
        if improved:
            self.save("best.pt")
        patience = self.train_cfg.early_stopping_patience
        if patience is not None and self.state.bad_validations >= patience:
            self.stop_reason = f"early stopping: {name} did not improve for {patience} validations"
            self._stopped_by = "early_stopping"
            return True
        return False


def resolve_best(config: TrainConfig, task: Task) -> tuple[str, str]:
    """``(metric, "max"|"min")`` that picks ``best.pt``: the config's, else the task's
    default; the direction is the config's, else "min" for ``val_loss`` and the task's
    direction for its own metrics."""
    metric = config.best_metric or task.default_best_metric
    if config.best_mode is not None:
        return metric, config.best_mode
    return metric, "min" if metric == "val_loss" else task.best_mode


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, float | int)}
