"""Optimisers and learning-rate schedules, rebuilt from the config at any step.

The per-step schedule is a pure function of the config and the optimiser step
(:func:`lr_factor`), so a resumed run rebuilds it from the config it is given and the saved
step, rather than unpickling the old settings: a changed schedule takes effect on resume
(and is logged by the trainer). Its only state is the span of a schedule fitted to a time
budget. Reduce-on-plateau is stepped by the trainer after each validation.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from pixelseg.config import SchedulerConfig, TrainConfig

__all__ = [
    "LRSchedule",
    "build_optimizer",
    "build_plateau",
    "lr_factor",
    "lr_scale",
    "optimizer_hyperparameters",
    "plateau_counters",
]

# Counters of ReduceLROnPlateau that are run state; its settings (factor, patience, mode)
# come from the config, so a changed config is not overwritten by the saved one.
_PLATEAU_COUNTERS = ("best", "num_bad_epochs", "cooldown_counter", "last_epoch")


def lr_factor(config: SchedulerConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based)."""
    if config.warmup_iters and step < config.warmup_iters:
        alpha = step / config.warmup_iters
        return config.warmup_factor * (1 - alpha) + alpha
    if config.name in ("none", "plateau"):
        return 1.0
    if config.name == "step":
        return config.gamma ** (step // (config.step_size * max(steps_per_epoch, 1)))
    span = max(total_steps - config.warmup_iters, 1)
    progress = min(max(step - config.warmup_iters, 0) / span, 1.0)
    if config.name == "poly":
        return (1 - progress) ** config.power
    if config.name == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"unknown scheduler {config.name!r}")


def optimizer_hyperparameters(config: TrainConfig) -> dict[str, Any]:
    """The param-group settings ``train.optimizer`` gives (learning rate aside)."""
    opt = config.optimizer
    if opt.name in ("adamw", "adam"):
        return {"weight_decay": opt.weight_decay, "betas": tuple(opt.betas)}
    return {"weight_decay": opt.weight_decay, "momentum": opt.momentum, "nesterov": True}


def lr_scale(rule: str, world_size: int) -> float:
    """The learning-rate multiplier for ``world_size`` processes under ``train.lr_scaling``:
    ``linear`` (the global batch grew by ``world_size``; Goyal et al.), ``sqrt`` (common
    for Adam-type optimisers) or ``none``."""
    if rule == "linear":
        return float(world_size)
    if rule == "sqrt":
        return math.sqrt(world_size)
    return 1.0


def build_optimizer(params, config: TrainConfig, scale: float = 1.0) -> torch.optim.Optimizer:
    """AdamW, Adam or SGD (Nesterov momentum) from ``train.optimizer``, at ``scale`` times
    its learning rate."""
    opt = config.optimizer
    settings = optimizer_hyperparameters(config)
    lr = opt.lr * scale
    if opt.name == "adamw":
        return torch.optim.AdamW(params, lr=lr, **settings)
    if opt.name == "adam":
        return torch.optim.Adam(params, lr=lr, **settings)
    return torch.optim.SGD(params, lr=lr, **settings)


class LRSchedule:
    """Sets every param group's learning rate to ``train.optimizer.lr * factor(step)``.

    ``span`` is the number of optimiser steps the poly/cosine decay spans: the configured
    length, or a shorter one fitted to ``train.max_minutes`` by :meth:`fit_to_budget`. The
    minimum rate ``scheduler.min_lr`` floors poly and cosine.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        config: TrainConfig,
        total_steps: int,
        steps_per_epoch: int,
        scale: float = 1.0,
    ) -> None:
        self.optimizer, self.config = optimizer, config.scheduler
        self.base_lr = config.optimizer.lr * scale
        self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch
        self.span = total_steps
        self.fitted = False  # whether a budget has set the span
        self.max_minutes = config.max_minutes

    def factor(self, step: int) -> float:
        factor = lr_factor(self.config, step, self.span, self.steps_per_epoch)
        if self.config.name in ("poly", "cosine"):
            return max(factor, self.config.min_lr / self.base_lr)
        return factor

    def apply(self, step: int) -> None:
        """Set the learning rate for optimiser step ``step``."""
        lr = self.base_lr * self.factor(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def fit_to_budget(
        self, step: int, steps_timed: int, seconds: float, spent: float | None = None
    ) -> None:
        """Shorten the poly/cosine span so that the decay ends with a ``max_minutes`` budget.

        A schedule sized in epochs that the budget cuts off would stop at a high learning
        rate, losing the end of the decay, where most of the final accuracy comes from. The
        span becomes ``step + remaining seconds / seconds per step``, with the speed measured
        over the ``steps_timed`` steps of ``seconds`` (validation excluded), re-estimated
        each step and never longer than the configured length. ``spent`` is the budget used
        so far when it differs from ``seconds`` (a resumed run timed its new steps only).
        """
        sched = self.config
        if self.max_minutes is None or not sched.fit_budget or sched.name not in ("poly", "cosine"):
            return
        # The first steps carry start-up costs (worker start, allocator warm-up).
        if steps_timed < 5:
            return
        remaining = max(self.max_minutes * 60 - (seconds if spent is None else spent), 0.0)
        estimate = step + math.ceil(remaining * steps_timed / max(seconds, 1e-9))
        self.span = max(min(self.total_steps, estimate), sched.warmup_iters + 1)
        self.fitted = True

    def state_dict(self) -> dict[str, Any]:
        return {"span": int(self.span), "fitted": self.fitted}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # A fitted span never exceeds the (possibly changed) configured length; an unfitted
        # one is the configured length now (a resumed run given more epochs decays over
        # them). Checkpoints from before "fitted" was saved keep their span.
        if state.get("fitted", True):
            self.span = min(int(state["span"]), self.total_steps)
            self.fitted = bool(state.get("fitted", self.span < self.total_steps))
        else:
            self.span = self.total_steps


def build_plateau(
    optimizer: torch.optim.Optimizer, config: TrainConfig, mode: str = "max"
) -> torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """Reduce-on-plateau when ``scheduler.name == 'plateau'`` (stepped after validation)."""
    sched = config.scheduler
    if sched.name != "plateau":
        return None
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode=mode,
        factor=sched.gamma,
        patience=sched.patience,
        min_lr=sched.min_lr,
    )


def plateau_counters(plateau: torch.optim.lr_scheduler.ReduceLROnPlateau) -> dict[str, Any]:
    """The run state of a plateau scheduler (its settings come from the config)."""
    state = plateau.state_dict()
    return {key: state[key] for key in _PLATEAU_COUNTERS if key in state}
