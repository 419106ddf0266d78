"""The panoptic picture: instance and stuff colours, 1-pixel boundaries, VOID untouched."""

from __future__ import annotations

import numpy as np
import pytest

from pixelseg.colormap import label_colormap
from pixelseg.errors import InvalidInputError
from pixelseg.reports import render_panoptic
from pixelseg.reports.panoptic_overlay import MIN_DISTANCE, panoptic_colors, segment_boundaries

CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1, "color": [220, 20, 60]},
    {"id": 3, "name": "car", "isthing": 1},
    {"id": 184, "name": "grass", "isthing": 0, "color": [0, 200, 0]},
    {"id": 190, "name": "sky", "isthing": 0},
]


def scene():
    """8 x 12: person 11 (cols 0-2), person 12 (cols 3-5), grass 40 (cols 6-8), VOID 9-11."""
    ids = np.zeros((8, 12), dtype=np.int64)
    ids[:, 0:3], ids[:, 3:6], ids[:, 6:9] = 11, 12, 40
    segments = [
        {"id": 11, "category_id": 1},
        {"id": 12, "category_id": 1},
        {"id": 40, "category_id": 184},
    ]
    image = np.full((8, 12, 3), 90, dtype=np.uint8)
    return image, ids, segments


def test_instances_of_one_class_differ_and_stuff_keeps_its_colour():
    image, ids, segments = scene()
    out = render_panoptic(image, ids, segments, CATEGORIES, alpha=1.0)
    assert out.shape == image.shape and out.dtype == np.uint8
    first, second, grass = out[4, 1], out[4, 4], out[4, 7]
    assert np.abs(first.astype(int) - second.astype(int)).max() >= MIN_DISTANCE
    assert tuple(first) == (220, 20, 60)  # the first instance keeps the category colour
    assert tuple(grass) == (0, 200, 0)
    half = render_panoptic(image, ids, segments, CATEGORIES, alpha=0.5)
    assert tuple(half[4, 7]) == (45, 145, 45)  # round(0.5 * 90 + 0.5 * colour)


def test_category_without_colour_uses_the_voc_map_at_its_id():
    ids = np.full((3, 3), 7, dtype=np.int64)
    out = render_panoptic(
        np.zeros((3, 3, 3), np.uint8), ids, [{"id": 7, "category_id": 190}], CATEGORIES, 1.0
    )
    assert tuple(out[1, 1]) == label_colormap(191)[190]


def test_void_is_left_as_the_image_and_boundaries_are_one_pixel():
    image, ids, segments = scene()
    image[:, 9:] = np.arange(24, dtype=np.uint8).reshape(8, 3)[..., None]
    out = render_panoptic(image, ids, segments, CATEGORIES, alpha=0.5)
    np.testing.assert_array_equal(out[:, 9:], image[:, 9:])
    edge = segment_boundaries(ids)
    # Lines on the left side of each change (cols 2 and 5), on the segment's side of VOID (8).
    assert edge.sum(axis=0).tolist() == [0, 0, 8, 0, 0, 8, 0, 0, 8, 0, 0, 0]
    assert (out[edge] == 255).all()
    assert not (out[~edge & (ids != 0)] == 255).all(axis=-1).any()
    assert segment_boundaries(np.zeros((4, 4), int)).sum() == 0


def test_boundary_with_void_on_the_left_or_above_goes_on_the_segment():
    ids = np.zeros((4, 4), dtype=np.int64)
    ids[1:, 1:] = 5
    edge = segment_boundaries(ids)
    assert edge[1, 1:].all() and edge[1:, 1].all() and edge.sum() == 5


def test_colours_are_deterministic_and_distinct_for_many_instances():
    segments = [{"id": i, "category_id": 3} for i in range(1, 41)]
    colors = panoptic_colors(segments, CATEGORIES)
    assert colors == panoptic_colors(segments, CATEGORIES)
    assert len(set(colors.values())) == 40


def test_large_segment_ids():
    big = 256**3 - 1
    ids = np.array([[0, big], [big, 3]], dtype=np.int64)
    segments = [{"id": big, "category_id": 184}, {"id": 3, "category_id": 1}]
    out = render_panoptic(np.zeros((2, 2, 3), np.uint8), ids, segments, CATEGORIES, 1.0)
    # Segment ``big`` borders segment 3 on its right and below: both its pixels are lines.
    assert tuple(out[1, 0]) == tuple(out[0, 1]) == (255, 255, 255)
    assert tuple(out[1, 1]) == (220, 20, 60) and tuple(out[0, 0]) == (0, 0, 0)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"image": np.zeros((8, 12), np.uint8)}, "image must be"),
        ({"image": np.zeros((8, 12, 3), np.float32)}, "image must be"),
        ({"ids": np.zeros((8, 11), np.int64)}, "ids must be"),
        ({"ids": np.zeros((8, 12), np.float32)}, "ids must be"),
        ({"segments": []}, r"ids \[11, 12, 40\] are in the id map"),
        ({"segments": [{"id": 11, "category_id": 99}]}, "category_id 99"),
        ({"segments": [{"id": 11, "category_id": 1}] * 2}, "unique"),
        ({"categories": [{"id": 1, "isthing": 1, "color": [0, 0, 300]}]}, "color"),
        ({"categories": []}, "categories is empty"),
    ],
)
def test_bad_inputs_name_the_value(change, match):
    image, ids, segments = scene()
    args = {"image": image, "ids": ids, "segments": segments, "categories": CATEGORIES}
    args.update(change)
    with pytest.raises(InvalidInputError, match=match):
        render_panoptic(args["image"], args["ids"], args["segments"], args["categories"])
