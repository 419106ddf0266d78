"""An exponential moving average (EMA) of the weights, evaluated and saved for inference.

Averaging the weights over the last steps smooths out the noise of single optimiser steps,
so that validation scores swing less from one evaluation to the next (the usual choice for
long runs at a constant or slowly decaying rate). Where the schedule decays to zero by the
end, the final raw weights are already at rest and the average gains little (see the EMA
probes in docs/BENCHMARKS.md). The averaging itself is torch's ``AveragedModel``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

__all__ = ["ema_decay_at", "make_ema"]


def ema_decay_at(decay: float, updates: int) -> float:
    """The decay used for update number ``updates`` (0 = the first average after the copy).

    torch's ``get_ema_multi_avg_fn`` keeps one fixed decay; on a run of a few hundred steps
    a decay of 0.999 would leave about half the average's weight on the very first step's
    parameters. timm's ``ModelEmaV3`` warm-up, ``min(decay, (1 + t) / (10 + t))``, averages
    roughly the last tenth of the steps so far until ``decay`` takes over, so one setting
    serves short and long runs.
    """
    return min(decay, (1.0 + updates) / (10.0 + updates))


def _warmed_up_ema(decay: float) -> Callable[[list[Tensor], list[Tensor], Tensor], None]:
    @torch.no_grad()
    def update(averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor) -> None:
        # ``num_averaged`` counts the initial copy, so the first real average is update 0.
        weight = 1.0 - ema_decay_at(decay, int(num_averaged) - 1)
        if averaged[0].is_floating_point() or averaged[0].is_complex():
            torch._foreach_lerp_(averaged, current, weight)
        else:
            # Integer buffers (BatchNorm's num_batches_tracked) are counters, not estimates.
            for mine, theirs in zip(averaged, current, strict=True):
                mine.copy_(theirs)

    return update


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An EMA of ``model``'s parameters and buffers (BatchNorm statistics included, as timm
    does), updated by ``ema.update_parameters(model)`` after each optimiser step."""
    if not 0.0 < decay < 1.0:
        raise ValueError(f"the EMA decay must lie strictly between 0 and 1, got {decay}")
    return AveragedModel(model, multi_avg_fn=_warmed_up_ema(decay), use_buffers=True)
