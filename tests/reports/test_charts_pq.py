"""The per-class PQ chart: things and stuff panels, sorted bars, NaN and absent classes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from pixelseg.errors import InvalidInputError
from pixelseg.reports import pq_per_class_chart
from pixelseg.reports.charts import pq_per_class_figure

CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 3, "name": "car", "isthing": 1},
    {"id": 4, "name": "bike", "isthing": 1},
    {"id": 184, "name": "grass", "isthing": 0},
    {"id": 190, "name": "sky", "isthing": 0},
]
PER_CLASS = {
    1: {"pq": 0.4, "sq": 0.8, "rq": 0.5},
    3: {"pq": 0.7, "sq": 0.9, "rq": 0.78},
    4: {"pq": math.nan},
    184: {"pq": 0.55},
}  # sky (190) is absent


def read_png(path):
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.load()
        return img.size, np.asarray(img.convert("RGB"))


def tick_names(ax):
    return [t.get_text() for t in ax.get_yticklabels()]


def test_chart_written_with_two_panels(tmp_path):
    path = pq_per_class_chart(PER_CLASS, CATEGORIES, tmp_path / "sub" / "pq.png")
    size, pixels = read_png(path)
    assert size[0] == 1200 and pixels.std() > 0  # two 6-inch panels at 100 dpi


def test_sorted_within_group_and_nan_or_absent_shown_as_na():
    fig = pq_per_class_figure(PER_CLASS, CATEGORIES)
    things, stuff = fig.axes
    assert tick_names(things) == ["car", "person", "bike"]
    assert tick_names(stuff) == ["grass", "sky"]
    widths = [bar.get_width() for bar in things.patches]
    assert widths == pytest.approx([0.7, 0.4, 0.0])
    assert [t.get_text() for t in things.texts] == ["0.700", "0.400", "n/a"]
    assert [t.get_text() for t in stuff.texts] == ["0.550", "n/a"]
    assert "2/3 classes" in things.get_title() and "mean 0.550" in things.get_title()


@pytest.mark.parametrize("isthing", [0, 1])
def test_only_things_or_only_stuff(tmp_path, isthing):
    cats = [c for c in CATEGORIES if c["isthing"] == isthing]
    scores = {k: v for k, v in PER_CLASS.items() if k in {c["id"] for c in cats}}
    size, _ = read_png(pq_per_class_chart(scores, cats, tmp_path / "one.png"))
    assert size[0] == 600
    assert len(pq_per_class_figure(scores, cats).axes) == 1


def test_all_nan_and_json_string_keys(tmp_path):
    scores = {str(k): {"pq": math.nan} for k in (1, 3)}  # keys as metrics.json has them
    fig = pq_per_class_figure(scores, CATEGORIES)
    assert "n/a, 0/3 classes" in fig.axes[0].get_title()
    read_png(pq_per_class_chart(scores, CATEGORIES, tmp_path / "nan.png"))


def test_bad_input_names_the_value(tmp_path):
    with pytest.raises(InvalidInputError, match=r"category ids \[99\]"):
        pq_per_class_chart({99: {"pq": 0.5}}, CATEGORIES, tmp_path / "x.png")
    with pytest.raises(InvalidInputError, match="categories is empty"):
        pq_per_class_chart({}, [], tmp_path / "x.png")
