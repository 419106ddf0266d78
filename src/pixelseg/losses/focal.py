"""Focal loss (Lin et al., 2017): cross-entropy that down-weights well-classified pixels."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelseg.errors import InvalidInputError
from pixelseg.losses.inputs import check_class_vector, check_ignore_index, class_vector, prepare

__all__ = ["FocalLoss"]


class FocalLoss(nn.Module):
    """Focal loss ``-alpha_t (1 - p_t)^gamma log p_t``, averaged over non-ignored pixels.

    ``p_t`` is the probability of the true class (softmax for C > 1, sigmoid for C == 1).

    Args:
        gamma: focusing exponent >= 0 (default 2, the paper's); 0 gives cross-entropy.
        alpha: class balance. Binary: a number in [0, 1], the weight of the foreground
            (background gets ``1 - alpha``; the paper uses 0.25), or two weights (background,
            foreground). Multi-class: one weight per class. None (default): no weighting. Unlike weighted cross-entropy the mean divides
            by the number of valid pixels, not by the sum of weights, as in the paper.
        ignore_index: label value whose pixels are left out, or None.

    If every pixel is ignored the loss is 0 with zero gradient.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | Tensor | None = None,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(gamma, int | float) or not math.isfinite(gamma) or gamma < 0:
            raise InvalidInputError(f"focal: gamma must be a finite number >= 0, got {gamma!r}")
        self.gamma = float(gamma)
        self.ignore_index = check_ignore_index(ignore_index, "focal")
        self.binary_alpha: float | None = None
        vector = None
        if isinstance(alpha, int | float) and not isinstance(alpha, bool):
            if not 0.0 <= alpha <= 1.0:
                raise InvalidInputError(f"focal: a scalar alpha must lie in [0, 1], got {alpha}")
            self.binary_alpha = float(alpha)
        else:
            vector = class_vector(alpha, "alpha", "focal")
        self.alpha: Tensor | None
        self.register_buffer("alpha", vector, persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits [B, C, *spatial]``, ``target [B, *spatial]`` -> scalar loss."""
        logits, target, valid = prepare(logits, target, self.ignore_index, "focal")
        num_classes = logits.shape[1]
        alpha_t = None
        if num_classes == 1:
            ce = F.binary_cross_entropy_with_logits(
                logits[:, 0], target.to(logits.dtype), reduction="none"
            )
            if self.binary_alpha is not None:
                alpha_t = torch.where(target == 1, self.binary_alpha, 1 - self.binary_alpha)
        else:
            if self.binary_alpha is not None:
                raise InvalidInputError(
                    f"focal: a scalar alpha ({self.binary_alpha}) is only for binary logits "
                    f"(C == 1); for C = {num_classes} classes give one alpha per class"
                )
            ce = -torch.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
        if self.alpha is not None:
            check_class_vector(self.alpha, num_classes, "alpha", "focal")
            alpha_t = self.alpha.to(logits)[target]
        # 1 - p_t = -expm1(-ce) keeps precision when p_t is near 1; the clamp keeps the
        # gradient of (1 - p_t)^gamma finite for 0 < gamma < 1 at p_t == 1.
        miss = (-torch.expm1(-ce)).clamp_min(torch.finfo(ce.dtype).tiny)
        per_pixel = miss**self.gamma * ce
        if alpha_t is not None:
            per_pixel = alpha_t.to(per_pixel) * per_pixel
        per_pixel = torch.where(valid, per_pixel, torch.zeros_like(per_pixel))
        return per_pixel.sum() / valid.sum().clamp_min(1).to(per_pixel.dtype)

    def extra_repr(self) -> str:
        alpha = self.binary_alpha if self.alpha is None else self.alpha.tolist()
        return f"gamma={self.gamma}, alpha={alpha}, ignore_index={self.ignore_index}"
