"""What panoptic segmentation writes: the evaluation report and ``predict``'s files.

Report: ``metrics.json`` (PQ, SQ, RQ for All, Things and Stuff with the number of
categories each averages, and per class: scores, TP, FP, FN), ``per_image.csv``,
``pq_per_class.png`` (per-class PQ, things and stuff apart) and ``worst_cases.png`` (the
images of lowest PQ: ground truth | prediction). Prediction, per input: ``panoptic/<name>.png``
(the COCO panoptic PNG, id = R + 256 G + 256^2 B), ``<name>_overlay.png`` (things in their
own colours, stuff in its category's, boundaries drawn) and ``<name>_segments.json``; after
the last input ``panoptic.json``, the COCO panoptic JSON of them all (``image_id`` = the
input's position + 1), which :func:`pixelseg.metrics.panoptic_quality` and panopticapi
read with the ``panoptic/`` folder beside it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pixelseg.data.coco_panoptic import id_to_rgb
from pixelseg.reports import write_metrics_json, write_per_image_csv
from pixelseg.reports.charts import new_figure, pq_per_class_chart, save_figure
from pixelseg.reports.panoptic_overlay import render_panoptic

__all__ = [
    "REPORT_FILES",
    "merge_panoptic_json",
    "prediction_paths",
    "write_panoptic_prediction",
    "write_panoptic_report",
]

log = logging.getLogger(__name__)

REPORT_FILES = {
    "metrics": "metrics.json",
    "per_image": "per_image.csv",
    "per_class": "pq_per_class.png",
    "gallery": "worst_cases.png",
}
PNG_FOLDER = "panoptic"
JSON_NAME = "panoptic.json"


# ---------------------------------------------------------------------- the report
def write_panoptic_report(
    task: Any,
    out_dir: Path,
    metrics: dict[str, Any],
    accumulator: Any,
    rows: list[dict[str, Any]],
    worst: list[dict[str, Any]],
) -> dict[str, Any]:
    """Write every report file into ``out_dir``; returns the metrics as written."""
    write_metrics_json(metrics, out_dir / REPORT_FILES["metrics"])
    pq_per_class_chart(
        accumulator.per_class(), task.categories, out_dir / REPORT_FILES["per_class"]
    )
    if rows:
        table = [{k: v for k, v in row.items() if k != "score"} for row in rows]
        write_per_image_csv(table, out_dir / REPORT_FILES["per_image"])
    if worst:
        plot_worst_cases(worst, task.categories, out_dir / REPORT_FILES["gallery"])
    log.info("report written to %s", out_dir)
    return metrics


def plot_worst_cases(
    worst: list[dict[str, Any]], categories: Sequence[dict[str, Any]], path: Path
) -> Path:
    """Ground truth | prediction for each of the worst images, lowest PQ first."""
    fig = new_figure(8, 3.6 * len(worst))
    axes = np.atleast_2d(fig.subplots(len(worst), 2))
    for row, item in zip(axes, worst, strict=True):
        target, pred = item["target"], item["prediction"]
        for ax, part, title in (
            (row[0], target, f"{item['name']}: ground truth ({len(target['segments_info'])})"),
            (row[1], pred, f"prediction ({len(pred['segments_info'])}), PQ {item['score']:.3f}"),
        ):
            ax.imshow(
                render_panoptic(item["image"], part["ids"], part["segments_info"], categories)
            )
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    return save_figure(fig, path)


# ---------------------------------------------------------------------- predict's files
def prediction_paths(out_dir: Path, name: str) -> list[Path]:
    """The PNG, the picture and the per-image segments of input ``name``."""
    return [
        out_dir / PNG_FOLDER / f"{name}.png",
        out_dir / f"{name}_overlay.png",
        out_dir / f"{name}_segments.json",
    ]


def _jsonable_segments(segments: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """COCO panoptic ``segments_info`` (``iscrowd`` 0; ``score`` kept, as detectron2 does)."""
    keep = ("id", "category_id", "isthing", "score", "area")
    out = []
    for segment in segments:
        entry = {k: segment[k] for k in keep if k in segment}
        entry["isthing"] = int(bool(entry.get("isthing", 0)))
        entry["iscrowd"] = 0
        out.append(entry)
    return out


def write_panoptic_prediction(
    task: Any, out_dir: Path, name: str, image: np.ndarray, prediction: dict[str, Any]
) -> list[Path]:
    """One input's panoptic PNG, picture and segments."""
    png_path, overlay_path, segments_path = prediction_paths(out_dir, name)
    ids = prediction["ids"]
    ids = ids.detach().cpu().numpy() if hasattr(ids, "detach") else np.asarray(ids)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    _save_png(id_to_rgb(ids), png_path)
    picture = render_panoptic(
        image, ids, prediction["segments_info"], task.categories, alpha=task.overlay_alpha
    )
    _save_png(picture, overlay_path)
    record = {
        "file_name": png_path.name,
        "height": int(ids.shape[0]),
        "width": int(ids.shape[1]),
        "segments_info": _jsonable_segments(prediction["segments_info"]),
    }
    _write_text(segments_path, json.dumps(record) + "\n")
    return [png_path, overlay_path, segments_path]


def merge_panoptic_json(task: Any, out_dir: Path, names: Sequence[str]) -> list[Path]:
    """``panoptic.json``: ``images`` (``id`` = position + 1, ``file_name`` = the input's
    output name), ``annotations`` (``image_id``, PNG ``file_name``, ``segments_info``) and
    ``categories``; the PNGs are in ``panoptic/`` beside it."""
    images, annotations = [], []
    for image_id, name in enumerate(names, start=1):
        record = json.loads((out_dir / f"{name}_segments.json").read_text())
        images.append(
            {
                "id": image_id,
                "file_name": name,
                "height": record["height"],
                "width": record["width"],
            }
        )
        annotations.append(
            {
                "image_id": image_id,
                "file_name": record["file_name"],
                "segments_info": record["segments_info"],
            }
        )
    doc = {"images": images, "annotations": annotations, "categories": task.categories}
    path = out_dir / JSON_NAME
    _write_text(path, json.dumps(doc) + "\n")
    return [path]


def _save_png(array: np.ndarray, path: Path) -> None:
    """Write through a temporary file and rename, so no half-written PNG is left."""
    tmp = path.with_name(f".{path.name}.partial")
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(tmp, format="PNG")
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text)
    os.replace(tmp, path)
