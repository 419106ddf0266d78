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
from pixelseg.engine.distributed import DistContext
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
    dist: DistContext | None = None,
) -> dict[str, Any]:
    """Score every sample of ``dataset``, write the task's report into ``out_dir`` and
    return the metrics as written (``num_images`` included).

    Rows are ranked by their ``score`` (lowest first) for the worst-cases gallery; with
    ``per_image=False`` the per-sample table is left out of the report. With several
    processes each scores every ``world_size``-th sample; the accumulators sync, rows and
    gallery candidates are gathered, and rank 0 writes the report.
    """
    dist = dist or DistContext()
    out_dir = Path(out_dir)
    metrics = task.new_metrics()
    worst = WorstK(gallery_size) if gallery_size > 0 else None
    rows: list[tuple[int, dict[str, Any]]] = []
    for index in range(dist.rank, len(dataset), dist.world_size):  # type: ignore[arg-type]
        for batch in task.collate_eval([dataset[index]]):
            batch = move_to_device(batch, torch.device(device))
            prediction = task.predict(task.forward_eval(predictor, batch))
            metrics.update(prediction, batch)
            for position, row in enumerate(task.sample_rows(prediction, batch)):
                rows.append((index, row))
                if worst is not None and worst.would_keep(row["score"]):
                    item = task.gallery_item(prediction, batch, position)
                    worst.add(row["score"], {**item, "name": row["name"], "score": row["score"]})
    metrics.sync(dist.group)
    rows = sorted((r for part in dist.gather_objects(rows) for r in part), key=lambda r: r[0])
    candidates = worst.items() if worst is not None else []
    gallery = _worst_of(dist.gather_objects(candidates), gallery_size)
    scores = {**metrics.compute(), "num_images": len(rows)}
    if not dist.is_main:
        return scores
    out_dir.mkdir(parents=True, exist_ok=True)
    table = [row for _, row in rows] if per_image else []
    return task.write_report(out_dir, scores, metrics, table, gallery)


def _worst_of(parts: list[list[tuple[float, dict[str, Any]]]], k: int) -> list[dict[str, Any]]:
    """The ``k`` worst of every process's candidates (each process kept its own worst k)."""
    if k <= 0:
        return []
    worst = WorstK(k)
    for score, item in (pair for part in parts for pair in part):
        if worst.would_keep(score):
            worst.add(score, item)
    return [item for _, item in worst.items()]
