"""Worst-case gallery: the k lowest-scoring images with ground truth, prediction and errors.

:class:`WorstK` keeps the k worst samples while an evaluation streams through a dataset, in
memory bounded by k; :func:`worst_cases_gallery` draws them, one row per image:
image | ground truth | prediction | error map.

NaN scores (an image where the score is undefined, e.g. Dice with nothing in either mask)
rank *after* every finite score: they are not known failures, so they only fill the gallery
when there are fewer than k finite scores.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.patches import Patch

from pixelseg.errors import InvalidInputError
from pixelseg.inference.masks_io import IGNORE_COLOR, colorize
from pixelseg.reports.charts import new_figure, save_figure

__all__ = [
    "CORRECT_COLOR",
    "ERROR_COLOR",
    "WorstK",
    "error_map",
    "select_worst_samples",
    "worst_cases_gallery",
    "worst_k_indices",
]

ERROR_COLOR = (255, 0, 0)
CORRECT_COLOR = (0, 0, 0)


def _rank_key(score: float) -> tuple[int, float]:
    """Sort key putting low scores first and NaN last."""
    score = float(score)
    return (1, 0.0) if math.isnan(score) else (0, score)


def worst_k_indices(scores: Sequence[float], k: int) -> list[int]:
    """Indices of the ``k`` lowest scores, lowest first; NaN last; ties keep input order."""
    if k < 0:
        raise InvalidInputError(f"k must be >= 0, got {k}")
    order = sorted(range(len(scores)), key=lambda i: _rank_key(scores[i]))
    return order[:k]


def select_worst_samples(samples: Sequence[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The ``k`` samples with the lowest ``"score"`` (missing or NaN last), lowest first."""
    scores = [float(s.get("score", float("nan"))) for s in samples]
    return [samples[i] for i in worst_k_indices(scores, k)]


class WorstK:
    """Keep the ``k`` samples with the lowest scores seen so far (a bounded max-heap).

    ``add`` costs O(log k) and holds at most k samples; NaN ranks after finite scores and ties
    keep the earlier sample, matching :func:`worst_k_indices`. Call :meth:`would_keep` first
    to skip building (e.g. copying to CPU) a sample that would be thrown away.
    """

    def __init__(self, k: int) -> None:
        if k < 1:
            raise InvalidInputError(f"WorstK needs k >= 1, got {k}")
        self.k = k
        # Entries are (-nan_flag, -score, -arrival, sample): the heap top is the best kept.
        self._heap: list[tuple[int, float, int, Any]] = []
        self._arrivals = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def would_keep(self, score: float) -> bool:
        """Whether a sample with this score would enter the worst k right now."""
        if len(self._heap) < self.k:
            return True
        top = self._heap[0]
        # A newcomer ties lose to the earlier arrival, so strictly lower ranks only.
        return _rank_key(score) < (-top[0], -top[1])

    def add(self, score: float, sample: Any) -> bool:
        """Offer a sample; returns whether it was kept (possibly evicting the best kept one)."""
        if not self.would_keep(score):
            return False
        nan_flag, value = _rank_key(score)
        entry = (-nan_flag, -value, -next(self._arrivals), sample)
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, entry)
        else:
            heapq.heapreplace(self._heap, entry)
        return True

    def items(self) -> list[tuple[float, Any]]:
        """``(score, sample)`` pairs, lowest score first (NaN last, ties in arrival order)."""
        ordered = sorted(self._heap, key=lambda e: (-e[0], -e[1], -e[2]))
        return [(float("nan") if e[0] else -e[1], e[3]) for e in ordered]


def error_map(
    target: np.ndarray,
    prediction: np.ndarray,
    ignore_index: int | None = None,
) -> np.ndarray:
    """Where the prediction is wrong: ``[H, W, 3]`` uint8.

    Wrong pixels are red :data:`ERROR_COLOR`, pixels whose target is ``ignore_index`` grey
    :data:`~pixelseg.inference.masks_io.IGNORE_COLOR` (whatever was predicted), correct ones
    black :data:`CORRECT_COLOR`.
    """
    target = np.asarray(target)
    prediction = np.asarray(prediction)
    if target.ndim != 2 or target.shape != prediction.shape:
        raise InvalidInputError(
            f"target and prediction must be [H, W] of the same shape, "
            f"got {target.shape} and {prediction.shape}"
        )
    out = np.zeros((*target.shape, 3), dtype=np.uint8)
    out[:] = CORRECT_COLOR
    out[target != prediction] = ERROR_COLOR
    if ignore_index is not None:
        out[target == ignore_index] = IGNORE_COLOR
    return out


def _check_sample(sample: dict[str, Any], position: int) -> dict[str, Any]:
    missing = {"image", "target", "prediction"} - set(sample)
    if missing:
        raise InvalidInputError(
            f"gallery sample {position} lacks keys {sorted(missing)}; each sample needs image, "
            f"target, prediction, and optionally name and score"
        )
    image = np.asarray(sample["image"])
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    target, prediction = np.asarray(sample["target"]), np.asarray(sample["prediction"])
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != target.shape:
        raise InvalidInputError(
            f"gallery sample {position} ({sample.get('name', '?')}): image {image.shape} must be "
            f"[H, W, 3] matching target {target.shape}"
        )
    return {**sample, "image": image, "target": target, "prediction": prediction}


def worst_cases_gallery(
    samples: Sequence[dict[str, Any]],
    palette: Sequence[Sequence[int]] | None,
    path: str | Path,
    k: int = 8,
    ignore_index: int | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Draw the ``k`` lowest-scoring samples as rows: image | ground truth | prediction | errors.

    ``samples``: dicts with ``image`` ``[H, W, 3]`` uint8, ``target`` and ``prediction``
    ``[H, W]`` class indices, ``name`` (str) and ``score`` (float; NaN ranks last). Ignored
    target pixels are grey in the ground truth and error map. With ``class_names`` a legend
    names the colours of the classes shown. Returns ``path``.
    """
    if not samples:
        raise InvalidInputError("no samples to draw in the worst-cases gallery")
    chosen = [_check_sample(s, i) for i, s in enumerate(select_worst_samples(samples, k))]
    if not chosen:
        raise InvalidInputError(f"k must be >= 1 to draw a gallery, got {k}")
    height, width = chosen[0]["target"].shape
    panel = 3.0
    fig = new_figure(4 * panel, len(chosen) * panel * min(max(height / width, 0.4), 2.5) + 0.6)
    axes = fig.subplots(len(chosen), 4, squeeze=False)
    shown: set[int] = set()
    for row, sample in zip(axes, chosen, strict=True):
        target, prediction = sample["target"], sample["prediction"]
        panels = [
            sample["image"],
            colorize(target, palette, ignore_index=ignore_index),
            colorize(prediction, palette, ignore_index=ignore_index),
            error_map(target, prediction, ignore_index),
        ]
        for ax, picture, label in zip(
            row, panels, ("image", "ground truth", "prediction", "errors"), strict=True
        ):
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(label, fontsize=8)
        score = float(sample.get("score", float("nan")))
        row[0].set_title(f"{sample.get('name', '?')}   score {score:.4f}", loc="left", fontsize=9)
        for labels in (target, prediction):
            values = np.unique(labels)
            shown.update(int(v) for v in values if v != ignore_index)
    if class_names is not None:
        colors = np.asarray(palette) if palette is not None else None
        handles = []
        for cls in sorted(shown):
            if cls < len(class_names):
                rgb = colorize(np.array([[cls]]), colors)[0, 0] / 255.0
                handles.append(Patch(color=tuple(rgb), label=str(class_names[cls])))
        handles.append(Patch(color=tuple(c / 255 for c in ERROR_COLOR), label="error"))
        if ignore_index is not None:
            handles.append(Patch(color=tuple(c / 255 for c in IGNORE_COLOR), label="ignored"))
        fig.legend(
            handles=handles, loc="outside lower center", ncols=min(len(handles), 8), fontsize=8
        )
    return save_figure(fig, path)
