"""Segmentation metrics: a streaming confusion matrix and per-image scores.

``ConfusionMatrix`` accumulates exact int64 pixel counts over batches (and processes);
``binary_dice`` / ``binary_iou`` / ``per_image_scores`` give one number per image;
``ThresholdSweep`` / ``isbi_pixel_error`` score a probability map over thresholds (the ISBI
2012 challenge's pixel error); ``coco_evaluate`` / ``CocoEvaluator`` give COCO box and mask
AP/AR equal to pycocotools'; ``PanopticQuality`` / ``panoptic_quality`` give PQ, SQ and RQ
exactly as the COCO panoptic reference; ``surface_metrics`` gives per-case Dice, HD95, ASSD
and surface Dice in millimetres.
"""

from __future__ import annotations

from pixelseg.metrics.binary import binary_dice, binary_iou, per_image_scores
from pixelseg.metrics.coco import coco_evaluate
from pixelseg.metrics.coco_stream import CocoEvaluator, detections_to_coco_results
from pixelseg.metrics.confusion import ConfusionMatrix, confusion_scores, per_class_iou_dice
from pixelseg.metrics.panoptic import PanopticQuality, panoptic_quality
from pixelseg.metrics.surface import surface_metrics, surface_metrics_per_class
from pixelseg.metrics.threshold_sweep import ISBI_THRESHOLDS, ThresholdSweep, isbi_pixel_error

__all__ = [
    "ISBI_THRESHOLDS",
    "CocoEvaluator",
    "ConfusionMatrix",
    "PanopticQuality",
    "ThresholdSweep",
    "binary_dice",
    "binary_iou",
    "coco_evaluate",
    "confusion_scores",
    "detections_to_coco_results",
    "isbi_pixel_error",
    "panoptic_quality",
    "per_class_iou_dice",
    "per_image_scores",
    "surface_metrics",
    "surface_metrics_per_class",
]
