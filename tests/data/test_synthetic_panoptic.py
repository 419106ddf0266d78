"""SyntheticPanoptic: the instance sample of SyntheticInstances plus consistent dense maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelseg.data import (
    PANOPTIC_CATEGORIES,
    SyntheticInstances,
    SyntheticPanoptic,
    SyntheticShapes,
)

INSTANCE_KEYS = ("image", "boxes", "labels", "masks", "iscrowd", "area", "image_id", "name")


def test_sample_keys_and_dtypes() -> None:
    sample = SyntheticPanoptic(3, size=(40, 56), seed=1)[2]
    assert list(sample) == [
        "image",
        "boxes",
        "labels",
        "masks",
        "iscrowd",
        "area",
        "semantic",
        "panoptic",
        "segments_info",
        "image_id",
        "name",
        "image_path",
    ]
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, 40, 56)
    assert sample["semantic"].dtype == torch.int64 and sample["semantic"].shape == (40, 56)
    assert sample["panoptic"].dtype == torch.int64 and sample["panoptic"].shape == (40, 56)
    assert (sample["image_id"], sample["name"], sample["image_path"]) == (3, "shape_00002", "")
    for seg in sample["segments_info"]:
        assert set(seg) == {"id", "category_id", "iscrowd", "isthing", "area", "bbox"}
        assert all(type(seg[k]) is int for k in ("id", "category_id", "iscrowd", "area"))


@pytest.mark.parametrize("index", range(5))
def test_maps_agree_with_each_other_and_with_the_instances(
    index: int, check_panoptic_sample
) -> None:
    dataset = SyntheticPanoptic(5, size=48, seed=4, rotation=45.0, max_shapes=6)
    sample = dataset[index]
    check_panoptic_sample(sample, [1, 2, 3], [4, 5])
    # Every pixel is labelled; things are where SyntheticShapes draws a shape.
    _, shapes = SyntheticShapes(5, size=48, seed=4, rotation=45.0, max_shapes=6).generate(index)
    np.testing.assert_array_equal(sample["semantic"].numpy() == 0, shapes > 0)
    assert (sample["panoptic"] > 0).all()
    target = dataset.instance_target(index)
    torch.testing.assert_close(sample["panoptic"], target["panoptic"], rtol=0, atol=0)
    assert [s["id"] for s in sample["segments_info"]] == [s["id"] for s in target["segments_info"]]


def test_instances_equal_synthetic_instances() -> None:
    panoptic = SyntheticPanoptic(4, size=40, seed=9)
    instances = SyntheticInstances(4, size=40, seed=9)
    for i in range(4):
        a, b = panoptic[i], instances[i]
        for key in INSTANCE_KEYS:
            if isinstance(b[key], torch.Tensor):
                torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
            else:
                assert a[key] == b[key]


def test_deterministic_per_seed_and_index() -> None:
    a, b = SyntheticPanoptic(4, size=32, seed=7), SyntheticPanoptic(4, size=32, seed=7)
    first = a[3]
    for _ in range(2):
        b[0]  # another index first: any order reproduces a sample
    again = b[3]
    for key in ("image", "masks", "semantic", "panoptic"):
        torch.testing.assert_close(first[key], again[key], rtol=0, atol=0)
    assert first["segments_info"] == again["segments_info"]
    assert not torch.equal(first["image"], SyntheticPanoptic(4, size=32, seed=8)[3]["image"])


def test_category_attributes() -> None:
    dataset = SyntheticPanoptic(1, size=32)
    assert dataset.categories == PANOPTIC_CATEGORIES
    assert dataset.thing_category_ids == [1, 2, 3]
    assert dataset.stuff_category_ids == [4, 5]
    assert dataset.classes == ["circle", "square", "triangle"]
    assert dataset.stuff_classes == ["stripes", "blotches"]
    assert isinstance(dataset, SyntheticShapes)
    assert "SyntheticPanoptic(1 samples" in repr(dataset)
