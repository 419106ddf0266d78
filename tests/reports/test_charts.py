"""Charts write valid PNGs of the expected size; normalisation matches sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import confusion_matrix

from pixelseg.errors import InvalidInputError
from pixelseg.reports import (
    normalize_confusion,
    plot_class_iou,
    plot_confusion_matrix,
    plot_score_distributions,
)


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
