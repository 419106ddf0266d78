"""Learning-rate schedules, stepped once per optimiser step.

Poly, cosine and step are one ``LambdaLR`` each, with an optional linear warm-up in front,
so their state is a plain counter that resumes exactly. Reduce-on-plateau is stepped by the
trainer after each validation with the watched metric.
"""

from __future__ import annotations

import math

import torch

from pixelseg.config import SchedulerConfig, TrainConfig

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]


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


def build_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, Adam or SGD (Nesterov momentum) from ``train.optimizer``."""
    opt = config.optimizer
    if opt.name == "adamw":
        return torch.optim.AdamW(params, lr=opt.lr, weight_decay=opt.weight_decay, betas=opt.betas)
    if opt.name == "adam":
        return torch.optim.Adam(params, lr=opt.lr, weight_decay=opt.weight_decay, betas=opt.betas)
    return torch.optim.SGD(
        params, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay, nesterov=True
    )


class _MinLR:
    """Picklable lambda: the schedule's factor, floored so the LR never drops below min_lr."""

    def __init__(self, config: SchedulerConfig, base_lr: float, total: int, per_epoch: int):
        self.config, self.base_lr, self.total, self.per_epoch = config, base_lr, total, per_epoch

    def __call__(self, step: int) -> float:
        factor = lr_factor(self.config, step, self.total, self.per_epoch)
        floor = self.config.min_lr / self.base_lr if self.base_lr > 0 else 0.0
        return max(factor, floor) if self.config.name in ("poly", "cosine") else factor


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    total_steps: int,
    steps_per_epoch: int,
) -> tuple[torch.optim.lr_scheduler.LambdaLR, torch.optim.lr_scheduler.ReduceLROnPlateau | None]:
    """The per-step schedule, and a plateau scheduler when ``scheduler.name == 'plateau'``."""
    sched = config.scheduler
    lambdas = [
        _MinLR(sched, group["lr"], total_steps, steps_per_epoch) for group in optimizer.param_groups
    ]
    per_step = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
    plateau = None
    if sched.name == "plateau":
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode=config.best_mode,
            factor=sched.gamma,
            patience=sched.patience,
            min_lr=sched.min_lr,
        )
    return per_step, plateau
