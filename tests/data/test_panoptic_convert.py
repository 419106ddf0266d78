"""Semantic + instances <-> panoptic: hand-built cases, round trips, and the bad-input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelseg.data import SyntheticShapes
from pixelseg.data.panoptic_convert import (
    panoptic_to_semantic_instances,
    semantic_instances_to_panoptic,
)
from pixelseg.data.synthetic import PANOPTIC_CATEGORIES
from pixelseg.errors import DataError, InvalidInputError

# 1, 2 things; 3, 4 stuff.
CATEGORIES = [
    {"id": 1, "isthing": 1},
    {"id": 2, "isthing": 1},
    {"id": 3, "isthing": 0},
    {"id": 4, "isthing": 0},
]


def test_instances_then_stuff_with_void_for_uncovered_things_and_ignore() -> None:
    semantic = np.array([[3, 3, 1, 1], [4, 4, 1, 255], [0, 3, 2, 2]])
    masks = np.zeros((3, 3, 4), bool)
    masks[0, 0, 1:] = True  # a person over (0, 1), which the semantic map calls stuff 3
    masks[1, 2, 2:] = True  # a car
    # masks[2] stays empty: it makes no segment.
    ids, segments = semantic_instances_to_panoptic(
        semantic, masks, [1, 2, 1], CATEGORIES, instance_crowd=[False, True, False]
    )
    # instance 0 -> 1, instance 1 -> 2, stuff 3 -> 3, stuff 4 -> 4; (1, 2) is a person pixel
    # without an instance and (1, 3) is ignore: VOID; 0 is not a category: VOID.
    assert ids.tolist() == [[3, 1, 1, 1], [4, 4, 0, 0], [0, 3, 2, 2]]
    assert segments == [
        {"id": 1, "category_id": 1, "iscrowd": 0, "area": 3, "bbox": [1, 0, 3, 1]},
        {"id": 2, "category_id": 2, "iscrowd": 1, "area": 2, "bbox": [2, 2, 2, 1]},
        {"id": 3, "category_id": 3, "iscrowd": 0, "area": 2, "bbox": [0, 0, 2, 3]},
        {"id": 4, "category_id": 4, "iscrowd": 0, "area": 2, "bbox": [0, 1, 2, 1]},
    ]


def test_round_trip_through_semantic_and_instances() -> None:
    shapes = SyntheticShapes(num_samples=3, size=(40, 48), seed=5)
    for i in range(3):
        target = shapes.instance_target(i)
        ids, segments = target["panoptic"], target["segments_info"]
        split = panoptic_to_semantic_instances(ids, segments, PANOPTIC_CATEGORIES)
        assert np.array_equal(split["masks"], target["masks"].numpy())
        assert np.array_equal(split["labels"], target["labels"].numpy())
        back, back_segments = semantic_instances_to_panoptic(
            split["semantic"], split["masks"], split["labels"], PANOPTIC_CATEGORIES
        )
        # The synthetic ids are instances first, then stuff in category order: the same ids.
        assert np.array_equal(back, ids.numpy())
        keep = ("id", "category_id", "area", "bbox")
        assert [{k: s[k] for k in keep} for s in back_segments] == [
            {k: s[k] for k in keep} for s in segments
        ]


def test_split_gives_void_as_ignore_and_crowd_flags() -> None:
    ids = torch.tensor([[0, 5, 5], [9, 9, 2]])
    segments = [
        {"id": 5, "category_id": 1, "iscrowd": 1},
        {"id": 9, "category_id": 3},
        {"id": 2, "category_id": 2},
    ]
    split = panoptic_to_semantic_instances(ids, segments, CATEGORIES, ignore_index=99)
    assert split["semantic"].tolist() == [[99, 1, 1], [3, 3, 2]]
    assert split["labels"].tolist() == [1, 2] and split["segment_ids"].tolist() == [5, 2]
    assert split["iscrowd"].tolist() == [True, False]
    assert split["masks"].astype(int).tolist() == [[[0, 1, 1], [0, 0, 0]], [[0, 0, 0], [0, 0, 1]]]
    with pytest.raises(DataError, match=r"segment with ID 7 is present"):
        panoptic_to_semantic_instances(ids + (ids == 2) * 5, segments, CATEGORIES)
    with pytest.raises(DataError, match=r"segment with ID 9 has unknown category_id 8"):
        panoptic_to_semantic_instances(
            ids, [*segments[:1], {"id": 9, "category_id": 8}], CATEGORIES
        )


def test_bad_semantic_and_instances_are_named() -> None:
    semantic = np.array([[3, 3], [4, 4]])
    overlap = np.ones((2, 2, 2), bool)
    with pytest.raises(DataError, match=r"instances \[0, 1\] overlap \(first at pixel y=0, x=0\)"):
        semantic_instances_to_panoptic(semantic, overlap, [1, 2], CATEGORIES)
    with pytest.raises(DataError, match=r"instance 0 has label 3, not a thing category \[1, 2\]"):
        semantic_instances_to_panoptic(semantic, overlap[:1], [3], CATEGORIES)
    with pytest.raises(DataError, match=r"values \[7\] that are neither category ids"):
        semantic_instances_to_panoptic(np.array([[7, 3]]), np.zeros((0, 1, 2)), [], CATEGORIES)
    with pytest.raises(InvalidInputError, match=r"\[N, 2, 2\].*got \(1, 3, 2\)"):
        semantic_instances_to_panoptic(semantic, np.zeros((1, 3, 2)), [1], CATEGORIES)
    with pytest.raises(InvalidInputError, match=r"1 instance masks but 2 labels"):
        semantic_instances_to_panoptic(semantic, overlap[:1], [1, 2], CATEGORIES)
