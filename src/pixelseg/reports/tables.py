"""Evaluation tables on disk: per-image scores as CSV, aggregate metrics as JSON.

JSON has no NaN or infinity, so undefined metrics (a class never seen) are written as
``null``; floats are rounded to a fixed number of significant digits so files diff cleanly
between runs and do not carry float noise (``0.30000000000000004``).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pixelseg.errors import InvalidInputError

__all__ = ["round_significant", "to_jsonable", "write_metrics_json", "write_per_image_csv"]


def round_significant(value: float, digits: int = 6) -> float:
    """Round to ``digits`` significant digits (``0.123456789 -> 0.123457``, ``1e-9`` kept)."""
    if not math.isfinite(value) or value == 0.0:
        return value
    return float(f"{value:.{digits}g}")


def to_jsonable(value: Any, digits: int = 6) -> Any:
    """Recursively convert metrics to plain JSON types.

    NaN and +-inf become ``None``; numpy/torch scalars and arrays become numbers and lists;
    mapping keys become strings; floats are rounded by :func:`round_significant`.
    """
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, digits) for k, v in value.items()}
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor, without importing torch
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist(), digits)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return round_significant(value, digits) if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, digits) for v in value]
    if isinstance(value, Path):
        return str(value)
    raise InvalidInputError(
        f"cannot write a value of type {type(value).__name__} ({value!r}) to metrics JSON; "
        f"use numbers, strings, lists, dicts, numpy arrays or tensors"
    )


def write_metrics_json(metrics: Mapping[str, Any], path: str | Path, digits: int = 6) -> Path:
    """Write ``metrics`` as indented JSON with sorted keys, NaN as ``null``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(to_jsonable(metrics, digits), indent=2, sort_keys=True, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _cell(value: Any, digits: int) -> Any:
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float):
        return "" if math.isnan(value) else round_significant(value, digits)
    return value


def write_per_image_csv(
    rows: Sequence[Mapping[str, Any]], path: str | Path, digits: int = 6
) -> Path:
    """Write one CSV row per image; returns the path.

    Columns are the union of the rows' keys in first-seen order (put ``name`` first in the
    first row to make it the first column). NaN and missing values are empty cells (read back
    as NaN by pandas); floats keep ``digits`` significant digits.
    """
    if not rows:
        raise InvalidInputError("no rows to write: per-image CSV needs at least one image")
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(str(k) for k in row))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({str(k): _cell(v, digits) for k, v in row.items()})
    return path
