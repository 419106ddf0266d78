"""Streaming confusion matrix for semantic segmentation and the scores derived from it.

Pixel counts are summed exactly (int64), so a metric streamed over batches, merged across
workers or all-reduced across processes equals the one computed in one shot.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pixelseg.errors import InvalidInputError
from pixelseg.metrics.counting import PairCounter, as_label_pair

__all__ = ["ConfusionMatrix", "confusion_scores", "per_class_iou_dice"]


def per_class_iou_dice(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """Per-class IoU and Dice from confusion matrices ``[..., C, C]`` (rows ground truth).

    Returns float64 ``[..., C]`` each. A class absent from both ground truth and prediction
    has 0/0 and gets NaN; a class only predicted (or only in the ground truth) gets 0.
    """
    m = matrix.double()
    tp = torch.diagonal(m, dim1=-2, dim2=-1)
    gt, pr = m.sum(dim=-1), m.sum(dim=-2)
    # 0/0 is NaN in IEEE arithmetic, which is exactly the "absent class" marker we want.
    return tp / (gt + pr - tp), 2 * tp / (gt + pr)


def confusion_scores(
    matrix: Tensor, ignore_index: int | None = None
) -> dict[str, float | list[float]]:
    """Segmentation scores from a confusion matrix ``[C, C]`` (rows ground truth).

    Returns a dict of Python floats (per-class entries are lists of C floats):

    - ``pixel_accuracy``: correct / counted pixels.
    - ``mean_pixel_accuracy``: mean over classes present in the ground truth of
      correct / ground-truth pixels (a class absent from the ground truth is left out).
    - ``iou``, ``miou``: per-class intersection over union and its mean.
    - ``fwiou``: IoU averaged with weights = ground-truth pixel frequency.
    - ``dice``, ``mdice``: per-class Dice (F1) and its mean.

    A class absent from both ground truth and prediction has NaN IoU and Dice and is left out
    of the means; a class only predicted scores 0. If ``ignore_index`` is itself a class id
    (in ``[0, C)``), that class is not evaluated: its per-class scores are NaN and it is left
    out of the means (as torchmetrics does). Means over no class, and every score of an empty
    matrix, are NaN.
    """
    m = matrix.detach().to("cpu", torch.float64)
    if m.dim() != 2 or m.shape[0] != m.shape[1]:
        raise InvalidInputError(f"confusion matrix must be [C, C], got {tuple(m.shape)}")
    num_classes = m.shape[0]
    iou, dice = per_class_iou_dice(m)
    tp, gt = torch.diagonal(m), m.sum(dim=1)
    recall = tp / gt
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        iou[ignore_index] = dice[ignore_index] = recall[ignore_index] = math.nan
    total = gt.sum()
    weights = gt / total
    present = gt > 0
    fwiou = (weights[present] * iou[present]).sum() if total > 0 else torch.tensor(math.nan)
    return {
        "pixel_accuracy": float(tp.sum() / total),
        "mean_pixel_accuracy": float(torch.nanmean(recall)),
        "iou": iou.tolist(),
        "miou": float(torch.nanmean(iou)),
        "fwiou": float(fwiou),
        "dice": dice.tolist(),
        "mdice": float(torch.nanmean(dice)),
    }


class ConfusionMatrix:
    """Streaming confusion-matrix accumulator (MONAI-style ``update`` / ``compute``).

    ``matrix[i, j]`` counts pixels of ground-truth class i predicted as class j. Counts are
    int64 and kept on the device of the latest input. Ground-truth pixels equal to
    ``ignore_index`` are skipped whatever is predicted there. See :func:`confusion_scores`
    for the scores and their NaN rules (a class absent from both ground truth and prediction
    is NaN and left out of the means).

    Example::

        cm = ConfusionMatrix(num_classes=21, ignore_index=255)
        for logits, target in loader:
            cm.update(logits, target)      # logits [B, 21, H, W], target [B, H, W]
        cm.all_reduce()                   # no-op unless torch.distributed is initialised
        scores = cm.compute()             # scores["miou"], scores["iou"][c], ...
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise InvalidInputError(f"num_classes must be an int >= 1, got {num_classes!r}")
        if ignore_index is not None and (
            isinstance(ignore_index, bool) or not isinstance(ignore_index, int)
        ):
            raise InvalidInputError(f"ignore_index must be an int or None, got {ignore_index!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._counter = PairCounter(num_classes, ignore_index)
        self._matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"pixels={int(self._matrix.sum())})"
        )

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch.

        Args:
            pred: labels ``[B, *spatial]`` (any integer dtype or bool) or logits
                ``[B, C, *spatial]`` (floating point; argmax over dim 1).
            target: labels ``[B, *spatial]`` (any integer dtype or bool), values in
                ``[0, C)`` or ``ignore_index``; on the same device as ``pred``.

        Raises:
            InvalidInputError: mismatched shapes or devices, float target, NaN logits,
                wrong number of logit channels, or labels out of range. The matrix is left
                unchanged when this is raised.
        """
        pred, target = as_label_pair(pred, target, self.num_classes)
        counts = self._counter(pred, target)
        if self._matrix.device != counts.device:
            self._matrix = self._matrix.to(counts.device)
        self._matrix += counts

    def reset(self) -> None:
        """Forget every counted pixel (keeps the device)."""
        self._matrix.zero_()

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another accumulator's counts to this one (e.g. from a worker); returns self."""
        if not isinstance(other, ConfusionMatrix):
            raise InvalidInputError(
                f"can only merge another ConfusionMatrix, got {type(other).__name__}"
            )
        if other.num_classes != self.num_classes:
            raise InvalidInputError(
                f"cannot merge a ConfusionMatrix with num_classes={other.num_classes} into one "
                f"with num_classes={self.num_classes}; they must match"
            )
        self._matrix += other._matrix.to(self._matrix.device)
        return self

    def all_reduce(self, group: object | None = None) -> None:
        """Sum the matrix over all processes (one ``torch.distributed.all_reduce``).

        A no-op when torch.distributed is unavailable or not initialised, so the same code
        runs in one process. Every process must call it (it is a collective). With NCCL the
        matrix must already be on this process's GPU (it is after a CUDA update).
        """
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            return
        dist.all_reduce(self._matrix, op=dist.ReduceOp.SUM, group=group)

    @property
    def matrix(self) -> Tensor:
        """A copy of the counts, int64 ``[C, C]``: rows ground truth, columns prediction."""
        return self._matrix.clone()

    def compute(self) -> dict[str, float | list[float]]:
        """Scores of everything counted so far; see :func:`confusion_scores`."""
        return confusion_scores(self._matrix, self.ignore_index)
