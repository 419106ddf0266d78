"""Cross-entropy for semantic segmentation, binary (sigmoid) or multi-class (softmax)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelseg.errors import InvalidInputError
from pixelseg.losses.inputs import check_class_vector, check_ignore_index, class_vector, prepare

__all__ = ["CrossEntropyLoss"]


class CrossEntropyLoss(nn.Module):
    """Pixel-wise cross-entropy, averaged over non-ignored pixels.

    Multi-class (C > 1) calls ``F.cross_entropy``; binary (C == 1) uses BCE-with-logits.

    Args:
        ignore_index: label value whose pixels are left out (e.g. 255), or None (default: every
            pixel counts and any label outside the classes is an error, rather than torch's
            silent -100).
        weight: one weight per class (binary: 2 values, background then foreground). As in
            torch, the mean is weighted: sum(w[y] * loss) / sum(w[y]) over valid pixels.
        label_smoothing: in [0, 1); the target becomes ``(1 - s) * onehot + s / K`` with K = C
            classes (K = 2 for binary, so the 0/1 target becomes s/2 and 1 - s/2).

    If every pixel is ignored the loss is 0 with zero gradient (torch would give NaN).
    """

    def __init__(
        self,
        ignore_index: int | None = None,
        weight: Sequence[float] | Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.ignore_index = check_ignore_index(ignore_index, "ce")
        if not isinstance(label_smoothing, int | float) or not 0.0 <= label_smoothing < 1.0:
            raise InvalidInputError(
                f"ce: label_smoothing must be a number in [0, 1), got {label_smoothing!r}"
            )
        self.label_smoothing = float(label_smoothing)
        self.weight: Tensor | None
        self.register_buffer("weight", class_vector(weight, "weight", "ce"), persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits [B, C, *spatial]``, ``target [B, *spatial]`` -> scalar loss."""
        logits, target, valid = prepare(logits, target, self.ignore_index, "ce")
        num_classes = logits.shape[1]
        weight = None if self.weight is None else self.weight.to(logits)
        if num_classes == 1:
            check_class_vector(weight, 1, "weight", "ce")
            return self._binary(logits[:, 0], target, valid, weight)
        check_class_vector(weight, num_classes, "weight", "ce")
        # Our own mean (sum / total weight) instead of reduction="mean": same value, but 0
        # rather than NaN when every pixel is ignored.
        denominator = _pixel_weight_sum(target, valid, weight, logits.dtype)
        total = F.cross_entropy(
            logits,
            torch.where(valid, target, torch.full_like(target, -100)),
            weight=weight,
            ignore_index=-100,
            reduction="sum",
            label_smoothing=self.label_smoothing,
        )
        return total / denominator

    def _binary(
        self, logit: Tensor, target: Tensor, valid: Tensor, weight: Tensor | None
    ) -> Tensor:
        soft = target.to(logit.dtype)
        if self.label_smoothing:
            soft = soft * (1 - self.label_smoothing) + self.label_smoothing / 2
        per_pixel = F.binary_cross_entropy_with_logits(logit, soft, reduction="none")
        per_pixel = torch.where(valid, per_pixel, torch.zeros_like(per_pixel))
        if weight is not None:
            per_pixel = per_pixel * weight[target]
        return per_pixel.sum() / _pixel_weight_sum(target, valid, weight, logit.dtype)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}"


def _pixel_weight_sum(
    target: Tensor, valid: Tensor, weight: Tensor | None, dtype: torch.dtype
) -> Tensor:
    """Sum of per-pixel class weights over valid pixels (the valid count without weights)."""
    pixel_weight = valid.to(dtype)
    if weight is not None:
        pixel_weight = pixel_weight * weight[target]
    return pixel_weight.sum().clamp_min(torch.finfo(dtype).tiny)
