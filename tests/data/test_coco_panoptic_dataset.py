"""CocoPanoptic: COCO panoptic folders (written here with write_panoptic) as panoptic samples.

The test set has gaps in its category ids (things 2 and 5, stuff 7 and 9) so labels and
stuff classes must be remapped, a crowd thing, VOID pixels and segment ids far from 1..N.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from pixelseg.data import CocoPanoptic
from pixelseg.data.coco_panoptic import id_to_rgb, write_panoptic
from pixelseg.data.panoptic_convert import panoptic_to_semantic_instances
from pixelseg.errors import DataError

CATEGORIES = [
    {"id": 9, "name": "road", "isthing": 0},
    {"id": 2, "name": "person", "isthing": 1},
    {"id": 7, "name": "sky", "isthing": 0},
    {"id": 5, "name": "car", "isthing": 1},
]
THINGS, STUFF = [2, 5], [7, 9]
H, W = 24, 32


def _id_map(image_id: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Sky on top, road below, a person, a car and a crowd of persons; a VOID band."""
    ids = np.zeros((H, W), dtype=np.int64)
    ids[:10] = 1000 + image_id  # sky
    ids[10:] = 2000 + image_id  # road
    ids[:, 30:] = 0  # VOID
    ids[4:14, 3:7] = 4_000_001  # person, crossing sky and road
    ids[15:20, 10:18] = 4_000_002  # car
    ids[12:22, 20:28] = 4_000_003  # crowd of persons
    ids[12, 20] = 2000 + image_id  # a notch so that masks are not boxes
    segments = [
        {"id": 1000 + image_id, "category_id": 7},
        {"id": 4_000_001, "category_id": 2},
        {"id": 2000 + image_id, "category_id": 9},
        {"id": 4_000_002, "category_id": 5},
        {"id": 4_000_003, "category_id": 2, "iscrowd": 1},
    ]
    return ids, segments


def _write(root: Path, count: int = 2, empty: bool = False) -> dict[int, np.ndarray]:
    """``count`` images (plus one all-VOID image if ``empty``) under ``root``: images/,
    panoptic.json, panoptic/. Returns the uint8 images by image id."""
    rng = np.random.default_rng(0)
    records, images, pixels = [], [], {}
    for image_id in range(1, count + 1 + int(empty)):
        ids, segments = _id_map(image_id)
        if image_id > count:
            ids, segments = np.zeros_like(ids), []
        records.append(
            {
                "image_id": image_id,
                "file_name": f"im{image_id}.png",
                "ids": ids,
                "segments_info": segments,
            }
        )
        images.append({"id": image_id, "file_name": f"im{image_id}.png", "height": H, "width": W})
        pixels[image_id] = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[image_id]).save(root / "images" / f"im{image_id}.png")
    write_panoptic(root / "panoptic.json", root / "panoptic", records, CATEGORIES, images=images)
    return pixels


def _edit_json(root: Path, edit: Callable[[dict], None]) -> None:
    path = root / "panoptic.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def test_samples_and_attributes(tmp_path: Path, check_panoptic_sample) -> None:
    pixels = _write(tmp_path)
    dataset = CocoPanoptic(tmp_path / "images", tmp_path / "panoptic.json")
    assert len(dataset) == 2
    assert [c["id"] for c in dataset.categories] == [2, 5, 7, 9]
    assert dataset.thing_category_ids == THINGS and dataset.stuff_category_ids == STUFF
    assert dataset.classes == ["person", "car"] and dataset.stuff_classes == ["sky", "road"]
    for index, image_id in enumerate((1, 2)):
        sample = dataset[index]
        check_panoptic_sample(sample, THINGS, STUFF)
        ids, segments = _id_map(image_id)
        np.testing.assert_array_equal(sample["panoptic"].numpy(), ids)
        expected_image = torch.from_numpy(pixels[image_id].transpose(2, 0, 1) / 255.0).float()
        torch.testing.assert_close(sample["image"], expected_image, rtol=0, atol=0)
        assert sample["labels"].tolist() == [1, 2, 1]  # person, car, crowd of persons
        assert sample["iscrowd"].tolist() == [0, 0, 1]
        assert [s["id"] for s in sample["segments_info"]] == [s["id"] for s in segments]
        assert sample["image_id"] == image_id and sample["name"] == f"im{image_id}"
        assert sample["image_path"] == str(tmp_path / "images" / f"im{image_id}.png")
        # Semantic: 0 things (crowd too), 1 sky, 2 road, 255 VOID.
        assert sorted(np.unique(sample["semantic"]).tolist()) == [0, 1, 2, 255]
        assert (sample["semantic"][:, 30:] == 255).all()
        assert (sample["semantic"][12:22, 21:28] == 0).all()


def test_agrees_with_panoptic_to_semantic_instances(tmp_path: Path) -> None:
    _write(tmp_path, count=1)
    sample = CocoPanoptic(tmp_path / "images", tmp_path / "panoptic.json")[0]
    ids, segments = _id_map(1)
    ref = panoptic_to_semantic_instances(ids, segments, CATEGORIES)
    np.testing.assert_array_equal(sample["masks"].numpy(), ref["masks"].astype(np.uint8))
    stuff_class = {7: 1, 9: 2, 2: 0, 5: 0, 255: 255}
    np.testing.assert_array_equal(
        sample["semantic"].numpy(), np.vectorize(stuff_class.get)(ref["semantic"])
    )


def test_panoptic_dir_defaults_to_the_json_without_suffix(tmp_path: Path) -> None:
    _write(tmp_path, count=1)
    (tmp_path / "panoptic").rename(tmp_path / "pngs")
    with pytest.raises(DataError, match=r"panoptic PNG '.*panoptic/im1.png' does not exist"):
        CocoPanoptic(tmp_path / "images", tmp_path / "panoptic.json")
    dataset = CocoPanoptic(tmp_path / "images", tmp_path / "panoptic.json", tmp_path / "pngs")
    assert dataset[0]["panoptic"].shape == (H, W)


def test_keep_empty(tmp_path: Path, check_panoptic_sample) -> None:
    _write(tmp_path, count=1, empty=True)
    kept = CocoPanoptic(tmp_path / "images", tmp_path / "panoptic.json")
    assert len(kept) == 2
    empty = kept[1]
    check_panoptic_sample(empty, THINGS, STUFF)
    assert empty["masks"].shape == (0, H, W) and empty["boxes"].shape == (0, 4)
    assert (empty["semantic"] == 255).all() and empty["segments_info"] == []
    dropped = CocoPanoptic(tmp_path / "images", tmp_path / "panoptic.json", keep_empty=False)
    assert [s["image_id"] for s in dropped] == [1]


def _drop_segment(doc: dict) -> None:
    doc["annotations"][0]["segments_info"].pop(1)


def _add_segment(doc: dict) -> None:
    doc["annotations"][0]["segments_info"].append({"id": 77, "category_id": 7})


def _unknown_category(doc: dict) -> None:
    doc["annotations"][1]["segments_info"][3]["category_id"] = 42


def _missing_image(doc: dict) -> None:
    doc["images"][1]["file_name"] = "gone.png"


def _unlisted_image(doc: dict) -> None:
    doc["images"].pop(0)


def _wrong_listed_size(doc: dict) -> None:
    doc["images"][0]["height"] = 99


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            _unknown_category,
            r"'im2.png' \(ID 2\): segment with ID 4000002 has unknown category_id 42; "
            r"categories: \[2, 5, 7, 9\]",
        ),
        (_missing_image, r"image 'gone.png' \(ID 2\): image file '.*gone.png' does not exist"),
        (_unlisted_image, r"annotation of image ID 1 has no entry in 'images'"),
        (_wrong_listed_size, r"'im1.png' \(ID 1\): the image file is 24x32 .* says 99x32"),
    ],
)
def test_bad_json_fails_at_construction(tmp_path: Path, edit, match: str) -> None:
    _write(tmp_path)
    _edit_json(tmp_path, edit)
    with pytest.raises(DataError, match=match):
        CocoPanoptic(tmp_path / "images", tmp_path / "panoptic.json")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            _drop_segment,
            r"'.*im1.png' of image 'im1.png' \(ID 1\): panoptic segment with ID 4000001 is "
            r"present in the PNG but not in segments_info",
        ),
        (_add_segment, r"\(ID 1\): segment\(s\) with ID \[77\] are listed .* absent from the PNG"),
    ],
)
def test_ids_disagreeing_with_segments_info_fail_when_read(
    tmp_path: Path, edit, match: str
) -> None:
    _write(tmp_path)
    _edit_json(tmp_path, edit)
    dataset = CocoPanoptic(tmp_path / "images", tmp_path / "panoptic.json")
    dataset[1]  # the other image is fine
    with pytest.raises(DataError, match=match):
        dataset[0]


def test_size_mismatch_and_corrupt_files(tmp_path: Path) -> None:
    _write(tmp_path)
    Image.fromarray(id_to_rgb(np.zeros((H, W + 1), np.int64))).save(tmp_path / "panoptic/im2.png")
    with pytest.raises(DataError, match=r"'im2.png' \(ID 2\): panoptic PNG .* is 24x33 .* 24x32"):
        CocoPanoptic(tmp_path / "images", tmp_path / "panoptic.json")
    _write(tmp_path)
    dataset = CocoPanoptic(tmp_path / "images", tmp_path / "panoptic.json")
    data = (tmp_path / "images/im1.png").read_bytes()
    (tmp_path / "images/im1.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cannot decode image '.*im1.png'"):
        dataset[0]


def test_json_without_categories_or_images(tmp_path: Path) -> None:
    _write(tmp_path, count=1)
    _edit_json(tmp_path, lambda doc: doc.pop("images"))
    with pytest.raises(DataError, match=r"panoptic.json' has no 'images' list"):
        CocoPanoptic(tmp_path / "images", tmp_path / "panoptic.json")
    _edit_json(tmp_path, lambda doc: doc.pop("categories"))
    with pytest.raises(DataError, match=r"'categories' must be a non-empty list"):
        CocoPanoptic(tmp_path / "images", tmp_path / "panoptic.json")


@pytest.mark.realdata
def test_reads_the_coco_sample(shared_dir: Callable[[str], Path], check_panoptic_sample) -> None:
    root = shared_dir("coco_panoptic_sample")
    dataset = CocoPanoptic(root / "images", root / "gt.json")
    doc = json.loads((root / "gt.json").read_text())
    assert len(dataset) == len(doc["annotations"]) == 2
    assert len(dataset.thing_category_ids) == 80 and len(dataset.stuff_category_ids) == 53
    assert dataset.classes[0] == "person"
    crowds = 0
    for sample, ann in zip(dataset, doc["annotations"], strict=True):
        check_panoptic_sample(sample, dataset.thing_category_ids, dataset.stuff_category_ids)
        assert sample["image_id"] == ann["image_id"]
        assert sample["segments_info"] == [
            {**s, "isthing": int(s["category_id"] in dataset.thing_category_ids)}
            for s in ann["segments_info"]
        ]
        crowds += int(sample["iscrowd"].sum())
    assert crowds > 0  # the sample holds crowd regions; they are instances with iscrowd 1
