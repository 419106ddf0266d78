"""PennFudan: instances from id masks (hand-computed and pycocotools boxes), splits, bad files."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pixelseg.data.pennfudan import PennFudan, instances_from_id_mask
from pixelseg.errors import DataError


def test_instances_from_id_mask_hand_computed() -> None:
    ids = np.zeros((6, 8), dtype=np.uint8)
    ids[1:3, 2:5] = 1  # rows 1..2, columns 2..4
    ids[4, 7] = 3  # one pixel; id 2 is absent
    masks, boxes = instances_from_id_mask(ids)
    assert masks.dtype == np.uint8 and masks.shape == (2, 6, 8)
    np.testing.assert_array_equal(masks[0], ids == 1)
    np.testing.assert_array_equal(masks[1], ids == 3)
    assert boxes.dtype == np.float32
    assert boxes.tolist() == [[2, 1, 5, 3], [7, 4, 8, 5]]
    masks, boxes = instances_from_id_mask(np.zeros((3, 3), dtype=np.uint8))
    assert masks.shape == (0, 3, 3) and boxes.shape == (0, 4)


def _layout(root: Path, save_image: Any, rng: np.random.Generator, count: int = 6) -> None:
    for i in range(count):
        stem = f"Ped{i:03d}"
        save_image(root / "PNGImages" / f"{stem}.png", rng.integers(0, 255, (20, 30, 3), np.uint8))
        ids = np.zeros((20, 30), dtype=np.uint8)
        ids[2:9, 3:8] = 1
        ids[10:18, 12 + i : 20 + i] = 2
        save_image(root / "PedMasks" / f"{stem}_mask.png", ids)


def test_samples(tmp_path: Path, save_image: Any, rng: np.random.Generator) -> None:
    _layout(tmp_path, save_image, rng)
    ds = PennFudan(tmp_path)
    assert len(ds) == 6 and ds.classes == ["pedestrian"]
    s = ds[1]
    assert s["image"].shape == (3, 20, 30) and s["image"].dtype == torch.float32
    assert s["boxes"].tolist() == [[3, 2, 8, 9], [13, 10, 21, 18]]
    assert s["labels"].tolist() == [1, 1] and s["iscrowd"].tolist() == [0, 0]
    assert s["area"].tolist() == [35.0, 64.0]
    assert s["masks"].shape == (2, 20, 30) and int(s["masks"].sum()) == 99
    assert (s["image_id"], s["name"]) == (2, "Ped001")


def test_split_is_deterministic_disjoint_and_keeps_ids(
    tmp_path: Path, save_image: Any, rng: np.random.Generator
) -> None:
    _layout(tmp_path, save_image, rng, count=10)
    train = PennFudan(tmp_path, "train", val_fraction=0.3, split_seed=3)
    val = PennFudan(tmp_path, "val", val_fraction=0.3, split_seed=3)
    names = lambda ds: [it[0] for it in ds.items]  # noqa: E731
    assert len(val) == 3 and len(train) == 7
    assert sorted(names(train) + names(val)) == names(PennFudan(tmp_path))
    assert names(val) == names(PennFudan(tmp_path, "val", val_fraction=0.3, split_seed=3))
    assert names(val) != names(PennFudan(tmp_path, "val", val_fraction=0.3, split_seed=4))
    assert val[0]["image_id"] == int(names(val)[0][3:]) + 1


def test_bad_files_warn_and_the_rest_loads(
    tmp_path: Path, save_image: Any, rng: np.random.Generator, caplog: pytest.LogCaptureFixture
) -> None:
    _layout(tmp_path, save_image, rng, count=4)
    (tmp_path / "PedMasks" / "Ped001_mask.png").unlink()
    save_image(tmp_path / "PedMasks" / "Ped002_mask.png", np.zeros((10, 30), dtype=np.uint8))
    with caplog.at_level(logging.WARNING):
        ds = PennFudan(tmp_path)
    assert [it[0] for it in ds.items] == ["Ped000", "Ped003"]
    assert "Ped001_mask.png' for Ped001.png not found" in caplog.text
    assert "Ped002_mask.png' is 10x30 (HxW) but image Ped002.png is 20x30" in caplog.text
    with pytest.raises(DataError, match="PNGImages' not found"):
        PennFudan(tmp_path / "nowhere")


@pytest.mark.realdata
def test_real_pennfudan(shared_dir: Any, tmp_path: Path) -> None:
    pytest.importorskip("pycocotools")
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    from pixelseg.data.coco_write import write_coco
    from pixelseg.data.io import read_mask

    root = shared_dir("pennfudan")
    ds = PennFudan(root)
    assert len(ds) == 120 and ds.problems == []
    assert len(PennFudan(root, "train")) == 96 and len(PennFudan(root, "val")) == 24
    samples = [ds[i] for i in (0, 57, 119)]
    for s in samples:
        ids = read_mask(Path(s["image_path"]).parent.parent / "PedMasks" / f"{s['name']}_mask.png")
        assert len(s["labels"]) == len(np.unique(ids)) - 1 >= 1
        assert s["masks"].shape[1:] == s["image"].shape[1:]
        rles = mask_utils.encode(np.asfortranarray(s["masks"].numpy().transpose(1, 2, 0)))
        xywh = mask_utils.toBbox(rles)  # the reference's box of each mask
        np.testing.assert_array_equal(
            s["boxes"].numpy(), np.c_[xywh[:, :2], xywh[:, :2] + xywh[:, 2:]]
        )
    path = write_coco(samples, tmp_path, ds.classes)
    coco = COCO(str(path))
    for s in samples:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[s["image_id"]]))
        assert [a["category_id"] for a in anns] == [1] * len(s["labels"])
        for ann, mask in zip(anns, s["masks"], strict=True):
            np.testing.assert_array_equal(coco.annToMask(ann), mask.numpy())
