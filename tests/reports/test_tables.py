"""Metric JSON (NaN -> null, sorted, rounded) and per-image CSV."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from pixelseg.errors import InvalidInputError
from pixelseg.reports import to_jsonable, write_metrics_json, write_per_image_csv
from pixelseg.reports.tables import round_significant


def test_round_significant():
    assert round_significant(0.123456789) == 0.123457
    assert round_significant(1.23456789e-9) == 1.23457e-9
    assert round_significant(0.1 + 0.2) == 0.3
    assert round_significant(123456789.0) == 123457000.0
    assert round_significant(0.0) == 0.0


def test_metrics_json_nan_null_sorted_rounded(tmp_path):
    metrics = {
        "miou": 0.30000000000000004,
        "iou": [0.5, float("nan"), np.float32(0.25)],
        "per_class": {"road": np.float64(0.912345678), "pole": float("nan")},
        "confusion": np.array([[3, 1], [0, 2]]),
        "tensor": torch.tensor([0.5, float("inf")]),
        "count": np.int64(7),
        "ok": True,
        3: "int key",
    }
    path = write_metrics_json(metrics, tmp_path / "out" / "metrics.json")
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    assert data["miou"] == 0.3
    assert data["iou"] == [0.5, None, 0.25]
    assert data["per_class"] == {"pole": None, "road": 0.912346}
    assert data["confusion"] == [[3, 1], [0, 2]]
    assert data["tensor"] == [0.5, None]
    assert data["count"] == 7 and isinstance(data["count"], int)
    assert data["ok"] is True
    assert data["3"] == "int key"
    assert list(data) == sorted(data)
    assert text.index('"pole"') < text.index('"road"')  # nested keys sorted too


def test_to_jsonable_rejects_unknown_types():
    with pytest.raises(InvalidInputError, match="object"):
        to_jsonable({"x": object()})


def test_per_image_csv(tmp_path):
    rows = [
        {"name": "a.png", "dice": 0.123456789, "iou": float("nan")},
        {"name": "b.png", "dice": np.float32(1.0), "iou": 0.5, "pixel_accuracy": 0.75},
    ]
    path = write_per_image_csv(rows, tmp_path / "per_image.csv")
    with path.open(newline="") as handle:
        read = list(csv.DictReader(handle))
    assert list(read[0]) == ["name", "dice", "iou", "pixel_accuracy"]
    assert read[0] == {"name": "a.png", "dice": "0.123457", "iou": "", "pixel_accuracy": ""}
    assert read[1] == {"name": "b.png", "dice": "1.0", "iou": "0.5", "pixel_accuracy": "0.75"}
    with pytest.raises(InvalidInputError, match="no rows"):
        write_per_image_csv([], tmp_path / "empty.csv")
