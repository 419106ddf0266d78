"""CocoInstances and write_coco: masks, boxes and labels against pycocotools' own reading."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("pycocotools")

from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from pixelseg.data.coco import CocoInstances
from pixelseg.data.coco_write import write_coco
from pixelseg.errors import DataError

H, W = 40, 50


def _ellipse() -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return (((yy - 25) / 8) ** 2 + ((xx - 30) / 12) ** 2 <= 1).astype(np.uint8)


def _uncompressed(mask: np.ndarray) -> dict[str, Any]:
    flat = mask.flatten(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    return {"counts": [0, *counts] if flat[0] else counts, "size": [H, W]}


def _dataset(root: Path, save_image: Any, rng: np.random.Generator) -> dict[str, Any]:
    """Three images (the third without annotations), categories with ids 5, 9, 2."""
    for i in (1, 2, 3):
        save_image(root / "images" / f"im{i}.png", rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    ellipse = mask_utils.encode(np.asfortranarray(_ellipse()))
    ellipse["counts"] = ellipse["counts"].decode()
    crowd = np.zeros((H, W), dtype=np.uint8)
    crowd[5:30, 2:20] = 1
    return {
        "images": [{"id": i, "file_name": f"im{i}.png", "height": H, "width": W} for i in (1, 2, 3)],
        "categories": [{"id": c, "name": f"c{c}"} for c in (5, 9, 2)],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 5, "iscrowd": 0, "area": 120.0,
             "bbox": [4, 3, 12, 10], "segmentation": [[4, 3, 16, 3, 16, 13, 4, 13]]},
            {"id": 11, "image_id": 1, "category_id": 9, "iscrowd": 0, "area": 290.5,
             "bbox": [float(v) for v in mask_utils.toBbox(ellipse)], "segmentation": ellipse},
            {"id": 12, "image_id": 2, "category_id": 2, "iscrowd": 1, "area": 450.0,
             "bbox": [2, 5, 18, 25], "segmentation": _uncompressed(crowd)},
        ],
    }  # fmt: skip


@pytest.fixture
def coco_dir(tmp_path: Path, save_image: Any, rng: np.random.Generator) -> Path:
    data = _dataset(tmp_path, save_image, rng)
    (tmp_path / "instances.json").write_text(json.dumps(data))
    return tmp_path


def test_samples_match_pycocotools(coco_dir: Path) -> None:
    ds = CocoInstances(coco_dir / "images", coco_dir / "instances.json")
    ref = COCO(str(coco_dir / "instances.json"))
    assert len(ds) == 3 and ds.problems == []
    assert ds.classes == ["c2", "c5", "c9"]  # categories in id order -> labels 1..3
    assert ds.label_to_category_id == {1: 2, 2: 5, 3: 9}
    for sample in ds:
        anns = ref.loadAnns(ref.getAnnIds(imgIds=[sample["image_id"]]))
        assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, H, W)
        assert sample["masks"].dtype == torch.uint8 and sample["masks"].shape == (len(anns), H, W)
        for i, ann in enumerate(anns):
            np.testing.assert_array_equal(sample["masks"][i].numpy(), ref.annToMask(ann))
            x, y, w, h = ann["bbox"]
            assert sample["boxes"][i].tolist() == pytest.approx([x, y, x + w, y + h])
            assert ds.label_to_category_id[int(sample["labels"][i])] == ann["category_id"]
            assert int(sample["iscrowd"][i]) == ann["iscrowd"]
            assert float(sample["area"][i]) == ann["area"]
    first = ds[0]
    assert first["labels"].tolist() == [2, 3] and first["name"] == "im1"
    pixels = np.array(Image.open(coco_dir / "images" / "im1.png"))
    torch.testing.assert_close(first["image"], torch.from_numpy(pixels).permute(2, 0, 1) / 255.0)
    empty = ds[2]
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, H, W)


def test_images_without_annotations_kept_or_dropped(coco_dir: Path) -> None:
    dropped = CocoInstances(coco_dir / "images", coco_dir / "instances.json", keep_empty=False)
    assert [s["image_id"] for s in dropped] == [1, 2]


def test_bad_annotations_warn_and_the_rest_loads(
    tmp_path: Path, save_image: Any, rng: np.random.Generator, caplog: pytest.LogCaptureFixture
) -> None:
    data = _dataset(tmp_path, save_image, rng)
    good = data["annotations"][0]
    data["images"].append({"id": 4, "file_name": "missing.png", "height": H, "width": W})
    save_image(tmp_path / "images" / "small.png", np.zeros((10, 10, 3), dtype=np.uint8))
    data["images"].append({"id": 5, "file_name": "small.png", "height": H, "width": W})
    data["annotations"] += [
        dict(good, id=20, image_id=77),
        dict(good, id=21, category_id=42),
        dict(good, id=22, segmentation=[[1, 1, 5, 5]]),
        dict(good, id=23, segmentation=[[1, 1, 5, 5], [20, 20, 30, 20, 30, 30]]),
        dict(good, id=24, bbox=[40, 30, 20, 20]),
        dict(good, id=25, bbox=[4, 3, 0, 10]),
    ]
    (tmp_path / "instances.json").write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        ds = CocoInstances(tmp_path / "images", tmp_path / "instances.json")
    text = "\n".join(ds.problems)
    for expected in (
        "missing.png' not found",
        "small.png' is 10x10 (HxW) but the annotation file says 40x50",
        "annotation 20: image_id 77 not in 'images'",
        "annotation 21: category_id 42 not in 'categories'",
        "annotation 22 (im1.png): polygon has 2 points (fewer than 3); left out",
        "annotation 23 (im1.png): polygon has 2 points (fewer than 3)\n",
        "annotation 24 (im1.png): bbox [40, 30, 20, 20] extends outside the 50x40 image; clipped",
        "annotation 25 (im1.png): box [4.0, 3.0, 4.0, 13.0] has zero area; left out",
    ):
        assert expected in text + "\n", expected
    assert "annotation 20" in caplog.text
    assert [s["image_id"] for s in ds] == [1, 2, 3]
    first = ds[0]
    assert len(first["labels"]) == 4  # 10, 11, 23 (its valid polygon) and 24 (clipped)
    assert first["boxes"][3].tolist() == [40.0, 30.0, 50.0, 40.0]
    triangle = np.zeros((H, W), dtype=np.uint8)
    rle = mask_utils.merge(mask_utils.frPyObjects([[20, 20, 30, 20, 30, 30]], H, W))
    triangle[:] = mask_utils.decode(rle)
    np.testing.assert_array_equal(first["masks"][2].numpy(), triangle)


def test_empty_or_malformed_annotation_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "instances.json"
    path.write_text("")
    with pytest.raises(DataError, match=r"instances\.json' is empty"):
        CocoInstances(tmp_path, path)
    path.write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(DataError, match="has no 'annotations' list"):
        CocoInstances(tmp_path, path)
    path.write_text("{not json")
    with pytest.raises(DataError, match="is not valid JSON"):
        CocoInstances(tmp_path, path)


def test_write_coco_round_trip(coco_dir: Path, tmp_path: Path) -> None:
    ds = CocoInstances(coco_dir / "images", coco_dir / "instances.json")
    out = tmp_path / "export"
    path = write_coco(ds, out, ds.categories)
    again = CocoInstances(out / "images", path)
    assert again.categories == ds.categories and len(again) == len(ds)
    for a, b in zip(ds, again, strict=True):
        for key in ("image", "boxes", "labels", "masks", "iscrowd", "area"):
            assert torch.equal(a[key], b[key]), key
        assert (a["image_id"], a["name"]) == (b["image_id"], b["name"])
    # Other tools read it: pycocotools gives the same masks and the original category ids.
    ref, written = COCO(str(coco_dir / "instances.json")), COCO(str(path))
    for ann in written.loadAnns(written.getAnnIds()):
        orig = [o for o in ref.loadAnns(ref.getAnnIds(imgIds=[ann["image_id"]]))
                if o["category_id"] == ann["category_id"]]  # fmt: skip
        np.testing.assert_array_equal(written.annToMask(ann), ref.annToMask(orig[0]))
    with pytest.raises(DataError, match="exists; pass overwrite=True"):
        write_coco(ds, out, ds.categories)


def test_write_coco_rejects_inconsistent_samples(coco_dir: Path, tmp_path: Path) -> None:
    ds = CocoInstances(coco_dir / "images", coco_dir / "instances.json")
    sample = copy.copy(ds[0])
    sample["labels"] = torch.tensor([1, 7])
    with pytest.raises(DataError, match=r"sample 'im1': labels \[7\] not in 1\.\.3"):
        write_coco([sample], tmp_path / "a", ds.categories)
    with pytest.raises(DataError, match=r"both be written as 'im1\.png'"):
        write_coco([ds[0], ds[0]], tmp_path / "b", ds.categories)
