"""What semantic segmentation writes: the evaluation report and ``predict``'s files.

Report: ``metrics.json`` (per-class lists keyed by class name), ``per_image.csv``, charts
(``class_iou.png``, ``confusion_matrix.png``, ``score_distributions.png``) and
``worst_cases.png`` (image | ground truth | prediction | error map). Prediction: an index
PNG (palette-coloured) and a colour overlay per image.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pixelseg.inference.masks_io import default_palette, overlay, save_index_mask
from pixelseg.reports import (
    plot_class_iou,
    plot_confusion_matrix,
    plot_score_distributions,
    worst_cases_gallery,
    write_metrics_json,
    write_per_image_csv,
)

__all__ = ["REPORT_FILES", "keyed_by_class", "write_mask_and_overlay", "write_semantic_report"]

log = logging.getLogger(__name__)

REPORT_FILES = {
    "metrics": "metrics.json",
    "per_image": "per_image.csv",
    "class_iou": "class_iou.png",
    "confusion": "confusion_matrix.png",
    "distributions": "score_distributions.png",
    "gallery": "worst_cases.png",
}


def keyed_by_class(metrics: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    """Replace per-class lists (``iou``, ``dice``, ...) by dicts keyed by class name."""
    result = dict(metrics)
    for key, value in metrics.items():
        if isinstance(value, list) and len(value) == len(classes):
            result[key] = dict(zip(classes, value, strict=True))
    return result


def write_semantic_report(
    task: Any,
    out_dir: Path,
    metrics: dict[str, Any],
    accumulator: Any,
    rows: list[dict[str, Any]],
    worst: list[dict[str, Any]],
) -> dict[str, Any]:
    """Write every report file into ``out_dir``; returns the metrics as written."""
    classes = task.class_names
    result = keyed_by_class(metrics, classes)
    write_metrics_json(result, out_dir / REPORT_FILES["metrics"])
    iou = [result["iou"][name] for name in classes] if isinstance(result["iou"], dict) else []
    plot_class_iou(iou, classes, result["miou"], out_dir / REPORT_FILES["class_iou"])
    matrix = accumulator.matrix.matrix.cpu().numpy()[: len(classes), : len(classes)]
    plot_confusion_matrix(matrix, classes, out_dir / REPORT_FILES["confusion"])
    if rows:
        table = [{k: v for k, v in row.items() if k != "score"} for row in rows]
        write_per_image_csv(table, out_dir / REPORT_FILES["per_image"])
        plot_score_distributions(
            {"dice": [r["dice"] for r in rows], "iou": [r["iou"] for r in rows]},
            out_dir / REPORT_FILES["distributions"],
        )
    if worst:
        worst_cases_gallery(
            worst,
            task.colors,
            out_dir / REPORT_FILES["gallery"],
            k=len(worst),
            ignore_index=task.ignore_index,
            class_names=classes,
        )
    log.info("report written to %s", out_dir)
    return result


def write_mask_and_overlay(
    task: Any, paths: list[Path], image: np.ndarray, prediction: torch.Tensor
) -> list[Path]:
    """Write the index mask and the overlay of one image (``prediction [1, H, W]``)."""
    labels = prediction[0].cpu().numpy()
    labels = labels.astype(np.uint8 if task.num_classes <= 256 else np.int32)
    colors = task.colors or default_palette(task.num_classes)
    mask_path, overlay_path = paths
    save_index_mask(mask_path, labels, colors)
    rgb = image if image.shape[2] == 3 else np.repeat(image[:, :, :1], 3, axis=2)
    Image.fromarray(overlay(rgb, labels, colors, alpha=task.overlay_alpha)).save(overlay_path)
    return paths
