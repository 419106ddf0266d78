"""Shared machinery of the overlap (region) losses: Dice, generalised Dice and Tversky.

These losses compare soft per-class sums (intersection, predicted and true volume) rather
than single pixels. The common options live here so every overlap loss reads them the same
way: ``smooth``, ``include_background``, per-class ``weight``, ``ignore_index`` and
``per_image`` (batch statistics vs per-image statistics).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pixelseg.errors import InvalidInputError
from pixelseg.losses.inputs import (
    check_class_vector,
    check_ignore_index,
    class_vector,
    encode_target,
    mean_over_valid_images,
    prepare,
)

__all__ = ["OverlapLoss", "safe_ratio"]


def safe_ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator``, and 1 where the denominator is 0 (empty vs empty = perfect).

    The denominator is replaced before dividing, so the unused branch cannot put NaN into the
    gradient (the usual ``torch.where`` pitfall).
    """
    empty = denominator <= 0
    ratio = numerator / torch.where(empty, torch.ones_like(denominator), denominator)
    return torch.where(empty, torch.ones_like(ratio), ratio)


class OverlapLoss(nn.Module):
    """Base of the overlap losses: option checks, class selection and reduction.

    Args:
        smooth: added to numerator and denominator (>= 0); see each loss for its default.
        include_background: keep channel 0 (multi-class). A binary (C == 1) Dice or Tversky
            loss has only the foreground channel, so the flag does not apply there.
        weight: one weight per class (C values; 2 for binary logits, though a binary Dice or
            Tversky loss has the foreground term only, which the weight cannot change), for
            the weighted mean over classes.
        ignore_index: label value whose pixels count neither as prediction nor as target.
        per_image: False (default) sums the statistics over the whole batch ("batch Dice",
            steadier when a class is missing from some images); True computes one score per
            image and averages over images that have at least one non-ignored pixel.
    """

    loss_name = "overlap"
    binary_as_two_classes = False

    def __init__(
        self,
        smooth: float,
        include_background: bool,
        weight: Sequence[float] | Tensor | None,
        ignore_index: int | None,
        per_image: bool,
    ) -> None:
        super().__init__()
        name = self.loss_name
        if not isinstance(smooth, int | float) or not math.isfinite(smooth) or smooth < 0:
            raise InvalidInputError(f"{name}: smooth must be a finite number >= 0, got {smooth!r}")
        for flag, value in (("include_background", include_background), ("per_image", per_image)):
            if not isinstance(value, bool):
                raise InvalidInputError(f"{name}: {flag} must be True or False, got {value!r}")
        self.smooth = float(smooth)
        self.include_background = include_background
        self.per_image = per_image
        self.ignore_index = check_ignore_index(ignore_index, name)
        vector = class_vector(weight, "weight", name)
        if vector is not None and not include_background and not bool(vector[1:].any()):
            raise InvalidInputError(
                f"{name}: with include_background=False the weights {vector.tolist()} leave "
                f"every remaining class at weight 0"
            )
        self.weight: Tensor | None
        self.register_buffer("weight", vector, persistent=False)

    def probabilities(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``probs [B, K, N]``, ``onehot [B, K, N]`` (zero where ignored), ``valid``.

        N is the number of pixels/voxels; K is C minus the background when it is excluded.
        """
        logits, target, valid = prepare(logits, target, self.ignore_index, self.loss_name)
        check_class_vector(self.weight, logits.shape[1], "weight", self.loss_name)
        probs, onehot = encode_target(
            logits, target, valid, binary_as_two_classes=self.binary_as_two_classes
        )
        probs, onehot = probs.flatten(2), onehot.flatten(2)
        if not self.include_background and probs.shape[1] > 1:
            probs, onehot = probs[:, 1:], onehot[:, 1:]
        return probs, onehot, valid

    def region_sum(self, values: Tensor) -> Tensor:
        """Sum ``[B, K, N]`` over pixels (and over the batch unless per_image) -> ``[B', K]``."""
        sums = values.sum(dim=2)
        return sums if self.per_image else sums.sum(dim=0, keepdim=True)

    def reduce_classes(self, per_class: Tensor, valid: Tensor) -> Tensor:
        """Weighted mean over classes, then mean over images: ``[B', K]`` -> scalar."""
        if self.weight is None or per_class.shape[1] == 1:
            per_row = per_class.mean(dim=1)
        else:
            weight = self.weight.to(per_class)
            if weight.numel() > per_class.shape[1]:  # background excluded
                weight = weight[1:]
            per_row = (per_class * weight).sum(dim=1) / weight.sum()
        return self.reduce_rows(per_row, valid)

    def reduce_rows(self, per_row: Tensor, valid: Tensor) -> Tensor:
        """``[B']`` -> scalar: the batch row itself, or the mean over non-empty images."""
        return mean_over_valid_images(per_row, valid) if self.per_image else per_row[0]

    def extra_repr(self) -> str:
        return (
            f"smooth={self.smooth}, include_background={self.include_background}, "
            f"ignore_index={self.ignore_index}, per_image={self.per_image}"
        )
