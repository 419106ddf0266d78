import math

import pytest
import torch
from torchvision.ops import nms

from pixelseg.errors import InvalidInputError
from pixelseg.ops import batched_soft_nms, soft_nms


def test_hand_computed_decay():
    # Box 1 overlaps box 0 with IoU 50/150 = 1/3; box 2 is far away.
    boxes = torch.tensor([[0, 0, 10, 10], [5, 0, 15, 10], [50, 50, 60, 60]], dtype=torch.float)
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep, decayed = soft_nms(boxes, scores, sigma=0.5)
    expected_1 = 0.8 * math.exp(-((1 / 3) ** 2) / 0.5)  # 0.6982, below box 2's 0.7
    assert keep.tolist() == [0, 2, 1]
    assert decayed.tolist() == pytest.approx([0.9, 0.7, expected_1], abs=1e-6)


def test_decay_is_cumulative_over_picks():
    # Box 2 overlaps both earlier picks and decays twice.
    boxes = torch.tensor([[0, 0, 10, 10], [20, 0, 30, 10], [5, 0, 25, 10]], dtype=torch.float)
    scores = torch.tensor([0.9, 0.85, 0.8])
    keep, decayed = soft_nms(boxes, scores, sigma=0.5)
    iou = 50 / 250  # box 2 (20x10) against either 10x10 box: overlap 5x10
    assert keep.tolist() == [0, 1, 2]
    assert float(decayed[2]) == pytest.approx(0.8 * math.exp(-(iou**2) / 0.5) ** 2, abs=1e-6)


def test_tiny_sigma_is_hard_nms_at_zero_overlap():
    torch.manual_seed(0)
    xy = torch.rand(60, 2) * 100
    boxes = torch.cat([xy, xy + 5 + torch.rand(60, 2) * 20], dim=1)
    scores = torch.rand(60)
    keep, _ = soft_nms(boxes, scores, sigma=1e-9, score_threshold=1e-3)
    hard = nms(boxes, scores, iou_threshold=1e-9)
    assert sorted(keep.tolist()) == sorted(hard.tolist())


def test_score_threshold_and_max_detections():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [40, 40, 50, 50]], dtype=torch.float)
    scores = torch.tensor([0.9, 0.8, 0.0005])
    keep, decayed = soft_nms(boxes, scores, sigma=0.5, score_threshold=0.001)
    # The duplicate decays to 0.8 * exp(-2) = 0.108 and stays; the low box never enters.
    assert keep.tolist() == [0, 1]
    assert float(decayed[1]) == pytest.approx(0.8 * math.exp(-2.0), abs=1e-6)
    keep, _ = soft_nms(boxes, scores, sigma=0.5, max_detections=1)
    assert keep.tolist() == [0]


def test_batched_keeps_classes_apart():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=torch.float)
    scores = torch.tensor([0.9, 0.8])
    keep, decayed = batched_soft_nms(boxes, scores, torch.tensor([1, 2]))
    assert keep.tolist() == [0, 1]
    assert decayed.tolist() == pytest.approx([0.9, 0.8])
    keep, decayed = batched_soft_nms(boxes, scores, torch.tensor([1, 1]))
    assert decayed.tolist() == pytest.approx([0.9, 0.8 * math.exp(-2.0)], abs=1e-6)


def test_empty_and_bad_shapes():
    keep, scores = soft_nms(torch.zeros(0, 4), torch.zeros(0))
    assert keep.numel() == 0 and scores.numel() == 0
    with pytest.raises(InvalidInputError, match="boxes must be"):
        soft_nms(torch.zeros(3), torch.zeros(3))
    with pytest.raises(InvalidInputError, match="sigma"):
        soft_nms(torch.zeros(1, 4), torch.zeros(1), sigma=0)
