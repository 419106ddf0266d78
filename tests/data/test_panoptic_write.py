"""write_coco_panoptic: panoptic samples written as COCO panoptic read back as the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pixelseg.data import (
    CocoPanoptic,
    SyntheticPanoptic,
    TransformedPanoptic,
    build_panoptic_transforms,
    write_coco_panoptic,
)
from pixelseg.errors import DataError


def assert_same_panoptic(expected: dict, got: dict) -> None:
    """Every key of the panoptic sample equal (exactly), but ``image_path``."""
    for key in ("image", "boxes", "labels", "masks", "iscrowd", "area", "semantic", "panoptic"):
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)
    for key in ("segments_info", "image_id", "name"):
        assert got[key] == expected[key], key


def test_transformed_samples_round_trip(tmp_path: Path) -> None:
    # After a crop some segments are gone and ids are no longer 1..N: still written as is.
    source = SyntheticPanoptic(3, size=40, seed=1, max_shapes=5)
    transform = build_panoptic_transforms([{"name": "crop", "size": [24, 30]}])
    transform.set_seed(0)
    dataset = TransformedPanoptic(source, transform)
    samples = [dataset[i] for i in range(3)]
    path = write_coco_panoptic(iter(samples), tmp_path, source.categories)
    assert path == tmp_path / "panoptic.json"
    doc = json.loads(path.read_text())
    assert doc["images"][0] == {"id": 1, "height": 24, "width": 30, "file_name": "shape_00000.png"}
    assert doc["categories"] == source.categories
    back = CocoPanoptic(tmp_path / "images", path)
    assert back.thing_category_ids == source.thing_category_ids
    assert back.stuff_classes == source.stuff_classes
    for expected, got in zip(samples, back, strict=True):
        assert_same_panoptic(expected, got)


def test_refuses_to_replace_or_to_write_non_panoptic_samples(tmp_path: Path) -> None:
    source = SyntheticPanoptic(1, size=32)
    write_coco_panoptic([source[0]], tmp_path, source.categories)
    with pytest.raises(DataError, match="overwrite"):
        write_coco_panoptic([source[0]], tmp_path, source.categories)
    plain = {k: v for k, v in source[0].items() if k != "panoptic"}
    with pytest.raises(DataError, match=r"sample 0 \('shape_00000.png'\) has no 'panoptic'"):
        write_coco_panoptic([plain], tmp_path / "b", source.categories)
    with pytest.raises(DataError, match=r"two samples would both be written as 'shape_00000.png'"):
        write_coco_panoptic([source[0], source[0]], tmp_path / "c", source.categories)
    assert not (tmp_path / "c" / "panoptic.json").exists()
