"""Segmentation metrics: a streaming confusion matrix and per-image scores.

``ConfusionMatrix`` accumulates exact int64 pixel counts over batches (and processes);
``binary_dice`` / ``binary_iou`` / ``per_image_scores`` give one number per image;
``ThresholdSweep`` / ``isbi_pixel_error`` score a probability map over thresholds (the ISBI
2012 challenge's pixel error).
"""

from __future__ import annotations

from pixelseg.metrics.binary import binary_dice, binary_iou, per_image_scores
from pixelseg.metrics.confusion import ConfusionMatrix, confusion_scores, per_class_iou_dice
from pixelseg.metrics.surface import surface_metrics, surface_metrics_per_class
from pixelseg.metrics.threshold_sweep import ISBI_THRESHOLDS, ThresholdSweep, isbi_pixel_error

__all__ = [
    "ISBI_THRESHOLDS",
    "ConfusionMatrix",
    "ThresholdSweep",
    "binary_dice",
    "binary_iou",
    "confusion_scores",
    "isbi_pixel_error",
    "per_class_iou_dice",
    "per_image_scores",
    "surface_metrics",
    "surface_metrics_per_class",
]
