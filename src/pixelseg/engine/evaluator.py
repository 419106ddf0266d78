"""Evaluation with a report, for any task: metrics, per-sample rows and the worst cases.

Samples go through the predictor one at a time (a checkpoint's model with the configured
tiling and TTA, or any ``Tensor -> output`` callable), so evaluation sees exactly what
``predict`` produces, and samples of different sizes need no padding. Metrics stream; only
the worst ``k`` samples are kept for the gallery. The task decides what a row, a gallery
item and the report files are.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from pixelseg.engine.device import move_to_device
from pixelseg.reports import WorstK
from pixelseg.tasks.base import Task

__all__ = ["evaluate"]


@torch.inference_mode()
def evaluate(
    predictor: Callable[..., Any],
    dataset: Dataset,
    task: Task,
    out_dir: str | Path,
    *,
    device: torch.device | str = "cpu",
    gallery_size: int = 8,
    per_image: bool = True,
) -> dict[str, Any]:
    """Score every sample of ``dataset``, write the task's report into ``out_dir`` and
    return the metrics as written (``num_images`` included).

    Rows are ranked by their ``score`` (lowest first) for the worst-cases gallery; with
    ``per_image=False`` the per-sample table is left out of the report.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = task.new_metrics()
    worst = WorstK(gallery_size) if gallery_size > 0 else None
    rows: list[dict[str, Any]] = []
    for index in range(len(dataset)):  # type: ignore[arg-type]
        for batch in task.collate_eval([dataset[index]]):
            batch = move_to_device(batch, torch.device(device))
            prediction = task.predict(task.forward_eval(predictor, batch))
            metrics.update(prediction, batch)
            for position, row in enumerate(task.sample_rows(prediction, batch)):
                rows.append(row)
                if worst is not None and worst.would_keep(row["score"]):
                    item = task.gallery_item(prediction, batch, position)
                    worst.add(row["score"], {**item, "name": row["name"], "score": row["score"]})
    gallery = [sample for _, sample in worst.items()] if worst is not None else []
    scores = {**metrics.compute(), "num_images": len(rows)}
    return task.write_report(out_dir, scores, metrics, rows if per_image else [], gallery)
