"""Weighted sums of losses, e.g. ``ce + dice`` (the usual pairing for segmentation)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from pixelseg.errors import InvalidInputError
from pixelseg.losses.registry import create

__all__ = ["CombinedLoss", "combine"]


class CombinedLoss(nn.Module):
    """``sum_i weight_i * loss_i(logits, target)``.

    Args:
        losses: ``{label: loss module}``; labels name the terms in :meth:`terms`.
        weights: ``{label: weight}``, finite, >= 0 and not all zero.
    """

    def __init__(self, losses: Mapping[str, nn.Module], weights: Mapping[str, float]) -> None:
        super().__init__()
        if not losses:
            raise InvalidInputError("combine: give at least one loss, got none")
        if set(losses) != set(weights):
            raise InvalidInputError(
                f"combine: losses {sorted(losses)} and weights {sorted(weights)} name different terms"
            )
        for label, weight in weights.items():
            if (
                isinstance(weight, bool)
                or not isinstance(weight, int | float)
                or not math.isfinite(weight)
                or weight < 0
            ):
                raise InvalidInputError(
                    f"combine: weight of {label!r} must be a finite number >= 0, got {weight!r}"
                )
        if not any(weights.values()):
            raise InvalidInputError(f"combine: the weights {dict(weights)} are all zero")
        self.losses = nn.ModuleDict(dict(losses))
        self.weights = {label: float(weights[label]) for label in losses}

    def terms(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Each loss's unweighted value ``{label: scalar}``, e.g. for logging."""
        return {label: loss(logits, target) for label, loss in self.losses.items()}

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits [B, C, *spatial]``, ``target [B, *spatial]`` -> weighted sum (scalar)."""
        values = self.terms(logits, target)
        return torch.stack([self.weights[label] * value for label, value in values.items()]).sum()

    def extra_repr(self) -> str:
        return f"weights={self.weights}"


def combine(
    spec: Sequence[tuple[str, float] | tuple[str, float, Mapping[str, Any]]],
) -> CombinedLoss:
    """Build a weighted sum from ``[(name, weight, options), ...]`` (options may be omitted).

    Example: ``combine([("ce", 1.0, {"ignore_index": 255}), ("dice", 0.5)])``. A name used
    twice gets labels ``dice``, ``dice_2``, ... in :meth:`CombinedLoss.terms`.
    """
    if isinstance(spec, str | bytes) or not isinstance(spec, Sequence) or not spec:
        raise InvalidInputError(
            f"combine: expected a non-empty list of (name, weight[, options]) tuples, got {spec!r}"
        )
    losses: dict[str, nn.Module] = {}
    weights: dict[str, float] = {}
    for item in spec:
        if not isinstance(item, Sequence) or isinstance(item, str) or len(item) not in (2, 3):
            raise InvalidInputError(
                f"combine: each entry must be (name, weight) or (name, weight, options), got {item!r}"
            )
        name, weight = item[0], item[1]
        options = item[2] if len(item) == 3 else {}
        if not isinstance(options, Mapping):
            raise InvalidInputError(
                f"combine: options of {name!r} must be a mapping of keyword options, got {options!r}"
            )
        label, count = str(name), 1
        while label in losses:
            count += 1
            label = f"{name}_{count}"
        losses[label] = create(name, **options)
        weights[label] = weight
    return CombinedLoss(losses, weights)
