"""What a checkpoint holds of a run, and putting it back: the trainer's exact-resume state.

Settings come from the config given now, counters and weights from the checkpoint: the
optimiser keeps its moments but takes the configured weight decay and betas or momentum,
and the schedule is rebuilt from the configured one at the saved step. A changed setting
is logged, so a resumed run never silently follows the old one.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pixelseg.checkpoints import load_checkpoint
from pixelseg.config import ExperimentConfig
from pixelseg.engine.rng import capture_rng_state, restore_rng_state
from pixelseg.engine.schedules import optimizer_hyperparameters, plateau_counters
from pixelseg.errors import CheckpointError

__all__ = ["TrainState", "restore_run", "run_payload"]

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Counters that, with the RNG states, decide where a resumed run continues."""

    epoch: int = 0  # epochs completed
    iteration: int = 0  # optimiser steps taken
    batch_in_epoch: int = 0  # batches of the current epoch already consumed
    best_value: float | None = None
    best_epoch: int | None = None
    best_metric: str | None = None  # "name:mode" that best_value was chosen by
    bad_validations: int = 0
    finished: bool = False
    stopped_by: str = ""  # "length", "budget", "early_stopping" or "" (still running)
    # Wall-clock seconds of the run so far and the validation share of them, so that a
    # resumed run's time budget and log continue where they stopped.
    elapsed_seconds: float = 0.0
    excluded_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


def run_payload(trainer: Any) -> dict[str, Any]:
    """Every state of ``trainer`` plus its checkpoint metadata, as checkpoint data."""
    # ``model`` holds the weights to predict with, so that eval, predict and export read
    # one key whether or not the run kept an EMA; the raw weights travel beside it.
    ema = trainer.ema
    extra = (
        {"train_model": trainer.model.state_dict(), "ema_updates": int(ema.n_averaged)}
        if ema is not None
        else {}
    )
    return {
        **trainer.checkpoint_meta,
        "model": trainer.inference_model.state_dict(),
        **extra,
        "optimizer": trainer.optimizer.state_dict(),
        "schedule": trainer.schedule.state_dict(),
        "plateau": plateau_counters(trainer.plateau) if trainer.plateau else None,
        "scaler": trainer.scaler.state_dict() if trainer.scaler.is_enabled() else None,
        "state": asdict(trainer.state),
        "rng": capture_rng_state(),
        "config": trainer.config.model_dump(mode="json"),
        "world_size": trainer.dist.world_size,
    }


def restore_run(trainer: Any, path: str | Path) -> None:
    """Load every state of a checkpoint written by :func:`run_payload` into ``trainer``."""
    payload = load_checkpoint(path, map_location=trainer.runtime.device, require=())
    if payload.get("state") is None or payload.get("optimizer") is None:
        raise CheckpointError(f"checkpoint {str(path)!r} holds no training state to resume")
    saved_world = int(payload.get("world_size", 1))
    if saved_world != trainer.dist.world_size:
        # Where each process is in the epoch, and the random streams, depend on the number
        # of processes: a different count cannot continue exactly.
        raise CheckpointError(
            f"checkpoint {str(path)!r} was written by a run on {saved_world} process(es); "
            f"resume it on {saved_world} (this run has {trainer.dist.world_size}), or start "
            "a new run from its weights"
        )
    saved_config = payload.get("config") or {}
    state = TrainState(**payload["state"])
    _refuse_unresumable_changes(saved_config, trainer.config, state, path)
    _restore_weights(trainer, payload, path)
    _log_changed_settings(saved_config, trainer.config, path)
    for group in trainer.optimizer.param_groups:
        group.update(optimizer_hyperparameters(trainer.train_cfg))
    trainer.state = state
    trainer.elapsed, trainer.excluded_seconds = state.elapsed_seconds, state.excluded_seconds
    _reset_best_if_changed(trainer, path)
    _reopen_if_extended(trainer, path)
    trainer.schedule.load_state_dict(payload["schedule"])
    if trainer.plateau is not None and payload.get("plateau"):
        trainer.plateau.load_state_dict({**trainer.plateau.state_dict(), **payload["plateau"]})
    if not trainer.plateau_owns_lr():
        trainer.schedule.apply(trainer.state.iteration)
    if trainer.scaler.is_enabled() and payload.get("scaler"):
        trainer.scaler.load_state_dict(payload["scaler"])
    restore_rng_state(payload["rng"])
    log.info(
        "resumed from %s at epoch %d, step %d", path, trainer.state.epoch, trainer.state.iteration
    )


def _refuse_unresumable_changes(
    saved: dict[str, Any], config: ExperimentConfig, state: TrainState, path: Any
) -> None:
    """Settings a resumed run cannot take: another optimiser (the saved moments are the
    old one's), or another batch size or accumulation in the middle of an epoch (the saved
    position counts the old batches)."""
    old_train, old_data = saved.get("train") or {}, saved.get("data") or {}
    old_name = (old_train.get("optimizer") or {}).get("name")
    if old_name is not None and old_name != config.train.optimizer.name:
        raise CheckpointError(
            f"checkpoint {str(path)!r} was trained with train.optimizer.name {old_name!r}, "
            f"this config asks for {config.train.optimizer.name!r}: its saved state cannot "
            f"continue another optimiser; resume with {old_name!r} or start a new run"
        )
    if state.batch_in_epoch == 0:
        return
    for section, key, old, new in (
        ("data", "batch_size", old_data.get("batch_size"), config.data.batch_size),
        ("train", "accumulate", old_train.get("accumulate"), config.train.accumulate),
    ):
        if old is not None and old != new:
            raise CheckpointError(
                f"checkpoint {str(path)!r} stopped {state.batch_in_epoch} batches into an "
                f"epoch with {section}.{key} {old}; resuming there with {new} would skip or "
                f"repeat images: resume with {old} (a checkpoint at an epoch's end takes "
                "any value)"
            )


def _reset_best_if_changed(trainer: Any, path: Any) -> None:
    """A best value chosen by another metric or direction cannot be compared with."""
    state, key = trainer.state, f"{trainer.best_metric}:{trainer.best_mode}"
    if state.best_metric is not None and state.best_metric != key:
        log.info(
            "resume from %s: best.pt was chosen by %s, now by %s: the best value starts over",
            path,
            state.best_metric,
            key,
        )
        state.best_value = state.best_epoch = None
        state.bad_validations = 0
    state.best_metric = key


def _reopen_if_extended(trainer: Any, path: Any) -> None:
    """A run that ended at its length or budget continues when the config now allows more
    (more epochs or iterations, more minutes); early stopping stays final."""
    state, cfg = trainer.state, trainer.train_cfg
    if not state.finished or state.stopped_by not in ("length", "budget"):
        return
    if cfg.iterations is not None:
        more = state.iteration < cfg.iterations
    else:
        more = state.epoch < cfg.epochs
    if cfg.max_minutes is not None:
        spent = state.elapsed_seconds - state.excluded_seconds  # training, not validation
        more = more and spent < cfg.max_minutes * 60
    if more:
        log.info("resume from %s: the config allows more training; the run continues", path)
        state.finished, state.stopped_by = False, ""


def _restore_weights(trainer: Any, payload: dict[str, Any], path: str | Path) -> None:
    if trainer.ema is not None and "train_model" not in payload:
        raise CheckpointError(
            f"checkpoint {str(path)!r} was written without train.ema_decay, so it holds "
            "no EMA to continue; resume without train.ema_decay or start a new run"
        )
    try:
        trainer.model.load_state_dict(payload.get("train_model", payload["model"]))
        if trainer.ema is not None:
            trainer.ema.module.load_state_dict(payload["model"])
            trainer.ema.n_averaged.fill_(int(payload["ema_updates"]))
        elif "train_model" in payload:
            log.warning(
                "checkpoint %s holds an EMA of the weights, which train.ema_decay unset "
                "drops: training continues from the raw weights",
                path,
            )
        trainer.optimizer.load_state_dict(payload["optimizer"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not match this model/config: {error}"
        ) from None


def _log_changed_settings(saved: dict[str, Any], config: ExperimentConfig, path: Any) -> None:
    """Log every setting that differs between the checkpoint's config and this run's."""
    for key, (old, new) in _diff(saved, config.model_dump(mode="json")).items():
        log.info("resume from %s: %s changed %r -> %r (the new value applies)", path, key, old, new)


def _diff(old: Any, new: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        result: dict[str, tuple[Any, Any]] = {}
        for key in sorted(set(old) | set(new)):
            result.update(_diff(old.get(key), new.get(key), f"{prefix}{key}."))
        return result
    return {} if old == new else {prefix.rstrip("."): (old, new)}
