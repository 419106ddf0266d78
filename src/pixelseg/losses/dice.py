"""Soft Dice loss and the generalised Dice loss of Sudre et al. (2017)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pixelseg.losses.overlap import OverlapLoss, safe_ratio

__all__ = ["DiceLoss", "GeneralizedDiceLoss"]


class DiceLoss(OverlapLoss):
    """Soft Dice loss: ``1 - mean_c (2 I_c + smooth) / (P_c + T_c + smooth)``.

    ``I_c = sum p * t``, ``P_c = sum p``, ``T_c = sum t`` over non-ignored pixels, with ``p``
    the softmax (multi-class) or sigmoid (binary, C == 1: foreground only) probability.

    ``smooth`` defaults to 1.0: a class absent from both prediction and target scores Dice 1
    (loss 0), and a class absent from the target but faintly predicted is pushed down gently
    instead of scoring 0 at once. With ``smooth=0`` an empty-vs-empty class still scores 1,
    never NaN. See :class:`~pixelseg.losses.overlap.OverlapLoss` for the other options; by
    default the sums run over the whole batch (``per_image=False``).
    """

    loss_name = "dice"

    def __init__(
        self,
        smooth: float = 1.0,
        include_background: bool = True,
        weight: Sequence[float] | Tensor | None = None,
        ignore_index: int | None = None,
        per_image: bool = False,
    ) -> None:
        super().__init__(smooth, include_background, weight, ignore_index, per_image)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits [B, C, *spatial]``, ``target [B, *spatial]`` -> scalar loss in [0, 1]."""
        probs, onehot, valid = self.probabilities(logits, target)
        intersection = self.region_sum(probs * onehot)
        volumes = self.region_sum(probs) + self.region_sum(onehot)
        dice = safe_ratio(2 * intersection + self.smooth, volumes + self.smooth)
        return self.reduce_classes(1 - dice, valid)


class GeneralizedDiceLoss(OverlapLoss):
    """Generalised Dice loss (Sudre et al., 2017) for strongly unbalanced classes.

    ``1 - (2 sum_c w_c I_c + smooth) / (sum_c w_c (P_c + T_c) + smooth)`` with
    ``w_c = 1 / T_c**2``. A class absent from the target (``T_c = 0``, infinite weight) takes
    the largest finite weight of its row, as MONAI's ``GeneralizedDiceLoss`` does; if no class
    is present the row's loss is 0. The weights are then normalised to sum to 1 per row, which
    leaves the ratio unchanged (it differs from MONAI only through ``smooth``) and keeps
    ``smooth`` negligible next to the weighted sums at any volume.

    ``smooth`` defaults to 1e-5 (MONAI's value). A binary input (C == 1) is scored as two classes,
    background ``1 - p`` and foreground ``p``, which is the setting the weighting was made
    for; ``include_background=False`` drops the background class.
    """

    loss_name = "generalized_dice"
    binary_as_two_classes = True

    def __init__(
        self,
        smooth: float = 1e-5,
        include_background: bool = True,
        ignore_index: int | None = None,
        per_image: bool = False,
    ) -> None:
        super().__init__(smooth, include_background, None, ignore_index, per_image)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits [B, C, *spatial]``, ``target [B, *spatial]`` -> scalar loss in [0, 1]."""
        probs, onehot, valid = self.probabilities(logits, target)
        intersection = self.region_sum(probs * onehot)
        true_volume = self.region_sum(onehot)
        volumes = self.region_sum(probs) + true_volume
        present = true_volume > 0
        weight = 1 / torch.where(present, true_volume, torch.ones_like(true_volume)) ** 2
        weight = torch.where(present, weight, torch.zeros_like(weight))
        weight = torch.where(present, weight, weight.max(dim=1, keepdim=True).values)
        # Scaling w leaves the ratio unchanged; normalising keeps `smooth` small next to the
        # weighted sums at any volume (1/T^2 is ~1e-12 for a million-voxel class).
        weight = weight / weight.sum(dim=1, keepdim=True).clamp_min(torch.finfo(weight.dtype).tiny)
        numerator = 2 * (weight * intersection).sum(dim=1) + self.smooth
        denominator = (weight * volumes).sum(dim=1) + self.smooth
        return self.reduce_rows(1 - safe_ratio(numerator, denominator), valid)
