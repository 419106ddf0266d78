"""COCO panoptic format: id <-> RGB codec, PNG and JSON reading, atomic writing, checks."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pixelseg.data import SyntheticShapes
from pixelseg.data.coco_panoptic import (
    MAX_SEGMENT_ID,
    id_to_rgb,
    load_panoptic_json,
    read_panoptic_png,
    rgb_to_id,
    segment_index,
    segment_stats,
    write_panoptic,
)
from pixelseg.data.synthetic import PANOPTIC_CATEGORIES
from pixelseg.errors import DataError, InvalidInputError

CATEGORIES = [{"id": 1, "name": "a", "isthing": 1}, {"id": 7, "name": "b", "isthing": 0}]


def record(image_id: int, ids: np.ndarray, segments: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "image_id": image_id,
        "file_name": f"{image_id}.png",
        "ids": ids,
        "segments_info": segments,
    }


def test_rgb_encoding_is_r_plus_256_g_plus_256_squared_b() -> None:
    rgb = np.array([[[1, 2, 3], [255, 255, 255], [0, 0, 0]]], dtype=np.uint8)
    assert rgb_to_id(rgb).tolist() == [[1 + 2 * 256 + 3 * 65536, MAX_SEGMENT_ID, 0]]
    ids = np.array([[0, 1, 256, 65536, 4_938_483, MAX_SEGMENT_ID]])
    assert np.array_equal(rgb_to_id(id_to_rgb(ids)), ids)
    assert id_to_rgb(np.array([197121])).tolist() == [[1, 2, 3]]
    with pytest.raises(InvalidInputError, match=r"\[0, 16777215\].*\[-1, 16777216\]"):
        id_to_rgb(np.array([-1, MAX_SEGMENT_ID + 1]))


@pytest.mark.realdata
def test_reads_the_coco_sample_consistently(shared_dir: Callable[[str], Path]) -> None:
    root = shared_dir("coco_panoptic_sample")
    doc = load_panoptic_json(root / "gt.json", require_categories=True)
    assert len(doc["categories"]) == 133
    for ann in doc["annotations"]:
        ids = read_panoptic_png(root / "gt" / ann["file_name"], ann["image_id"])
        seg_ids = np.array([s["id"] for s in ann["segments_info"]])
        index = segment_index(ids, seg_ids, image=ann["image_id"])  # every id is listed
        area, bbox = segment_stats(index, len(seg_ids))
        assert area.tolist() == [s["area"] for s in ann["segments_info"]]
        assert bbox.tolist() == [s["bbox"] for s in ann["segments_info"]]


def test_segment_stats_give_tight_coco_boxes() -> None:
    index = np.zeros((5, 6), dtype=np.intp)
    index[1:3, 2:5] = 1  # rows 1-2, columns 2-4
    index[4, 0] = 2
    area, bbox = segment_stats(index, 3)
    assert area.tolist() == [6, 1, 0]
    assert bbox.tolist() == [[2, 1, 3, 2], [0, 4, 1, 1], [0, 0, 0, 0]]
    shapes = SyntheticShapes(num_samples=2, size=(48, 64), seed=3)
    for i in range(2):
        target = shapes.instance_target(i)
        segments = target["segments_info"]
        index = segment_index(target["panoptic"].numpy(), np.array([s["id"] for s in segments]))
        area, bbox = segment_stats(index, len(segments))
        assert bbox.tolist() == [s["bbox"] for s in segments]
        assert area.tolist() == [s["area"] for s in segments]


def test_segment_index_maps_ids_to_rows_for_small_and_coco_sized_ids() -> None:
    for seg_ids in ([5, 3], [9_000_000, 16_000_000]):
        ids = np.array([[0, seg_ids[0]], [seg_ids[1], seg_ids[1]]])
        assert segment_index(ids, np.array(seg_ids)).tolist() == [[0, 1], [2, 2]]
        with pytest.raises(DataError, match=rf"image with ID 4 .*ID {seg_ids[1]} is present"):
            segment_index(ids, np.array(seg_ids[:1]), image=4)


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    shapes = SyntheticShapes(num_samples=3, size=(40, 56), seed=1)
    targets = [shapes.instance_target(i) for i in range(3)]
    records = [
        record(
            i,
            t["panoptic"].numpy() * 1000,
            [{**s, "id": s["id"] * 1000} for s in t["segments_info"]],
        )
        for i, t in enumerate(targets)
    ]
    count = write_panoptic(
        tmp_path / "pan.json", tmp_path / "pan", iter(records), PANOPTIC_CATEGORIES
    )
    assert count == 3
    doc = load_panoptic_json(tmp_path / "pan.json", require_categories=True)
    assert doc["categories"] == PANOPTIC_CATEGORIES
    assert doc["images"] == [{"id": i, "height": 40, "width": 56} for i in range(3)]
    for ann, rec in zip(doc["annotations"], records, strict=True):
        assert ann["segments_info"] == [{**s, "iscrowd": 0} for s in rec["segments_info"]]
        assert np.array_equal(read_panoptic_png(tmp_path / "pan" / ann["file_name"]), rec["ids"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pan", "pan.json"]  # no staging left


def test_write_computes_area_and_bbox_and_keeps_other_keys(tmp_path: Path) -> None:
    ids = np.array([[0, 5, 5], [9, 9, 5]])
    segments = [
        {"id": 5, "category_id": 1, "score": 0.5},
        {"id": 9, "category_id": 7, "iscrowd": 1},
    ]
    write_panoptic(tmp_path / "p.json", tmp_path / "p", [record(3, ids, segments)], CATEGORIES)
    written = json.loads((tmp_path / "p.json").read_text())["annotations"][0]["segments_info"]
    assert written == [
        {"id": 5, "category_id": 1, "score": 0.5, "iscrowd": 0, "area": 3, "bbox": [1, 0, 2, 2]},
        {"id": 9, "category_id": 7, "iscrowd": 1, "area": 2, "bbox": [0, 1, 2, 1]},
    ]


@pytest.mark.parametrize(
    ("ids", "segments", "message"),
    [
        (
            [[5, 6]],
            [{"id": 5, "category_id": 1}],
            r"image with ID 2 the segment with ID 6 is present",
        ),
        (
            [[5, 5]],
            [{"id": 5, "category_id": 1}, {"id": 6, "category_id": 1}],
            r"image with ID 2 segments \[6\] are listed",
        ),
        (
            [[5, 5]],
            [{"id": 5, "category_id": 3}],
            r"image with ID 2 segment with ID 5 has unknown category_id 3",
        ),
        (
            [[5, 5]],
            [{"id": 5, "category_id": 1}, {"id": 5, "category_id": 7}],
            r"image with ID 2: segment ID 5 is repeated",
        ),
        ([[5, 5]], [{"id": 5, "category_id": 1, "iscrowd": 2}], r"segment 5 has iscrowd=2"),
        ([[5.0, 5.0]], [{"id": 5, "category_id": 1}], r"'ids' must be an integer"),
    ],
)
def test_write_refuses_bad_records_and_leaves_nothing_behind(
    tmp_path: Path, ids: list, segments: list[dict[str, Any]], message: str
) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.png").write_bytes(b"kept")

    def records() -> Iterator[dict[str, Any]]:
        yield record(1, np.array([[5, 5]]), [{"id": 5, "category_id": 1}])  # valid, staged first
        yield record(2, np.array(ids), segments)

    with pytest.raises(DataError, match=message):
        write_panoptic(tmp_path / "out.json", tmp_path / "out", records(), CATEGORIES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["old.png"]


def test_write_refuses_duplicate_images_and_odd_file_names(tmp_path: Path) -> None:
    good = record(1, np.array([[5]]), [{"id": 5, "category_id": 1}])
    with pytest.raises(DataError, match=r"image with ID 1 is given twice"):
        write_panoptic(tmp_path / "o.json", tmp_path / "o", [good, good], CATEGORIES)
    with pytest.raises(DataError, match=r"'1.png' is used by two images"):
        write_panoptic(
            tmp_path / "o.json", tmp_path / "o", [good, {**good, "image_id": 2}], CATEGORIES
        )
    with pytest.raises(DataError, match=r"bare '<name>.png', got '../x.png'"):
        write_panoptic(
            tmp_path / "o.json", tmp_path / "o", [{**good, "file_name": "../x.png"}], CATEGORIES
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"images": []}, r"has no 'annotations' list"),
        ({"annotations": []}, r"'categories' must be a non-empty list"),
        (
            {"annotations": [], "categories": [{"id": 1, "isthing": 1}, {"id": 1, "isthing": 0}]},
            r"category id 1 is listed twice",
        ),
        ({"annotations": [], "categories": [{"id": 1, "isthing": 2}]}, r"category 1 has isthing=2"),
        (
            {
                "annotations": [{"image_id": 4, "file_name": "a.png", "segments_info": []}] * 2,
                "categories": CATEGORIES,
            },
            r"image with ID 4: the image is annotated twice",
        ),
        (
            {"annotations": [{"image_id": 4, "segments_info": []}], "categories": CATEGORIES},
            r"image with ID 4: 'file_name' must be",
        ),
        (
            {
                "annotations": [
                    {"image_id": 4, "file_name": "a.png", "segments_info": [{"id": 3}]}
                ],
                "categories": CATEGORIES,
            },
            r"image with ID 4: segment 3 has no 'category_id'",
        ),
        (
            {
                "annotations": [{"image_id": "x", "file_name": "a.png", "segments_info": []}],
                "categories": CATEGORIES,
            },
            r"image_id='x'; it must be an integer",
        ),
    ],
)
def test_load_names_the_file_image_and_key(tmp_path: Path, doc: dict, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=message) as info:
        load_panoptic_json(path, require_categories=True)
    assert "bad.json" in str(info.value)


def test_load_and_read_name_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope.json' does not exist"):
        load_panoptic_json(tmp_path / "nope.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DataError, match=r"cannot read panoptic JSON .*broken.json"):
        load_panoptic_json(tmp_path / "broken.json")
    with pytest.raises(DataError, match=r"nope.png' of the image with ID 3 does not exist"):
        read_panoptic_png(tmp_path / "nope.png", 3)
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "grey.png")
    with pytest.raises(DataError, match=r"grey.png' has mode 'L'.*needs RGB"):
        read_panoptic_png(tmp_path / "grey.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot decode panoptic PNG .*junk.png"):
        read_panoptic_png(tmp_path / "junk.png")
