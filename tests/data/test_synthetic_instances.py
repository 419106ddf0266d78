"""SyntheticInstances: the instance view of the shapes equals SyntheticShapes' own targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelseg.data import SHAPE_CLASSES, SyntheticInstances, SyntheticShapes
from pixelseg.errors import InvalidInputError


def test_sample_keys_dtypes_and_shapes() -> None:
    sample = SyntheticInstances(3, size=(48, 64), seed=1)[2]
    n = len(sample["labels"])
    assert n >= 1
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, 48, 64)
    assert float(sample["image"].min()) >= 0.0 and float(sample["image"].max()) <= 1.0
    assert sample["boxes"].dtype == torch.float32 and sample["boxes"].shape == (n, 4)
    assert sample["labels"].dtype == torch.int64
    assert sample["masks"].dtype == torch.uint8 and sample["masks"].shape == (n, 48, 64)
    assert sample["iscrowd"].dtype == torch.int64 and not sample["iscrowd"].any()
    assert sample["area"].dtype == torch.float64
    assert sample["image_id"] == 3 and sample["name"] == "shape_00002"
    assert sample["image_path"] == ""


@pytest.mark.parametrize("index", range(6))
def test_targets_equal_instance_target_and_image_equals_generate(index: int) -> None:
    dataset = SyntheticInstances(6, size=64, seed=3, rotation=30.0)
    sample = dataset[index]
    target = dataset.instance_target(index)
    torch.testing.assert_close(sample["masks"], target["masks"].to(torch.uint8))
    torch.testing.assert_close(sample["boxes"], target["boxes"])
    torch.testing.assert_close(sample["labels"], target["labels"])
    assert sample["labels"].min() >= 1 and sample["labels"].max() <= 3
    torch.testing.assert_close(sample["area"], sample["masks"].flatten(1).sum(1).to(torch.float64))
    image, semantic = dataset.generate(index)
    expected = torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32) / 255.0)
    torch.testing.assert_close(sample["image"], expected)
    # Each instance's pixels carry its label in the semantic mask.
    for mask, label in zip(sample["masks"], sample["labels"], strict=True):
        assert (semantic[mask.numpy() == 1] == int(label)).all()


def test_same_scenes_as_synthetic_shapes_and_deterministic() -> None:
    a = SyntheticInstances(4, size=40, seed=7)
    b = SyntheticInstances(4, size=40, seed=7)
    shapes = SyntheticShapes(4, size=40, seed=7)
    for i in (3, 0):  # any order reproduces a sample
        sa, sb = a[i], b[i]
        for key in ("image", "boxes", "labels", "masks", "area"):
            torch.testing.assert_close(sa[key], sb[key])
        torch.testing.assert_close(sa["image"], shapes[i]["image"])
    other = SyntheticInstances(4, size=40, seed=8)[3]
    assert not torch.equal(a[3]["image"], other["image"])


def test_classes_and_categories() -> None:
    dataset = SyntheticInstances(1)
    assert dataset.classes == ["circle", "square", "triangle"] == SHAPE_CLASSES[1:]
    assert [c["id"] for c in dataset.categories] == [1, 2, 3]
    assert [c["name"] for c in dataset.categories] == dataset.classes
    assert dataset.num_classes == 4  # background included, as torchvision detection counts


def test_options_are_checked_like_synthetic_shapes() -> None:
    with pytest.raises(InvalidInputError, match="max_shapes"):
        SyntheticInstances(2, min_shapes=3, max_shapes=2)
    with pytest.raises(IndexError):
        SyntheticInstances(2)[2]
