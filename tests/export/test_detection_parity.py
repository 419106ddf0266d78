"""Paired detections: the parity check of exported detectors pairs detections by box IoU
and label, then measures boxes, scores and masks of each pair (hand-computed cases)."""

from __future__ import annotations

import pytest
import torch

from pixelseg.export import DetectionTolerance, compare_detections

TOLERANCE = DetectionTolerance()


def detections(boxes, labels, scores, masks=None, size=(8, 8)) -> dict[str, torch.Tensor]:
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    if masks is None:
        masks = torch.zeros(len(boxes), 1, *size)
        for i, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
            masks[i, 0, y1:y2, x1:x2] = 0.9
    return {
        "boxes": boxes,
        "labels": torch.tensor(labels, dtype=torch.int64),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "masks": masks,
    }


def test_identical_detections_in_another_order_pair_exactly():
    expected = detections([[0, 0, 4, 4], [4, 4, 8, 8]], [1, 2], [0.9, 0.6])
    got = detections([[4, 4, 8, 8], [0, 0, 4, 4]], [2, 1], [0.6, 0.9])
    diff = compare_detections(expected, got, TOLERANCE)
    assert (diff.expected, diff.got, diff.matched, diff.unexplained) == (2, 2, 2, 0)
    assert diff.max_box_px == 0 and diff.max_score == 0 and diff.min_mask_iou == 1.0
    assert diff.failures(TOLERANCE) == []


def test_box_and_score_differences_of_a_pair_are_measured():
    expected = detections([[0, 0, 4, 4], [4, 4, 8, 8]], [1, 2], [0.9, 0.6])
    got = detections([[0, 0, 4.25, 4], [4, 4, 8, 8]], [1, 2], [0.9, 0.603])
    diff = compare_detections(expected, got, TOLERANCE)
    assert diff.matched == 2
    assert diff.max_box_px == pytest.approx(0.25)
    assert diff.max_score == pytest.approx(0.003, abs=1e-6)
    problems = diff.failures(TOLERANCE)
    assert problems == [
        "max box difference 0.25 px > 0.1 px",
        "max score difference 0.003 > 0.001",
    ]


def test_mask_iou_is_that_of_the_binarised_masks():
    masks_e = torch.zeros(1, 1, 4, 4)
    masks_e[0, 0, 0, :] = 0.8  # 4 pixels above 0.5
    masks_g = masks_e.clone()
    masks_g[0, 0, 0, 3] = 0.4  # dropped below 0.5
    masks_g[0, 0, 1, 0] = 0.6  # added
    expected = detections([[0, 0, 4, 4]], [1], [0.9], masks_e)
    got = detections([[0, 0, 4, 4]], [1], [0.9], masks_g)
    diff = compare_detections(expected, got, TOLERANCE)
    assert diff.min_mask_iou == pytest.approx(3 / 5)  # 3 shared of 5 in either
    assert diff.max_mask_prob == pytest.approx(0.6)
    assert (diff.mask_pixels, diff.mask_pixels_equal) == (16, 14)
    assert diff.failures(TOLERANCE) == [
        "mask IoU 0.6000 < 0.99 (pooled over pairs; smallest pair 0.6000)"
    ]


def test_mask_iou_is_pooled_over_the_pairs():
    """A tiny mask that differs by a pixel does not fail a check dominated by big masks."""
    masks_e = torch.zeros(2, 1, 16, 16)
    masks_e[0, 0, :10, :10] = 0.9  # 100 pixels, identical in both
    masks_e[1, 0, 15, 0:2] = 0.9  # 2 pixels
    masks_g = masks_e.clone()
    masks_g[1, 0, 15, 2] = 0.9  # 3 pixels: this pair's IoU is 2 / 3
    boxes = [[0, 0, 10, 10], [0, 14, 4, 16]]
    diff = compare_detections(
        detections(boxes, [1, 2], [0.9, 0.8], masks_e),
        detections(boxes, [1, 2], [0.9, 0.8], masks_g),
        TOLERANCE,
    )
    assert diff.min_mask_iou == pytest.approx(2 / 3)
    assert (diff.mask_inter, diff.mask_union) == (102, 103)
    assert diff.mask_iou == pytest.approx(102 / 103) and diff.failures(TOLERANCE) == []


def test_different_labels_or_distant_boxes_are_not_paired():
    expected = detections([[0, 0, 4, 4], [0, 0, 2, 2]], [1, 1], [0.9, 0.7])
    got = detections([[0, 0, 4, 4], [6, 6, 8, 8]], [2, 1], [0.9, 0.7])
    diff = compare_detections(expected, got, TOLERANCE)
    assert diff.matched == 0 and diff.unexplained == 4
    assert (
        "4 detection(s) without a partner (PyTorch 2, onnxruntime 2, 0 paired)"
        in (diff.failures(TOLERANCE)[0])
    )


def test_a_detection_lost_at_the_score_threshold_is_borderline():
    expected = detections([[0, 0, 4, 4], [4, 4, 8, 8]], [1, 2], [0.9, 0.0505])
    got = detections([[0, 0, 4, 4]], [1], [0.9])
    diff = compare_detections(expected, got, TOLERANCE, score_threshold=0.05)
    assert (diff.matched, diff.borderline, diff.unexplained) == (1, 1, 0)
    assert diff.failures(TOLERANCE) == []
    # The same detection scoring well above the threshold cannot vanish by rounding.
    expected["scores"][1] = 0.3
    diff = compare_detections(expected, got, TOLERANCE, score_threshold=0.05)
    assert (diff.borderline, diff.unexplained) == (0, 1)


def test_a_detection_lost_at_the_detections_per_image_cap_is_borderline():
    # Both kept 2 (the cap); their last detections differ and score within tolerance.
    expected = detections([[0, 0, 4, 4], [4, 4, 8, 8]], [1, 2], [0.9, 0.4001])
    got = detections([[0, 0, 4, 4], [0, 4, 4, 8]], [1, 1], [0.9, 0.4])
    diff = compare_detections(expected, got, TOLERANCE, max_detections=2)
    assert (diff.matched, diff.borderline, diff.unexplained) == (1, 2, 0)
    diff = compare_detections(expected, got, TOLERANCE, max_detections=5)  # cap not reached
    assert diff.unexplained == 2


def test_merged_diffs_add_counts_and_keep_the_worst():
    near = detections([[0, 0, 4.05, 4]], [1], [0.9])
    one = compare_detections(detections([[0, 0, 4, 4]], [1], [0.9]), near, TOLERANCE)
    two = compare_detections(detections([], [], []), detections([], [], []), TOLERANCE)
    total = one.merge(two).merge(one)
    assert (total.expected, total.got, total.matched) == (2, 2, 2)
    assert total.max_box_px == pytest.approx(0.05, abs=1e-6) and total.min_mask_iou == 1.0
