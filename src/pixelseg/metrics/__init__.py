"""Segmentation metrics: a streaming confusion matrix and per-image scores.

``ConfusionMatrix`` accumulates exact int64 pixel counts over batches (and processes);
``binary_dice`` / ``binary_iou`` / ``per_image_scores`` give one number per image.
"""

from __future__ import annotations

from pixelseg.metrics.binary import binary_dice, binary_iou, per_image_scores
from pixelseg.metrics.confusion import ConfusionMatrix, confusion_scores, per_class_iou_dice

__all__ = [
    "ConfusionMatrix",
    "binary_dice",
    "binary_iou",
    "confusion_scores",
    "per_class_iou_dice",
    "per_image_scores",
]
