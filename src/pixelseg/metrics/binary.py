"""Per-image scores: binary Dice/IoU of 0/1 masks and per-image multiclass IoU/Dice.

Streaming metrics (:class:`~pixelseg.metrics.ConfusionMatrix`) pool pixels over a dataset;
these give one number per image, for reports, galleries and per-image tables.

Empty masks. When neither the ground truth nor the prediction has a foreground pixel, the
binary helpers return ``empty_score`` (default 1.0: predicting nothing where there is
nothing is right). This is MONAI's ``DiceMetric(ignore_empty=False)`` rule; MONAI's default
(``ignore_empty=True``) and torchmetrics' ``DiceScore`` give NaN instead, which you get with
``empty_score=float('nan')``. An empty ground truth with a non-empty prediction scores 0.
The multiclass :func:`per_image_scores` follows the confusion-matrix rule instead: a class
absent from both the image's ground truth and prediction is NaN and left out of the mean.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pixelseg.errors import InvalidInputError
from pixelseg.metrics.confusion import per_class_iou_dice
from pixelseg.metrics.counting import PairCounter, as_label_pair

__all__ = ["binary_dice", "binary_iou", "per_image_scores"]


def _binary_counts(
    pred: Tensor, target: Tensor, ignore_index: int | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image intersection, |pred| and |target| (float64 ``[B]``), ignored pixels out."""
    if not isinstance(pred, Tensor) or not isinstance(target, Tensor):
        raise InvalidInputError("pred and target must be torch tensors")
    if pred.shape != target.shape or pred.dim() < 2:
        raise InvalidInputError(
            f"binary masks must both be [B, *spatial] with equal shapes, got pred "
            f"{tuple(pred.shape)} and target {tuple(target.shape)}"
        )
    for name, mask in (("pred", pred), ("target", target)):
        if mask.is_floating_point() or mask.is_complex():
            raise InvalidInputError(
                f"{name} must be a 0/1 integer or bool mask, got dtype {mask.dtype}; "
                "threshold probabilities first (e.g. probs > 0.5)"
            )
    if pred.device != target.device:
        raise InvalidInputError(f"pred is on {pred.device} but target is on {target.device}")
    valid = torch.ones_like(target, dtype=torch.bool)
    if ignore_index is not None:
        valid = target != ignore_index
    bad_pred = (pred != 0) & (pred != 1)
    bad_target = (target != 0) & (target != 1) & valid
    for name, bad, mask in (("pred", bad_pred, pred), ("target", bad_target, target)):
        if bool(bad.any()):
            with_ignore = name == "target" and ignore_index is not None
            allowed = "0, 1" + (f" or ignore_index={ignore_index}" if with_ignore else "")
            found = torch.unique(mask[bad])[:10].tolist()
            raise InvalidInputError(f"{name} mask holds values {found}; valid values: {allowed}")
    p = (pred == 1) & valid
    t = (target == 1) & valid
    inter = (p & t).flatten(1).sum(1).double()
    return inter, p.flatten(1).sum(1).double(), t.flatten(1).sum(1).double()


def binary_dice(
    pred: Tensor, target: Tensor, ignore_index: int | None = None, *, empty_score: float = 1.0
) -> Tensor:
    """Dice ``2|P∩T| / (|P| + |T|)`` per image of 0/1 (or bool) masks ``[B, *spatial]``.

    Target pixels equal to ``ignore_index`` are left out of both masks. Returns float64
    ``[B]``; images where both masks are empty score ``empty_score`` (module docstring).
    """
    inter, p_sum, t_sum = _binary_counts(pred, target, ignore_index)
    denom = p_sum + t_sum
    return torch.where(denom > 0, 2 * inter / denom, torch.full_like(denom, empty_score))


def binary_iou(
    pred: Tensor, target: Tensor, ignore_index: int | None = None, *, empty_score: float = 1.0
) -> Tensor:
    """IoU ``|P∩T| / |P∪T|`` per image of 0/1 (or bool) masks ``[B, *spatial]``.

    Same conventions as :func:`binary_dice`; returns float64 ``[B]``.
    """
    inter, p_sum, t_sum = _binary_counts(pred, target, ignore_index)
    union = p_sum + t_sum - inter
    return torch.where(union > 0, inter / union, torch.full_like(union, empty_score))


def per_image_scores(
    pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = None
) -> dict[str, Tensor]:
    """Per-image multiclass IoU and Dice.

    Args:
        pred: labels ``[B, *spatial]`` or logits ``[B, C, *spatial]``.
        target: labels ``[B, *spatial]``, values in ``[0, C)`` or ``ignore_index``.

    Returns:
        float64 tensors on CPU: ``iou_per_class`` and ``dice_per_class`` ``[B, C]`` (NaN for a
        class absent from both that image's ground truth and prediction, and for the
        ``ignore_index`` class when it is a class id), and ``iou`` / ``dice`` ``[B]``: their
        means over the classes that are not NaN (NaN if every pixel of the image is ignored).
    """
    pred, target = as_label_pair(pred, target, num_classes)
    if target.dim() < 2:
        raise InvalidInputError(
            f"per-image scores need [B, *spatial] inputs, got target shape {tuple(target.shape)}"
        )
    counter = PairCounter(num_classes, ignore_index)
    matrices = torch.zeros(target.shape[0], num_classes, num_classes, dtype=torch.int64)
    for i, (p, t) in enumerate(zip(pred, target, strict=True)):
        matrices[i] = counter(p, t).cpu()
    iou, dice = per_class_iou_dice(matrices)
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        iou[:, ignore_index] = dice[:, ignore_index] = float("nan")
    return {
        "iou": torch.nanmean(iou, dim=1),
        "dice": torch.nanmean(dice, dim=1),
        "iou_per_class": iou,
        "dice_per_class": dice,
    }
