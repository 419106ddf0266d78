"""Binary F-score over a sweep of probability thresholds, and the ISBI 2012 pixel error.

The ISBI 2012 EM segmentation challenge (and the U-Net paper's table, which reports its
results) defines "pixel error" not as ``1 - accuracy`` but as ``1 - the maximal F-score of
pixel similarity``: the positive class is the white label (cell interior), the submitted map
is a probability of that class, both are binarised with ``value > t`` for ``t`` in 0.0, 0.1,
..., 1.0, the true/false positive counts are pooled over the whole stack, and the best F-score
over ``t`` is kept (Fiji's ``trainableSegmentation.metrics.PixelError`` with
``getPixelErrorMaximalFScore(0.0, 1.0, 0.1)``, the challenge's evaluation script).

Written here because neither torchmetrics nor scikit-learn has a streaming, pooled
F-score-over-thresholds with the strict ``>`` rule: ``BinaryPrecisionRecallCurve`` keeps
no F-score and bins with ``>=``. Counts are exact int64 sums, so streaming over images
equals scoring the stack at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pixelseg.errors import InvalidInputError

__all__ = ["ISBI_THRESHOLDS", "ThresholdSweep", "isbi_pixel_error"]

ISBI_THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))


class ThresholdSweep:
    """Streaming true/false positive and false negative counts at several thresholds.

    Example::

        sweep = ThresholdSweep()                  # the ISBI thresholds 0.0 .. 1.0
        for probs, target in batches:             # probs of the positive class, 0/1 target
            sweep.update(probs, target)
        sweep.compute()["pixel_error"]            # 1 - best F-score over the thresholds
    """

    def __init__(
        self, thresholds: Sequence[float] = ISBI_THRESHOLDS, ignore_index: int | None = None
    ) -> None:
        try:
            values = [float(t) for t in thresholds]
        except (TypeError, ValueError):
            values = []
        if not values or any(t != t for t in values):
            raise InvalidInputError(
                f"thresholds must be a non-empty list of numbers, got {thresholds!r}"
            )
        self.thresholds = values
        self.ignore_index = ignore_index
        # rows: thresholds; columns: true positives, false positives, false negatives
        self._counts = torch.zeros(len(values), 3, dtype=torch.int64)

    def __repr__(self) -> str:
        return f"ThresholdSweep(thresholds={self.thresholds}, ignore_index={self.ignore_index})"

    def update(self, probs: Tensor, target: Tensor) -> None:
        """Add one batch: ``probs`` in [0, 1] (float, the positive class) and a 0/1 ``target``
        of the same shape (``ignore_index`` pixels are skipped). Nothing is counted when
        this raises."""
        probs, positive = self._checked(probs, target)
        num_positive = int(positive.sum())
        rows = []
        for t in self.thresholds:
            predicted = probs > t
            tp = int((predicted & positive).sum())
            rows.append((tp, int(predicted.sum()) - tp, num_positive - tp))
        self._counts += torch.tensor(rows, dtype=torch.int64)

    def _checked(self, probs: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        if not isinstance(probs, Tensor) or not isinstance(target, Tensor):
            raise InvalidInputError("probs and target must be torch tensors")
        if probs.shape != target.shape:
            raise InvalidInputError(
                f"probs {tuple(probs.shape)} and target {tuple(target.shape)} must have the "
                "same shape (pass the positive class's probability map, not all classes)"
            )
        if not probs.is_floating_point():
            raise InvalidInputError(f"probs must be floating point, got dtype {probs.dtype}")
        if target.is_floating_point():
            raise InvalidInputError(
                f"target must hold integer labels 0/1, got dtype {target.dtype}"
            )
        probs, target = probs.detach(), target.detach().to(probs.device)
        if bool(torch.isnan(probs).any()):
            raise InvalidInputError("probs holds NaN")
        if probs.numel() and (float(probs.min()) < 0.0 or float(probs.max()) > 1.0):
            raise InvalidInputError(
                f"probs must lie in [0, 1], found values in [{float(probs.min()):.4g}, "
                f"{float(probs.max()):.4g}]; apply softmax or sigmoid first"
            )
        keep = torch.ones_like(target, dtype=torch.bool)
        if self.ignore_index is not None:
            keep = target != self.ignore_index
        bad = keep & (target != 0) & (target != 1)
        if bool(bad.any()):
            found = torch.unique(target[bad])[:10].tolist()
            allowed = "0, 1" + (
                f" or ignore_index={self.ignore_index}" if self.ignore_index is not None else ""
            )
            raise InvalidInputError(f"target holds values {found}; valid values: {allowed}")
        return probs[keep], target[keep] == 1

    def reset(self) -> None:
        self._counts.zero_()

    def compute(self) -> dict[str, float | list[float]]:
        """Per-threshold ``precision``, ``recall``, ``fscore`` lists, the best ``threshold``,
        its ``max_fscore`` and ``pixel_error = 1 - max_fscore``. A threshold with no true
        positive scores F = 0 (Fiji's NaN there never wins the max either)."""
        c = self._counts.double()
        tp, fp, fn = c[:, 0], c[:, 1], c[:, 2]
        precision = torch.where(tp + fp > 0, tp / (tp + fp), torch.zeros_like(tp))
        recall = torch.where(tp + fn > 0, tp / (tp + fn), torch.zeros_like(tp))
        fscore = torch.where(tp > 0, 2 * tp / (2 * tp + fp + fn), torch.zeros_like(tp))
        best = int(torch.argmax(fscore))  # first maximum, like Fiji's strict ">" update
        return {
            "thresholds": list(self.thresholds),
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "fscore": fscore.tolist(),
            "threshold": self.thresholds[best],
            "max_fscore": float(fscore[best]),
            "pixel_error": 1.0 - float(fscore[best]),
        }


def isbi_pixel_error(probs: Tensor, target: Tensor, ignore_index: int | None = None) -> float:
    """The ISBI 2012 challenge's pixel error of a stack: ``1 -`` the best F-score of the
    positive (cell interior) class over thresholds 0.0, 0.1, ..., 1.0 (module docstring)."""
    sweep = ThresholdSweep(ignore_index=ignore_index)
    sweep.update(probs, target)
    return float(sweep.compute()["pixel_error"])
