"""What instance segmentation writes: the evaluation report and ``predict``'s files.

Report: ``metrics.json`` (the 24 COCO stats, per-class AP and AP50), ``per_image.csv``
(objects, found, missed, false per image), ``pr_curves.png`` (mask precision against recall
at IoU 0.5 and 0.75, per class and their mean) and ``worst_cases.png`` (the images with the
most missed plus false objects: ground truth | prediction). Prediction: an overlay per
image (instance colours, boxes, class and score), ``<name>_results.json`` with that image's
COCO results, and after the last image ``results.json`` + ``images.json``: every result
with ``image_id`` = the input's position + 1, and the file each id names.

Drawing uses torchvision's ``draw_segmentation_masks`` and ``draw_bounding_boxes``.
"""

from __future__ import annotations

import colorsys
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from pixelseg.metrics.coco_match import IOU_THRESHOLDS, RECALL_THRESHOLDS
from pixelseg.metrics.coco_stream import detections_to_coco_results
from pixelseg.reports import write_metrics_json, write_per_image_csv
from pixelseg.reports.charts import new_figure, save_figure

__all__ = [
    "REPORT_FILES",
    "draw_instances",
    "instance_colors",
    "merge_results",
    "write_instance_report",
    "write_overlay_and_results",
]

log = logging.getLogger(__name__)

REPORT_FILES = {
    "metrics": "metrics.json",
    "per_image": "per_image.csv",
    "pr_curves": "pr_curves.png",
    "gallery": "worst_cases.png",
}


def instance_colors(count: int) -> list[tuple[int, int, int]]:
    """``count`` saturated colours, neighbours far apart in hue (golden-angle steps)."""
    colors = []
    for i in range(count):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.85, 1.0)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return colors


def draw_instances(
    image: np.ndarray,
    masks: np.ndarray,
    boxes: np.ndarray,
    labels: Sequence[int],
    class_names: Sequence[str],
    scores: Sequence[float] | None = None,
    alpha: float = 0.5,
) -> np.ndarray:
    """``image`` uint8 ``[H, W, 3]`` with each instance's mask in its own colour, its box,
    and ``class score`` above the box; returns a new uint8 ``[H, W, 3]``."""
    canvas = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)  # a copy
    count = len(labels)
    if count == 0:
        return image.copy()
    colors = instance_colors(count)
    canvas = draw_segmentation_masks(
        canvas, torch.as_tensor(np.asarray(masks, dtype=bool)), alpha=alpha, colors=colors
    )
    names = [
        class_names[int(label) - 1] if 0 < int(label) <= len(class_names) else str(int(label))
        for label in labels
    ]
    if scores is not None:
        names = [f"{n} {float(s):.2f}" for n, s in zip(names, scores, strict=True)]
    canvas = draw_bounding_boxes(
        canvas, torch.as_tensor(np.asarray(boxes, dtype=np.float32)), labels=names, colors=colors
    )
    return canvas.permute(1, 2, 0).numpy()


# ---------------------------------------------------------------------- the report
def write_instance_report(
    task: Any,
    out_dir: Path,
    metrics: dict[str, Any],
    accumulator: Any,
    rows: list[dict[str, Any]],
    worst: list[dict[str, Any]],
) -> dict[str, Any]:
    """Write every report file into ``out_dir``; returns the metrics as written."""
    write_metrics_json(metrics, out_dir / REPORT_FILES["metrics"])
    precision = accumulator.accumulated()["segm"]["precision"]
    plot_pr_curves(precision, task.class_names, out_dir / REPORT_FILES["pr_curves"])
    if rows:
        table = [{k: v for k, v in row.items() if k != "score"} for row in rows]
        write_per_image_csv(table, out_dir / REPORT_FILES["per_image"])
    if worst:
        plot_worst_cases(worst, task.class_names, out_dir / REPORT_FILES["gallery"])
    log.info("report written to %s", out_dir)
    return metrics


def plot_pr_curves(precision: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    """Mask precision at COCO's 101 recall points, IoU 0.5 and 0.75 (area all, 100 dets):
    one line per class with ground truth, and their mean in black."""
    fig = new_figure(10, 4.2)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, iou in zip(axes, (0.5, 0.75), strict=True):
        t = int(np.argmin(np.abs(IOU_THRESHOLDS - iou)))
        curves = precision[t, :, :, 0, -1]  # [R, K]
        valid = [k for k in range(curves.shape[1]) if (curves[:, k] > -1).all()]
        for k in valid:
            ax.plot(RECALL_THRESHOLDS, curves[:, k], lw=1.2, label=class_names[k])
        if valid:
            mean = curves[:, valid].mean(axis=1)
            ax.plot(
                RECALL_THRESHOLDS, mean, color="black", lw=2.2, label=f"mean (AP {mean.mean():.3f})"
            )
        ax.set(title=f"mask IoU {iou}", xlabel="recall", xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        if len(valid) <= 12:
            ax.legend(loc="lower left", fontsize=8)
    axes[0].set_ylabel("precision")
    return save_figure(fig, path)


def plot_worst_cases(worst: list[dict[str, Any]], class_names: Sequence[str], path: Path) -> Path:
    """Ground truth | prediction for each of the worst images, worst first."""
    fig = new_figure(8, 3.6 * len(worst))
    axes = np.atleast_2d(fig.subplots(len(worst), 2))
    for row, item in zip(axes, worst, strict=True):
        target, pred = item["target"], item["prediction"]
        truth = draw_instances(
            item["image"], target["masks"], target["boxes"], target["labels"], class_names
        )
        guess = draw_instances(
            item["image"], pred["masks"], pred["boxes"], pred["labels"], class_names, pred["scores"]
        )
        errors = int(-item["score"])
        for ax, picture, title in (
            (row[0], truth, f"{item['name']}: ground truth ({len(target['labels'])})"),
            (row[1], guess, f"prediction ({len(pred['labels'])}), {errors} missed + false"),
        ):
            ax.imshow(picture)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    return save_figure(fig, path)


# ---------------------------------------------------------------------- predict's files
def write_overlay_and_results(
    task: Any, paths: list[Path], image: np.ndarray, prediction: dict[str, torch.Tensor]
) -> list[Path]:
    """One image's overlay (detections at or above the task's score threshold) and its
    COCO results (every detection the model returned, as COCO AP wants them)."""
    overlay_path, results_path = paths
    shown = task.shown(prediction)
    picture = draw_instances(
        image,
        (shown["masks"][:, 0] > 0.5).cpu().numpy(),
        shown["boxes"].cpu().numpy(),
        shown["labels"].cpu().tolist(),
        task.class_names,
        shown["scores"].cpu().tolist(),
        alpha=task.overlay_alpha,
    )
    Image.fromarray(picture).save(overlay_path)
    mapping = {label: cid for label, cid in enumerate(task.category_ids, start=1)}
    results = detections_to_coco_results(0, prediction, mapping)
    for result in results:
        del result["image_id"]  # set by merge_results from the input's position
    record = {
        "file_name": overlay_path.name.removesuffix("_overlay.png"),
        "height": int(image.shape[0]),
        "width": int(image.shape[1]),
        "results": results,
    }
    results_path.write_text(json.dumps(record) + "\n")
    return paths


def merge_results(task: Any, out_dir: Path, names: Sequence[str]) -> list[Path]:
    """``results.json`` (COCO results of every input, ``image_id`` = position + 1) and
    ``images.json`` (``id``, ``file_name``, ``height``, ``width`` of each input)."""
    results: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    for image_id, name in enumerate(names, start=1):
        record = json.loads((out_dir / f"{name}_results.json").read_text())
        images.append(
            {
                "id": image_id,
                "file_name": name,
                "height": record["height"],
                "width": record["width"],
            }
        )
        results.extend({"image_id": image_id, **r} for r in record["results"])
    results_path, images_path = out_dir / "results.json", out_dir / "images.json"
    results_path.write_text(json.dumps(results) + "\n")
    images_path.write_text(json.dumps(images, indent=1) + "\n")
    return [results_path, images_path]
