"""Polygons, counts and PNG encodings of a served mask, on hand-made label maps."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from pixelseg.inference import load_index_mask, save_index_mask
from pixelseg.serve.responses import class_polygons, mask_png, overlay_png, segment_json


def test_a_rectangle_is_its_four_corners():
    labels = np.zeros((10, 12), dtype=np.int64)
    labels[2:6, 3:9] = 1  # rows 2..5, columns 3..8
    polygons = class_polygons(labels, 1)
    assert len(polygons) == 1
    assert sorted(map(tuple, polygons[0])) == [(3, 2), (3, 5), (8, 2), (8, 5)]


def test_separate_regions_are_separate_polygons_and_holes_are_not_drawn():
    labels = np.zeros((12, 12), dtype=np.int64)
    labels[1:4, 1:4] = 2
    labels[6:11, 6:11] = 2
    labels[8, 8] = 0  # a hole in the second square
    polygons = sorted(class_polygons(labels, 2))
    assert len(polygons) == 2
    assert sorted(map(tuple, polygons[0])) == [(1, 1), (1, 3), (3, 1), (3, 3)]
    assert sorted(map(tuple, polygons[1])) == [(6, 6), (6, 10), (10, 6), (10, 10)]
    # The background surrounds everything: one outer polygon, the image border.
    assert sorted(map(tuple, class_polygons(labels, 0)[0])) == [(0, 0), (0, 11), (11, 0), (11, 11)]


def test_a_diagonal_edge_is_simplified_to_within_a_pixel():
    labels = np.tril(np.ones((40, 40), dtype=np.int64))  # a staircase triangle
    (polygon,) = class_polygons(labels, 1)
    assert sorted(map(tuple, polygon)) == [(0, 0), (0, 39), (39, 39)]
    (tiny,) = class_polygons(np.eye(1, dtype=np.int64), 1)
    assert tiny == [[0, 0]]  # one pixel: one point, never dropped


def test_segment_json_counts_shares_and_mask():
    labels = np.array([[0, 0, 3, 3], [0, 0, 3, 3], [0, 0, 0, 0]])
    names = ["background", "a", "b", "c"]
    colors = [(0, 0, 0), (1, 2, 3), (4, 5, 6), (7, 8, 9)]
    body = segment_json(labels, names, colors, batch_size=3, mask=b"\x89PNG")
    assert (body["width"], body["height"], body["batch_size"]) == (4, 3, 3)
    assert base64.b64decode(body["mask_png"]) == b"\x89PNG"
    assert [(c["index"], c["name"], c["color"], c["pixels"]) for c in body["classes"]] == [
        (0, "background", [0, 0, 0], 8),
        (3, "c", [7, 8, 9], 4),
    ]
    assert [c["share"] for c in body["classes"]] == [8 / 12, 4 / 12]
    assert "mask_png" not in segment_json(labels, names, colors, batch_size=1)


def test_mask_png_is_predicts_file_and_wide_models_get_16_bit(tmp_path):
    labels = np.random.default_rng(0).integers(0, 5, (7, 9))
    colors = [(10 * i, 0, 255 - i) for i in range(5)]
    path = save_index_mask(tmp_path / "m.png", labels.astype(np.uint8), colors)
    assert mask_png(labels, colors, 5) == path.read_bytes()
    np.testing.assert_array_equal(load_index_mask(path), labels)
    wide = np.array([[0, 300], [1000, 299]])
    decoded = Image.open(io.BytesIO(mask_png(wide, [(0, 0, 0)] * 1001, 1001)))
    assert decoded.mode.startswith("I")
    np.testing.assert_array_equal(np.asarray(decoded), wide)


def test_overlay_of_a_grey_image_is_rgb():
    grey = np.full((2, 2, 1), 100, dtype=np.uint8)
    labels = np.array([[0, 1], [1, 0]])
    out = np.asarray(
        Image.open(io.BytesIO(overlay_png(grey, labels, [(0, 0, 0), (200, 0, 0)], 0.5)))
    )
    # round(0.5 * 100 + 0.5 * colour) per channel, class 0 drawn too (as predict draws it)
    assert out.tolist() == [[[50, 50, 50], [150, 50, 50]], [[150, 50, 50], [50, 50, 50]]]
