"""The training loop, shared by every task.

The loop knows nothing of segmentation: a :class:`~pixelseg.tasks.base.Task` turns a batch
and the model's output into a loss and metric updates. The trainer owns optimisation
(accumulation, clipping, AMP, schedules), validation, best-checkpoint selection, early
stopping and exact resume.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pixelseg.checkpoints import load_checkpoint, save_checkpoint
from pixelseg.config import ExperimentConfig
from pixelseg.engine.device import autocast_context, make_grad_scaler, resolve_runtime
from pixelseg.engine.ema import make_ema
from pixelseg.engine.rng import capture_rng_state, restore_rng_state
from pixelseg.engine.sampling import EpochBatchSampler, SeededDataset, seed_worker
from pixelseg.engine.schedules import (
    LRSchedule,
    build_optimizer,
    build_plateau,
    optimizer_hyperparameters,
    plateau_counters,
)
from pixelseg.errors import CheckpointError, ConfigError, NonFiniteError, TrainingDivergedError

__all__ = ["TrainState", "Trainer"]

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Counters that, with the RNG states, decide where a resumed run continues."""

    epoch: int = 0  # epochs completed
    iteration: int = 0  # optimiser steps taken
    batch_in_epoch: int = 0  # batches of the current epoch already consumed
    best_value: float | None = None
    best_epoch: int | None = None
    bad_validations: int = 0
    finished: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Train ``model`` on ``train_set`` for the task, validating on ``val_set``.

    ``checkpoint_meta`` is stored in every checkpoint next to the states: the model spec
    (``create()`` arguments), class names, colours, normalisation and input size, so that
    prediction needs nothing but the checkpoint.
    """

    def __init__(
        self,
        model: nn.Module,
        task: Any,
        train_set: Dataset,
        val_set: Dataset | None,
        config: ExperimentConfig,
        run_dir: str | Path,
        checkpoint_meta: dict[str, Any],
        callbacks: list[Any] | None = None,
    ) -> None:
        self.config, self.task = config, task
        self.train_cfg = config.train
        self.run_dir = Path(run_dir)
        self.checkpoint_meta = checkpoint_meta
        self.callbacks = list(callbacks or [])
        self.runtime = resolve_runtime(self.train_cfg)
        self._check_best_metric()
        self.model = model.to(self.runtime.device)
        if self.runtime.memory_format is not torch.contiguous_format:
            self.model = self.model.to(memory_format=_layout(self.model, self.runtime))
        decay = self.train_cfg.ema_decay
        self.ema = make_ema(self.model, decay) if decay is not None else None
        self.train_set = SeededDataset(train_set, config.seed)
        self.val_set = val_set
        self.steps_per_epoch = math.ceil(len(train_set) / config.data.batch_size)  # type: ignore[arg-type]
        if self.steps_per_epoch == 0:
            raise ValueError("the training set is empty")
        self.total_steps = self._total_optimizer_steps()
        self.optimizer = build_optimizer(self.model.parameters(), self.train_cfg)
        self.schedule = LRSchedule(
            self.optimizer,
            self.train_cfg,
            self.total_steps,
            math.ceil(self.steps_per_epoch / self.train_cfg.accumulate),
        )
        self.schedule.apply(0)
        self.plateau = build_plateau(self.optimizer, self.train_cfg)
        self.scaler = make_grad_scaler(self.runtime)
        self.state = TrainState()
        self.epoch_loss = float("nan")
        self.epoch_images_per_s = float("nan")
        self.elapsed = 0.0
        self.excluded_seconds = 0.0
        self.stop_reason = ""
        self._started = time.perf_counter()
        self._first_iteration = 0
        self._batches: Iterator[Any] | None = None

    # ----------------------------------------------------------------- bookkeeping
    def _check_best_metric(self) -> None:
        """Refuse an unknown ``train.best_metric`` before the first step, not after an epoch."""
        names = [*self.task.metric_names, "val_loss"]
        if self.train_cfg.best_metric not in names:
            raise ConfigError(
                f"train.best_metric {self.train_cfg.best_metric!r} is not a validation metric "
                f"of this task; choose one of {', '.join(names)}"
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

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                method(self, *args)

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

    def _close_batches(self) -> None:
        """Shut the training loader's workers down (they would otherwise prefetch forever)."""
        self._batches = None

    def _payload(self) -> dict[str, Any]:
        # ``model`` holds the weights to predict with, so that eval, predict and export
        # read one key whether or not the run kept an EMA; the raw weights travel beside it.
        ema = (
            {"train_model": self.model.state_dict(), "ema_updates": int(self.ema.n_averaged)}
            if self.ema is not None
            else {}
        )
        return {
            **self.checkpoint_meta,
            "model": self.inference_model.state_dict(),
            **ema,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "plateau": plateau_counters(self.plateau) if self.plateau else None,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "state": asdict(self.state),
            "rng": capture_rng_state(),
            "config": self.config.model_dump(mode="json"),
        }

    def save(self, name: str = "last.pt") -> Path:
        return save_checkpoint(self._payload(), self.run_dir / name)

    def resume(self, path: str | Path) -> None:
        """Load every state from a checkpoint written by this trainer.

        Settings come from the config given now, counters and weights from the checkpoint:
        the optimiser keeps its moments but takes the configured weight decay and betas or
        momentum, and the schedule is rebuilt from the configured one at the saved step. A
        changed setting is logged, so a resumed run never silently follows the old one.
        """
        payload = load_checkpoint(path, map_location=self.runtime.device, require=())
        if payload.get("state") is None or payload.get("optimizer") is None:
            raise CheckpointError(f"checkpoint {str(path)!r} holds no training state to resume")
        if self.ema is not None and "train_model" not in payload:
            raise CheckpointError(
                f"checkpoint {str(path)!r} was written without train.ema_decay, so it holds "
                "no EMA to continue; resume without train.ema_decay or start a new run"
            )
        try:
            self.model.load_state_dict(payload.get("train_model", payload["model"]))
            if self.ema is not None:
                self.ema.module.load_state_dict(payload["model"])
                self.ema.n_averaged.fill_(int(payload["ema_updates"]))
            elif "train_model" in payload:
                log.warning(
                    "checkpoint %s holds an EMA of the weights, which train.ema_decay "
                    "unset drops: training continues from the raw weights",
                    path,
                )
            self.optimizer.load_state_dict(payload["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(
                f"checkpoint {str(path)!r} does not match this model/config: {error}"
            ) from None
        _log_changed_settings(payload.get("config") or {}, self.config, path)
        for group in self.optimizer.param_groups:
            group.update(optimizer_hyperparameters(self.train_cfg))
        self.state = TrainState(**payload["state"])
        self.schedule.load_state_dict(payload["schedule"])
        if self.plateau is not None and payload.get("plateau"):
            self.plateau.load_state_dict({**self.plateau.state_dict(), **payload["plateau"]})
        if not self._plateau_owns_lr():
            self.schedule.apply(self.state.iteration)
        if self.scaler.is_enabled() and payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])
        restore_rng_state(payload["rng"])
        log.info(
            "resumed from %s at epoch %d, step %d", path, self.state.epoch, self.state.iteration
        )

    # ----------------------------------------------------------------- training
    def _should_stop(self, started: float) -> bool:
        cfg = self.train_cfg
        if cfg.iterations is not None and self.state.iteration >= cfg.iterations:
            self.stop_reason = f"reached {cfg.iterations} iterations"
            return True
        if cfg.max_minutes is not None and self.training_seconds(started) > cfg.max_minutes * 60:
            self.stop_reason = f"reached the {cfg.max_minutes} minute budget"
            return True
        return False

    def training_seconds(self, started: float | None = None) -> float:
        """Wall-clock seconds spent training since ``started`` (default: this fit's start),
        validation left out.

        Callbacks that do their own evaluation (benchmarks) add its time to
        ``excluded_seconds`` so that a ``max_minutes`` budget counts training alone.
        """
        begin = self._started if started is None else started
        return time.perf_counter() - begin - self.excluded_seconds

    def _plateau_owns_lr(self) -> bool:
        # After warm-up, reduce-on-plateau sets the rate; the per-step schedule would reset it.
        warmup = self.train_cfg.scheduler.warmup_iters
        return self.plateau is not None and self.state.iteration > warmup

    def _step_schedules(self) -> None:
        steps_timed = self.state.iteration - self._first_iteration
        self.schedule.fit_to_budget(
            self.state.iteration, steps_timed, self.training_seconds(self._started)
        )
        if not self._plateau_owns_lr():
            self.schedule.apply(self.state.iteration)

    def _train_batch(self, batch: dict[str, Any]) -> tuple[float, bool]:
        device = self.runtime.device
        batch = _to_device(batch, device, self.runtime.memory_format)
        try:
            with autocast_context(self.runtime):
                output = self.model(self.task.inputs(batch))
                loss = self.task.loss(output, batch)
            value = float(loss.detach())
        except NonFiniteError as error:
            # NaN weights surface as NaN logits, which the model or loss rejects first.
            raise self._diverged(f"non-finite values ({error})") from None
        if not math.isfinite(value):
            raise self._diverged(str(value))
        self.scaler.scale(loss / self.train_cfg.accumulate).backward()
        # Step every `accumulate` batches, and on the epoch's last batch so that no partial
        # accumulation leaks into the next epoch.
        position = self.state.batch_in_epoch + 1
        stepped = position % self.train_cfg.accumulate == 0 or position >= self.steps_per_epoch
        if stepped:
            if self.train_cfg.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.train_cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            self.state.iteration += 1
            self._step_schedules()
        return value, stepped

    def _diverged(self, what: str) -> TrainingDivergedError:
        return TrainingDivergedError(
            f"loss became {what} at epoch {self.state.epoch + 1}, iteration "
            f"{self.state.iteration + 1} (batch {self.state.batch_in_epoch + 1}); the last "
            f"good checkpoint is kept in {self.run_dir}"
        )

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
            images += int(self.task.inputs(batch).shape[0])
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

    def _validate_and_track(self) -> bool:
        """Validate, update best checkpoint and early stopping. Returns True to stop early."""
        if self.val_set is None:
            return False
        tick = time.perf_counter()
        metrics = self.validate()
        self.excluded_seconds += time.perf_counter() - tick
        name = self.train_cfg.best_metric
        value = float(metrics[name])
        self.state.history.append({"epoch": self.state.epoch, **_scalars(metrics)})
        if self._plateau_owns_lr():
            self.plateau.step(value)  # type: ignore[union-attr]
        sign = 1.0 if self.train_cfg.best_mode == "max" else -1.0
        delta = self.train_cfg.early_stopping_min_delta
        improved = self.state.best_value is None or (
            not math.isnan(value) and sign * (value - self.state.best_value) > delta
        )
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
            return True
        return False

    @torch.inference_mode()
    def validate(self) -> dict[str, Any]:
        """Streaming metrics of :attr:`inference_model` over the validation set (mean loss
        included as ``val_loss``)."""
        model = self.inference_model
        model.eval()
        # A fresh loader per validation, on purpose: validation runs a few times a fit, and
        # persistent workers would sit idle (holding their memory) between validations.
        # Images of different sizes are not padded: the task's eval collate groups a batch by
        # size, so every image is scored whole, exactly as ``pixelseg eval`` scores it.
        loader = DataLoader(
            self.val_set,  # type: ignore[arg-type]
            batch_size=self.config.data.val_batch_size or self.config.data.batch_size,
            shuffle=False,
            num_workers=self.config.data.num_workers,
            collate_fn=self.task.collate_eval,
        )
        metrics, loss_sum, count = self.task.new_metrics(), 0.0, 0
        for groups in loader:
            for batch in groups:
                batch = _to_device(batch, self.runtime.device, self.runtime.memory_format)
                size = int(self.task.inputs(batch).shape[0])
                with autocast_context(self.runtime):
                    output = model(self.task.inputs(batch))
                    loss_sum += float(self.task.loss(output, batch)) * size
                count += size
                self.task.update_metrics(metrics, output, batch)
        result = self.task.compute_metrics(metrics)
        result["val_loss"] = loss_sum / max(count, 1)
        self.model.train()
        return result

    def fit(self, resume: str | Path | None = None) -> dict[str, Any]:
        """Run training to the end (or resume it) and return the last validation metrics."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume is not None:
            self.resume(resume)
        if self.state.finished:
            log.info("run in %s already finished; nothing to do", self.run_dir)
            return self.state.history[-1] if self.state.history else {}
        self._call("on_train_start")
        started = time.perf_counter() - self.elapsed
        self._started, self._first_iteration = started, self.state.iteration
        try:
            self._train_to_end(started)
        finally:
            self._close_batches()
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
            self.save("last.pt")


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, float | int)}


def _layout(model: nn.Module, runtime: Any) -> torch.memory_format:
    """Channels-last for 2-D convolutions, its 3-D form for a model with 5-D weights only
    (a model mixing both ranks keeps the default layout: neither form fits all its weights)."""
    ranks = {p.dim() for p in model.parameters()} & {4, 5}
    if ranks == {5}:
        return torch.channels_last_3d
    return runtime.memory_format if ranks == {4} else torch.contiguous_format


def _to_device(batch: Any, device: torch.device, memory_format: torch.memory_format) -> Any:
    """Move a batch (tensors in dicts, lists and tuples, at any depth) to ``device``.

    Float images take the run's memory layout where it is valid: channels-last for 4-D,
    channels-last-3d for 5-D, nothing for other ranks.
    """
    if isinstance(batch, torch.Tensor):
        value = batch.to(device, non_blocking=True)
        if memory_format is not torch.contiguous_format and value.is_floating_point():
            if value.dim() == 4:
                value = value.contiguous(memory_format=torch.channels_last)
            elif value.dim() == 5:
                value = value.contiguous(memory_format=torch.channels_last_3d)
        return value
    if isinstance(batch, dict):
        return {key: _to_device(value, device, memory_format) for key, value in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(value, device, memory_format) for value in batch)
    return batch


def _log_changed_settings(saved: dict[str, Any], config: ExperimentConfig, path: Any) -> None:
    """Log every setting that differs between the checkpoint's config and this run's."""
    changed = _diff(saved, config.model_dump(mode="json"))
    for key, (old, new) in changed.items():
        log.info("resume from %s: %s changed %r -> %r (the new value applies)", path, key, old, new)


def _diff(old: Any, new: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        result: dict[str, tuple[Any, Any]] = {}
        for key in sorted(set(old) | set(new)):
            result.update(_diff(old.get(key), new.get(key), f"{prefix}{key}."))
        return result
    return {} if old == new else {prefix.rstrip("."): (old, new)}
