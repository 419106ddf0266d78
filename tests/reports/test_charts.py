"""Charts write valid PNGs of the expected size; normalisation matches sklearn."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from PIL import Image
from sklearn.metrics import confusion_matrix

from pixelseg.errors import InvalidInputError
from pixelseg.reports import (
    normalize_confusion,
    plot_class_iou,
    plot_confusion_matrix,
    plot_score_distributions,
)
from pixelseg.reports.charts import (
    class_iou_figure,
    confusion_matrix_figure,
    score_distributions_figure,
)

CAMVID = [
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
]


def read_png(path):
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.load()
        return img.size, np.asarray(img.convert("RGB"))


def test_class_iou_with_nan_classes(tmp_path):
    iou = [0.9, float("nan"), 0.5, 0.25]
    path = plot_class_iou(iou, ["sky", "pole", "road", "car"], 0.55, tmp_path / "iou.png")
    size, pixels = read_png(path)
    assert size[0] == 700  # 7 inches at 100 dpi
    assert pixels.std() > 0  # something was drawn
    # mIoU may be omitted (NaN-ignoring mean) or entirely NaN; names default to indices.
    size2, _ = read_png(plot_class_iou([float("nan")] * 2, None, None, tmp_path / "nan.png"))
    assert size2[0] == 700
    with pytest.raises(InvalidInputError, match="3 class names for 4 classes"):
        plot_class_iou(iou, ["a", "b", "c"], None, tmp_path / "bad.png")


def _drawn(fig):
    """Draw ``fig`` and return a function giving an artist's box in display pixels."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return lambda artist: artist.get_window_extent(renderer)


@pytest.mark.parametrize("miou", [0.95, 0.609, 0.05, None])
def test_class_iou_legend_covers_no_value_label(miou):
    # The highest bar last: its label sat under the legend in the lower right corner.
    iou = [0.88, 0.74, 0.12, 0.91, 0.70, 0.69, 0.31, 0.28, 0.77, 0.35, 0.95]
    fig = class_iou_figure(iou, CAMVID, miou)
    box = _drawn(fig)
    (ax,) = fig.axes
    legends = [*fig.legends, *([ax.get_legend()] if ax.get_legend() else [])]
    assert len(legends) == 1
    legend = box(legends[0])
    labels = [t for t in ax.texts if t.get_text()]
    assert [t.get_text() for t in labels] == [f"{v:.3f}" for v in iou]
    for text in labels:
        assert not legend.overlaps(box(text)), text.get_text()
        assert fig.bbox.contains(*box(text).p1)  # the 1.000-wide label still fits
    assert fig.bbox.contains(*legend.p0) and fig.bbox.contains(*legend.p1)


def _inside(fig, bbox) -> bool:
    return (
        fig.bbox.x0 <= bbox.x0
        and bbox.x1 <= fig.bbox.x1
        and fig.bbox.y0 <= bbox.y0
        and (bbox.y1 <= fig.bbox.y1)
    )


def test_confusion_matrix_cuts_off_no_label():
    names = [*CAMVID[:6], "motorcycle_scooter", "traffic light (lit)", *CAMVID[8:]]
    matrix = np.random.default_rng(0).integers(0, 40, (11, 11)) + 300 * np.eye(11, dtype=int)
    fig = confusion_matrix_figure(matrix, names)
    box = _drawn(fig)
    ax = fig.axes[0]
    texts = [ax.xaxis.label, ax.yaxis.label, ax.title]
    texts += ax.get_xticklabels() + ax.get_yticklabels()
    for text in texts:
        assert _inside(fig, box(text)), text.get_text()


def test_score_distributions_legend_covers_no_panel_and_colours_agree():
    rng = np.random.default_rng(0)
    names = ["dice", "empty", "pixel_accuracy", "boundary_f1_score", "hausdorff_normalised"]
    scores = {n: rng.beta(1.5, 8, 60).tolist() for n in names}
    scores["empty"] = [float("nan")]
    fig = score_distributions_figure(scores)
    box = _drawn(fig)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()][1] == "empty (n=0, 1 NaN)"
    for ax in fig.axes:
        assert not box(legend).overlaps(box(ax))
    ax_hist, ax_cdf, ax_box = fig.axes
    ticks = [box(t) for t in ax_box.get_yticklabels()]
    assert all(not a.overlaps(b) for a, b in itertools.pairwise(ticks))
    # The histogram after the empty list keeps that score's colour (the CDF's and legend's).
    line_colors = [to_rgb(line.get_color()) for line in ax_cdf.get_lines()]
    hist_colors = [to_rgb(c[0].get_facecolor()) for c in ax_hist.containers]
    assert hist_colors == [line_colors[i] for i in (0, 2, 3, 4)]


def test_normalize_confusion_matches_sklearn():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, 500)
    y_pred = np.where(rng.random(500) < 0.6, y_true, rng.integers(0, 4, 500))
    counts = confusion_matrix(y_true, y_pred, labels=range(4))
    for mode in ("true", "pred", "all"):
        np.testing.assert_allclose(
            normalize_confusion(counts, mode),
            confusion_matrix(y_true, y_pred, labels=range(4), normalize=mode),
        )
    np.testing.assert_array_equal(normalize_confusion(counts, "none"), counts)
    # A class never in the ground truth has an undefined row, not a row of zeros.
    with_empty = np.array([[3, 1, 0], [0, 0, 0], [1, 1, 2]])
    rows = normalize_confusion(with_empty, "true")
    assert np.isnan(rows[1]).all()
    np.testing.assert_allclose(rows[0], [0.75, 0.25, 0.0])
    with pytest.raises(InvalidInputError, match="'row'"):
        normalize_confusion(counts, "row")


@pytest.mark.parametrize(("classes", "normalize"), [(3, "true"), (3, None), (30, "true")])
def test_confusion_matrix_png(tmp_path, classes, normalize):
    rng = np.random.default_rng(classes)
    matrix = rng.integers(0, 50, size=(classes, classes))
    matrix[1] = 0  # an empty ground-truth row
    names = [f"class{i}" for i in range(classes)]
    path = plot_confusion_matrix(matrix, names, tmp_path / f"cm{classes}.png", normalize=normalize)
    size, pixels = read_png(path)
    assert size[0] > size[1] > 300
    assert pixels.std() > 0


def test_confusion_matrix_rejects_bad_input(tmp_path):
    with pytest.raises(InvalidInputError, match="square"):
        plot_confusion_matrix(np.zeros((2, 3)), None, tmp_path / "x.png")
    with pytest.raises(InvalidInputError, match="non-negative"):
        plot_confusion_matrix(np.array([[1, -1], [0, 1]]), None, tmp_path / "x.png")


def test_score_distributions_png(tmp_path):
    rng = np.random.default_rng(1)
    scores = {
        "dice": [*rng.beta(5, 2, 40).tolist(), float("nan")],
        "iou": rng.beta(3, 3, 40).tolist(),
        "empty": [float("nan")],
    }
    path = plot_score_distributions(scores, tmp_path / "scores.png")
    size, pixels = read_png(path)
    assert size == (1300, 400)
    assert pixels.std() > 0
    # Scores outside [0, 1] (a loss) and a single repeated value still draw.
    read_png(plot_score_distributions({"loss": [2.5, 2.5]}, tmp_path / "loss.png"))
    with pytest.raises(InvalidInputError, match="empty"):
        plot_score_distributions({}, tmp_path / "none.png")
