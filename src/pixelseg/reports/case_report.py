"""Summaries of per-case volumetric metrics: statistics per metric and a Dice grade per case.

The rows are what :func:`pixelseg.metrics.surface_metrics` returns per case (``dice``,
``iou``, ..., ``hd95`` and ``assd`` in mm). Charts of them are in
:mod:`pixelseg.reports.case_charts`, slice montages in :mod:`pixelseg.reports.case_montage`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from pixelseg.errors import InvalidInputError

__all__ = ["GRADES", "GRADE_LOWER_BOUNDS", "grade", "metric_values", "summary_statistics"]

GRADES = ("Poor", "Fair", "Good", "Excellent")
"""The Dice grades, worst first."""

GRADE_LOWER_BOUNDS = (0.0, 0.5, 0.7, 0.85)
"""The smallest Dice of each grade in :data:`GRADES`: Poor < 0.5 <= Fair < 0.7 <= Good < 0.85
<= Excellent."""


def grade(dice: float) -> str:
    """The grade of a case's Dice in [0, 1]: ``"Poor"`` below 0.5, ``"Fair"`` from 0.5,
    ``"Good"`` from 0.7, ``"Excellent"`` from 0.85 (each bound belongs to the better grade)."""
    value = float(dice)
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise InvalidInputError(f"dice must be a number in [0, 1] to grade, got {dice!r}")
    index = int(np.searchsorted(GRADE_LOWER_BOUNDS, value, side="right")) - 1
    return GRADES[index]


def metric_values(rows: Sequence[Mapping[str, float]], name: str) -> np.ndarray:
    """The values of metric ``name`` over ``rows`` as float64; a row without it gives NaN."""
    return np.array([float(row.get(name, math.nan)) for row in rows], dtype=np.float64)


def summary_statistics(
    rows: Sequence[Mapping[str, float]], metric_names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Statistics of each metric over the cases.

    Args:
        rows: one mapping per case, e.g. :func:`~pixelseg.metrics.surface_metrics` results
            (other keys, such as a case name, are ignored).
        metric_names: the metrics to summarise, e.g. ``SURFACE_METRIC_NAMES``.

    Returns:
        ``{metric: {"mean", "std", "median", "min", "max", "count", "infinite"}}``:

        - ``mean``, ``std`` and ``median`` are over the finite values only. ``std`` is the
          population standard deviation (``ddof=0``, numpy's default): the spread of these
          cases, not an estimate for unseen ones; 0 for a single case.
        - ``count`` is the number of cases with a finite value, ``infinite`` the number with
          +-inf (HD95 or ASSD of a case where exactly one of prediction and target is
          empty: a lesion missed entirely, or one predicted where there is none).
        - ``min`` and ``max`` are over finite and infinite values, so ``max`` is ``inf``
          whenever any case is: a mean over the finite cases alone would hide a missed case.
          Beware that JSON has no infinity: :func:`~pixelseg.reports.write_metrics_json`
          writes it as ``null``, and ``infinite`` is what still tells.
        - NaN values, and rows without the metric, are left out of everything. A metric with
          no finite value has NaN ``mean``, ``std`` and ``median`` (and NaN ``min``/``max``
          unless some values are infinite).
    """
    out: dict[str, dict[str, float]] = {}
    for name in metric_names:
        values = metric_values(rows, name)
        values = values[~np.isnan(values)]
        finite = values[np.isfinite(values)]
        stats = {
            "mean": float(finite.mean()) if finite.size else math.nan,
            "std": float(finite.std(ddof=0)) if finite.size else math.nan,
            "median": float(np.median(finite)) if finite.size else math.nan,
            "min": float(values.min()) if values.size else math.nan,
            "max": float(values.max()) if values.size else math.nan,
            "count": int(finite.size),
            "infinite": int(values.size - finite.size),
        }
        out[str(name)] = stats
    return out
