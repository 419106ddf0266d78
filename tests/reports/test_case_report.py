"""The volumetric report's pieces: statistics, grades, per-case charts and slice montages."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from pixelseg.errors import InvalidInputError
from pixelseg.metrics import surface_metrics
from pixelseg.reports import (
    GRADES,
    grade,
    lesion_center,
    summary_statistics,
    write_case_charts,
    write_case_montage,
)
from pixelseg.reports.case_charts import CASE_CHART_NAMES, _boxplots_figure, _grades_figure
from pixelseg.reports.case_montage import case_montage_figure

INF, NAN = math.inf, math.nan
METRICS = ("dice", "iou", "precision", "recall", "volume_difference", "hd95", "assd", "nsd")


def read_png(path):
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.load()
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.std() > 0  # something was drawn
    return pixels


def make_rows(count, seed=0, inf_hd95=()):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        dice = float(rng.uniform(0.2, 1.0))
        hd95 = INF if i in inf_hd95 else float(rng.uniform(0.0, 30.0))
        rows.append({
            "case": f"case_{i}",
            "dice": dice,
            "iou": dice / (2.0 - dice),
            "precision": float(rng.uniform()),
            "recall": float(rng.uniform()),
            "volume_difference": float(rng.normal(0.0, 500.0)),
            "hd95": hd95,
            "assd": INF if i in inf_hd95 else hd95 / 3.0,
            "nsd": float(rng.uniform()),
        })  # fmt: skip
    return rows


# --- statistics -------------------------------------------------------------------------


def test_summary_statistics_by_hand():
    rows = [
        {"dice": 0.2, "hd95": 1.0},
        {"dice": 0.4, "hd95": 3.0},
        {"dice": 0.9, "hd95": INF},
        {"dice": NAN},  # no hd95 at all: left out like NaN
    ]
    stats = summary_statistics(rows, ["dice", "hd95"])
    dice = stats["dice"]
    assert dice["mean"] == pytest.approx(0.5)
    # population std (ddof=0): sqrt(((-0.3)^2 + (-0.1)^2 + 0.4^2) / 3)
    assert dice["std"] == pytest.approx(math.sqrt(0.26 / 3))
    assert dice["median"] == pytest.approx(0.4)
    assert (dice["min"], dice["max"]) == (0.2, 0.9)
    assert (dice["count"], dice["infinite"]) == (3, 0)
    hd95 = stats["hd95"]
    assert hd95["mean"] == pytest.approx(2.0)  # the finite ones
    assert hd95["std"] == pytest.approx(1.0)
    assert hd95["median"] == pytest.approx(2.0)
    assert hd95["min"] == 1.0
    assert hd95["max"] == INF  # a missed case shows
    assert (hd95["count"], hd95["infinite"]) == (2, 1)
    assert set(dice) == {"mean", "std", "median", "min", "max", "count", "infinite"}


def test_summary_statistics_without_finite_values():
    rows = [{"hd95": INF, "assd": NAN}, {"hd95": INF, "assd": NAN}]
    stats = summary_statistics(rows, ["hd95", "assd", "nsd"])
    assert stats["hd95"]["count"] == 0 and stats["hd95"]["infinite"] == 2
    assert stats["hd95"]["min"] == INF and stats["hd95"]["max"] == INF
    for key in ("mean", "std", "median"):
        assert math.isnan(stats["hd95"][key])
    for name in ("assd", "nsd"):  # all NaN, and absent
        assert stats[name]["count"] == 0 and stats[name]["infinite"] == 0
        assert all(math.isnan(stats[name][k]) for k in ("mean", "std", "median", "min", "max"))
    single = summary_statistics([{"dice": 0.7}], ["dice"])["dice"]
    assert single["std"] == 0.0 and single["mean"] == single["median"] == 0.7


def test_summary_statistics_of_surface_metrics():
    """Rows straight from surface_metrics, one case with the lesion missed."""
    target = np.zeros((6, 8, 8), dtype=bool)
    target[2:4, 2:6, 2:6] = True
    shifted = np.roll(target, 1, axis=2)
    rows = [
        surface_metrics(target, target, (2.0, 1.0, 1.0)),
        surface_metrics(shifted, target, (2.0, 1.0, 1.0)),
        surface_metrics(np.zeros_like(target), target, (2.0, 1.0, 1.0)),
    ]
    stats = summary_statistics(rows, METRICS)
    assert stats["dice"]["max"] == 1.0 and stats["dice"]["min"] == 0.0
    assert stats["hd95"]["infinite"] == 1 and stats["hd95"]["max"] == INF
    assert stats["hd95"]["count"] == 2 and math.isfinite(stats["hd95"]["mean"])
    assert stats["volume_difference"]["min"] == pytest.approx(-64.0)  # 32 voxels of 2 mm^3


# --- grades -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dice", "expected"),
    [
        (0.0, "Poor"),
        (0.4999, "Poor"),
        (0.5, "Fair"),
        (0.6999, "Fair"),
        (0.7, "Good"),
        (0.8499, "Good"),
        (0.85, "Excellent"),
        (1.0, "Excellent"),
    ],
)
def test_grade_boundaries(dice, expected):
    assert grade(dice) == expected


def test_grades_and_bad_dice():
    assert GRADES == ("Poor", "Fair", "Good", "Excellent")
    for bad in (NAN, -0.1, 1.5, INF):
        with pytest.raises(InvalidInputError, match="dice must be a number in"):
            grade(bad)


# --- charts -----------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 10])
def test_case_charts_written(tmp_path, count):
    paths = write_case_charts(make_rows(count, inf_hd95={3}), tmp_path)
    assert [p.name for p in paths] == [f"{n}.png" for n in CASE_CHART_NAMES]
    for path in paths:
        read_png(path)


def test_case_charts_all_infinite_distances_and_class_suffix(tmp_path):
    rows = make_rows(4, inf_hd95={0, 1, 2, 3})
    rows[1]["dice"] = NAN  # a case without a Dice is left out, not a crash
    paths = write_case_charts(rows, tmp_path, class_name="tumour core/2")
    assert [p.name for p in paths] == [f"{n}_tumour_core_2.png" for n in CASE_CHART_NAMES]
    for path in paths:
        read_png(path)
    fig = _boxplots_figure(rows, "t")
    assert "8 infinite left out" in fig.axes[1].get_title()
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == [
        "hd95\n(4 inf)",
        "assd\n(4 inf)",
    ]
    with pytest.raises(InvalidInputError, match="at least one row"):
        write_case_charts([], tmp_path)


def test_grade_pie_leaves_out_empty_grades_but_lists_them():
    rows = [{"dice": d} for d in (0.1, 0.5, 0.55, 0.9)]  # Poor 1, Fair 2, Good 0, Excellent 1
    fig = _grades_figure(rows, "grades")
    wedges = fig.axes[0].patches
    assert len(wedges) == 3
    assert sorted(w.theta2 - w.theta1 for w in wedges) == pytest.approx([90.0, 90.0, 180.0])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == [
        "Poor (0-0.5): 1 (25%)",
        "Fair (0.5-0.7): 2 (50%)",
        "Good (0.7-0.85): 0 (0%)",
        "Excellent (0.85-1): 1 (25%)",
    ]


# --- montage ----------------------------------------------------------------------------


def lesion_volumes(shape=(12, 20, 16)):
    rng = np.random.default_rng(1)
    target = np.zeros(shape, dtype=np.uint8)
    target[1:3, 1:3, 1:3] = 1  # small lesion, 8 voxels
    target[5:10, 8:15, 6:13] = 1  # large lesion, 245 voxels, centre (7, 11, 9)
    prediction = np.roll(target, 1, axis=1)
    image = rng.normal(size=shape).astype(np.float32) + 3.0 * target
    return image, target, prediction


def test_lesion_center_picks_the_largest_component():
    _, target, prediction = lesion_volumes()
    assert lesion_center(target, prediction) == (7, 11, 9)
    # Empty target: the prediction's largest lesion; both empty: the volume's centre.
    empty = np.zeros_like(target)
    assert lesion_center(empty, np.roll(target, 2, axis=0)) == (9, 11, 9)
    assert lesion_center(empty, empty) == (6, 10, 8)
    # A ring: its centre of mass is in the hole, so the nearest ring voxel is taken.
    ring = np.zeros((5, 11, 11), dtype=np.uint8)
    ring[2, 2:9, 2:9] = 1
    ring[2, 3:8, 3:8] = 0
    centre = lesion_center(ring, ring)
    assert ring[centre] == 1 and centre[0] == 2
    with pytest.raises(InvalidInputError, match=r"target \(11, 11\)"):
        lesion_center(ring[0], ring[0])


def test_montage_written_with_anisotropic_spacing(tmp_path):
    image, target, prediction = lesion_volumes()
    path = write_case_montage(
        image, target, prediction, (5.0, 0.7, 0.9), tmp_path / "sub" / "case.png", title="c"
    )
    pixels = read_png(path)
    # Green ground-truth and red prediction outlines were drawn.
    assert ((pixels[..., 1] > 150) & (pixels[..., 0] < 80) & (pixels[..., 2] < 80)).any()
    assert ((pixels[..., 0] > 200) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)).any()
    fig = case_montage_figure(image, target, prediction, (5.0, 0.7, 0.9))
    axial, coronal, sagittal = fig.axes[:3]
    # Axes in mm: the physical aspect ratio follows the spacing.
    assert axial.get_xlim() == pytest.approx((0.0, 16 * 0.9))
    assert axial.get_ylim() == pytest.approx((20 * 0.7, 0.0))  # H downwards
    assert coronal.get_ylim() == pytest.approx((0.0, 12 * 5.0))  # D upwards
    assert sagittal.get_xlim() == pytest.approx((0.0, 20 * 0.7))
    assert [ax.get_title() for ax in (axial, coronal, sagittal)] == [
        "axial: D = 7 of 12",
        "coronal: H = 11 of 20",
        "sagittal: W = 9 of 16",
    ]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["ground truth", "prediction"]


def test_montage_multiclass_and_empty(tmp_path):
    image, target, prediction = lesion_volumes()
    target[6:8, 9:11, 7:9] = 2
    names = ["background", "kidney", "tumour"]
    fig = case_montage_figure(image, target, prediction * 2, (1, 1, 1), class_names=names)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["kidney", "tumour", "ground truth (solid)", "prediction (dashed)"]
    empty = np.zeros_like(target)
    read_png(write_case_montage(image, empty, empty, (1, 1, 1), tmp_path / "empty.png"))
    with pytest.raises(InvalidInputError, match="label value 2 has no name"):
        case_montage_figure(image, target, prediction, (1, 1, 1), class_names=names[:2])


def test_montage_bad_inputs(tmp_path):
    image, target, prediction = lesion_volumes()
    with pytest.raises(InvalidInputError, match=r"image \(12, 20, 16\).*prediction \(12, 20, 15\)"):
        write_case_montage(image, target, prediction[..., :15], (1, 1, 1), tmp_path / "a.png")
    with pytest.raises(InvalidInputError, match=r"need 3D volumes.*image \(20, 16\)"):
        write_case_montage(image[0], target[0], prediction[0], (1, 1, 1), tmp_path / "b.png")
    with pytest.raises(InvalidInputError, match="spacing must be 3 positive"):
        write_case_montage(image, target, prediction, (1.0, 0.0, 1.0), tmp_path / "c.png")
    with pytest.raises(InvalidInputError, match="integer labels"):
        write_case_montage(image, image, prediction, (1, 1, 1), tmp_path / "d.png")
    assert not list(tmp_path.iterdir())
