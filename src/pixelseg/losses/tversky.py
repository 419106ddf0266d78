"""Tversky loss (Salehi et al., 2017): Dice with separate weights for FP and FN."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor

from pixelseg.errors import InvalidInputError
from pixelseg.losses.overlap import OverlapLoss, safe_ratio

__all__ = ["TverskyLoss"]


class TverskyLoss(OverlapLoss):
    """Tversky loss: ``1 - mean_c (2 TP + smooth) / (2 TP + 2 alpha FP + 2 beta FN + smooth)``.

    ``TP = sum p t``, ``FP = sum p (1 - t)``, ``FN = sum (1 - p) t`` per class over non-ignored
    pixels. This is the usual index ``TP / (TP + alpha FP + beta FN)`` written with Dice's
    factor 2, so the smoothing equals ``smooth / 2`` in the usual form and
    ``alpha = beta = 0.5`` gives exactly :class:`~pixelseg.losses.dice.DiceLoss` with the same
    options. Defaults ``alpha=0.3, beta=0.7`` (the paper's best) penalise missed foreground
    more than false alarms, trading precision for recall. Other options as for Dice.
    """

    loss_name = "tversky"

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.7,
        smooth: float = 1.0,
        include_background: bool = True,
        weight: Sequence[float] | Tensor | None = None,
        ignore_index: int | None = None,
        per_image: bool = False,
    ) -> None:
        super().__init__(smooth, include_background, weight, ignore_index, per_image)
        for name, value in (("alpha", alpha), ("beta", beta)):
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise InvalidInputError(
                    f"tversky: {name} must be a finite number >= 0, got {value!r}"
                )
        if alpha == 0 and beta == 0:
            raise InvalidInputError(
                "tversky: alpha and beta are both 0, which ignores every error; use e.g. "
                "alpha=0.3, beta=0.7"
            )
        self.alpha = float(alpha)
        self.beta = float(beta)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits [B, C, *spatial]``, ``target [B, *spatial]`` -> scalar loss in [0, 1]."""
        probs, onehot, valid = self.probabilities(logits, target)
        true_pos = self.region_sum(probs * onehot)
        false_pos = self.region_sum(probs * (1 - onehot))
        false_neg = self.region_sum((1 - probs) * onehot)
        numerator = 2 * true_pos + self.smooth
        denominator = (
            2 * true_pos + 2 * self.alpha * false_pos + 2 * self.beta * false_neg + self.smooth
        )
        return self.reduce_classes(1 - safe_ratio(numerator, denominator), valid)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, {super().extra_repr()}"
