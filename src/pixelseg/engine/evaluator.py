"""Evaluation with a report: metrics JSON, per-image CSV, charts and a worst-case gallery.

Images are segmented one at a time through the :class:`~pixelseg.inference.Segmenter`, so
evaluation sees exactly what ``predict`` would produce (tiling and TTA included), and images
of different sizes need no padding to batch. Metrics stream; only the worst ``k`` samples
are kept in memory for the gallery.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from pixelseg.inference.segmenter import Segmenter
from pixelseg.reports import (
    WorstK,
    plot_class_iou,
    plot_confusion_matrix,
    plot_score_distributions,
    worst_cases_gallery,
    write_metrics_json,
    write_per_image_csv,
)
from pixelseg.tasks.semantic import SemanticTask

__all__ = ["evaluate", "keyed_by_class"]

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


@torch.inference_mode()
def evaluate(
    segmenter: Segmenter,
    dataset: Dataset,
    task: SemanticTask,
    out_dir: str | Path,
    *,
    gallery_size: int = 8,
    per_image: bool = True,
) -> dict[str, Any]:
    """Segment every sample of ``dataset``, write the report into ``out_dir``, return metrics.

    Samples are the datasets' dicts (``image`` normalised ``[C, H, W]``, ``mask [H, W]``,
    ``name``). The per-image score ranking the gallery is the mean IoU over present classes.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = task.new_metrics()
    worst = WorstK(gallery_size) if gallery_size > 0 else None
    rows: list[dict[str, Any]] = []
    for index in range(len(dataset)):  # type: ignore[arg-type]
        sample = dataset[index]
        image = sample["image"].unsqueeze(0).to(segmenter.device)
        target = sample["mask"].unsqueeze(0).to(segmenter.device)
        prediction = task.predict(segmenter.logits(image))
        metrics.update(prediction, target)
        scores = task.per_image_scores(prediction, target)[0]
        name = sample.get("name", str(index))
        rows.append({"name": name, **scores})
        if worst is not None and worst.would_keep(scores["iou"]):
            worst.add(
                scores["iou"],
                {
                    "image": task.denormalize(sample["image"], segmenter.mean, segmenter.std),
                    "target": sample["mask"].numpy(),
                    "prediction": prediction[0].cpu().numpy(),
                    "name": name,
                    "score": scores["iou"],
                },
            )
    result = keyed_by_class(task.compute_metrics(metrics), task.class_names)
    result["num_images"] = len(rows)
    write_metrics_json(result, out_dir / REPORT_FILES["metrics"])
    _write_report(out_dir, metrics, result, rows, worst, segmenter, task, per_image)
    return result


def _write_report(out_dir, metrics, result, rows, worst, segmenter, task, per_image) -> None:
    classes = task.class_names
    iou = [result["iou"][name] for name in classes] if isinstance(result["iou"], dict) else []
    plot_class_iou(iou, classes, result["miou"], out_dir / REPORT_FILES["class_iou"])
    matrix = metrics.matrix.cpu().numpy()[: len(classes), : len(classes)]
    plot_confusion_matrix(matrix, classes, out_dir / REPORT_FILES["confusion"])
    if per_image and rows:
        write_per_image_csv(rows, out_dir / REPORT_FILES["per_image"])
        plot_score_distributions(
            {"dice": [r["dice"] for r in rows], "iou": [r["iou"] for r in rows]},
            out_dir / REPORT_FILES["distributions"],
        )
    if worst is not None and len(worst):
        samples = [sample for _, sample in worst.items()]
        worst_cases_gallery(
            samples,
            segmenter.colors,
            out_dir / REPORT_FILES["gallery"],
            k=len(samples),
            ignore_index=task.ignore_index,
            class_names=classes,
        )
    log.info("report written to %s", out_dir)
