"""YOLACT: the detector contract, hand-checked matching, OHEM, Fast NMS, box coding, options."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import nms

from pixelseg.errors import CheckpointError, InvalidInputError
from pixelseg.models.detection import create_detector, detector_options
from pixelseg.models.detection.yolact import build_yolact
from pixelseg.models.detection.yolact_head import decode_boxes, encode_boxes, make_anchors
from pixelseg.models.detection.yolact_loss import match_anchors, ohem_negatives
from pixelseg.models.detection.yolact_post import (
    DetectionSettings,
    batched_box_iou,
    fast_nms,
    paste_masks,
    select_detections,
)

TINY = {"min_size": 64, "max_size": 96, "fpn_channels": 32}
LOSS_KEYS = {"loss_classifier", "loss_box_reg", "loss_mask", "loss_semantic"}


def _square_target(height: int, width: int, box: tuple[int, int, int, int], label: int = 1):
    x1, y1, x2, y2 = box
    masks = torch.zeros(1, height, width, dtype=torch.uint8)
    masks[0, y1:y2, x1:x2] = 1
    return {
        "boxes": torch.tensor([box], dtype=torch.float32),
        "labels": torch.tensor([label]),
        "masks": masks,
    }


def _batch():
    images = [torch.rand(3, 64, 80), torch.rand(3, 72, 56)]
    second = _square_target(72, 56, (5, 30, 40, 65), label=2)
    extra = _square_target(72, 56, (8, 4, 30, 24), label=1)
    second = {k: torch.cat([second[k], extra[k]]) for k in second}
    return images, [_square_target(64, 80, (20, 10, 50, 40)), second]


def test_train_returns_finite_losses_that_reach_every_head() -> None:
    torch.manual_seed(0)
    model = build_yolact(2, **TINY).train()
    images, targets = _batch()
    losses = model(images, targets)
    assert set(losses) == LOSS_KEYS
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    for name, module in [
        ("protonet", model.protonet),
        ("head.cls", model.head.cls),
        ("head.box", model.head.box),
        ("head.coef", model.head.coef),
        ("semantic", model.semantic),
        ("fpn", model.fpn),
    ]:
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads), name
        assert any(float(g.abs().sum()) > 0 for g in grads), name


def test_train_needs_targets_and_checks_labels() -> None:
    model = build_yolact(2, **TINY).train()
    images, targets = _batch()
    with pytest.raises(InvalidInputError, match="targets"):
        model(images)
    targets[0]["labels"] = torch.tensor([3])
    with pytest.raises(InvalidInputError, match=r"1\.\.2"):
        model(images, targets)


def test_eval_follows_the_contract_at_each_input_size() -> None:
    torch.manual_seed(0)
    model = build_yolact(3, **TINY).eval()
    images = [torch.rand(3, 64, 80), torch.rand(3, 50, 90)]
    with torch.no_grad():
        outputs = model(images)
    assert len(outputs) == 2
    for image, out in zip(images, outputs, strict=True):
        d = out["boxes"].shape[0]
        assert 0 < d <= 100
        assert out["labels"].shape == (d,) and out["labels"].dtype == torch.int64
        assert int(out["labels"].min()) >= 1 and int(out["labels"].max()) <= 3
        assert out["scores"].shape == (d,)
        assert torch.all(out["scores"][:-1] >= out["scores"][1:])  # best first
        assert out["masks"].shape == (d, 1, *image.shape[-2:])
        assert float(out["masks"].min()) >= 0 and float(out["masks"].max()) <= 1
        h, w = image.shape[-2:]
        assert float(out["boxes"][:, 2].max()) <= w and float(out["boxes"][:, 3].max()) <= h
        # Masks are cropped to their box (Sec. 3.4): nothing a pixel away from it.
        x1, y1, x2, y2 = out["boxes"][0].floor().long().tolist()
        outside = out["masks"][0, 0].clone()
        outside[max(y1 - 1, 0) : y2 + 2, max(x1 - 1, 0) : x2 + 2] = 0
        assert float(outside.abs().max()) == 0


def test_eval_without_detections_returns_empty_tensors_of_the_right_shape() -> None:
    model = build_yolact(2, score_thresh=1.0, **TINY).eval()
    with torch.no_grad():
        (out,) = model([torch.rand(3, 60, 70)])
    assert out["boxes"].shape == (0, 4)
    assert out["labels"].shape == (0,) and out["labels"].dtype == torch.int64
    assert out["scores"].shape == (0,)
    assert out["masks"].shape == (0, 1, 60, 70)


def test_matching_positive_ignored_negative_and_best_anchor() -> None:
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    labels = torch.tensor([2])
    # Same left/top/right edges as the GT and heights 6, 4.5, 2: IoU 0.6, 0.45, 0.2.
    anchors = torch.tensor([[0, 0, 10, 6], [0, 0, 10, 4.5], [0, 0, 10, 2]], dtype=torch.float32)
    assigned, matched = match_anchors(gt, labels, anchors, pos_iou=0.5, neg_iou=0.4)
    assert assigned.tolist() == [2, -1, 0]
    assert matched[0] == 0
    # Without the 0.6 anchor, the GT's best anchor (IoU 0.45) is still positive.
    assigned, _ = match_anchors(gt, labels, anchors[1:], pos_iou=0.5, neg_iou=0.4)
    assert assigned.tolist() == [2, 0]
    # No GT: everything is background.
    assigned, _ = match_anchors(torch.zeros(0, 4), labels[:0], anchors, 0.5, 0.4)
    assert assigned.tolist() == [0, 0, 0]


def test_ohem_keeps_three_hardest_negatives_per_positive() -> None:
    # One positive (anchor 0), one ignored (anchor 1, the highest loss), 8 negatives.
    labels = torch.tensor([[1, -1, 0, 0, 0, 0, 0, 0, 0, 0]])
    background_loss = torch.tensor([[9.0, 8.0, 0.1, 5.0, 0.3, 4.0, 0.2, 3.0, 0.5, 0.4]])
    negatives = ohem_negatives(background_loss, labels, ratio=3)
    assert negatives[0].nonzero().squeeze(1).tolist() == [3, 5, 7]
    # Built from logits as the loss does: the background loss is logsumexp - logit_0.
    logits = torch.zeros(1, 10, 3)
    logits[0, :, 1] = background_loss[0]  # a high class-1 logit is a hard negative
    from_logits = torch.logsumexp(logits, -1) - logits[..., 0]
    assert ohem_negatives(from_logits, labels, 3)[0].nonzero().squeeze(1).tolist() == [3, 5, 7]
    # Two images: per-image budget, and an image without positives takes no negatives.
    two = ohem_negatives(background_loss.repeat(2, 1), torch.cat([labels, labels * 0]), 3)
    assert two.sum(dim=1).tolist() == [3, 0]


def _fast_nms_by_definition(boxes: torch.Tensor, threshold: float) -> list[bool]:
    # Sec. 3.5: keep j iff max_{i<j} IoU(i, j) <= threshold, suppressed or not.
    iou = torchvision.ops.box_iou(boxes, boxes)
    return [all(float(iou[i, j]) <= threshold for i in range(j)) for j in range(len(boxes))]


def test_fast_nms_chain_differs_from_hard_nms() -> None:
    # A > B > C: IoU(A, B) = IoU(B, C) = 0.6 > 0.5, IoU(A, C) = 0.25.
    boxes = torch.tensor([[0, 0, 10, 10], [2.5, 0, 12.5, 10], [5, 0, 15, 10]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep = fast_nms(boxes[None], scores[None], 0.5)[0]
    assert keep.tolist() == [True, False, False] == _fast_nms_by_definition(boxes, 0.5)
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]  # hard NMS keeps C: B was removed


def test_fast_nms_equals_definition_on_random_boxes_per_class() -> None:
    torch.manual_seed(1)
    xy = torch.rand(2, 30, 2) * 40
    boxes = torch.cat([xy, xy + 5 + torch.rand(2, 30, 2) * 15], dim=-1)
    scores = torch.rand(2, 30).sort(dim=1, descending=True).values
    keep = fast_nms(boxes, scores, 0.5)
    for c in range(2):
        assert keep[c].tolist() == _fast_nms_by_definition(boxes[c], 0.5)
    iou = batched_box_iou(boxes, boxes)
    torch.testing.assert_close(iou[1], torchvision.ops.box_iou(boxes[1], boxes[1]))


def test_box_encode_decode_round_trip() -> None:
    anchors = torch.tensor([[0, 0, 10, 20], [5, 5, 45, 25], [-3, 2, 3, 8]], dtype=torch.float32)
    boxes = torch.tensor([[1, 2, 13, 18], [0, 10, 50, 20], [-1, 0, 4, 9]], dtype=torch.float32)
    offsets = encode_boxes(boxes, anchors)
    torch.testing.assert_close(decode_boxes(offsets, anchors), boxes)
    # SSD variances: a 1-pixel centre shift of a 10-wide anchor encodes as 0.1 / 0.1 = 1.
    shifted = encode_boxes(anchors[:1] + torch.tensor([1.0, 0, 1, 0]), anchors[:1])
    torch.testing.assert_close(shifted, torch.tensor([[1.0, 0, 0, 0]]))


def test_anchors_per_level_hand_checked() -> None:
    anchors = make_anchors([(2, 2), (1, 1)], (16, 16), (4.0, 8.0), (1.0, 0.5, 2.0))
    assert anchors.shape == (2 * 2 * 3 + 1 * 1 * 3, 4)
    torch.testing.assert_close(anchors[0], torch.tensor([2.0, 2, 6, 6]))  # cell (0, 0), ratio 1
    r = math.sqrt(0.5)  # ratio 1/2: width 4 * sqrt(1/2), height 4 / sqrt(1/2)
    torch.testing.assert_close(
        anchors[1], torch.tensor([4 - 2 * r, 4 - 2 / r, 4 + 2 * r, 4 + 2 / r])
    )
    torch.testing.assert_close(anchors[3], torch.tensor([10.0, 2, 14, 6]))  # cell (0, 1)
    torch.testing.assert_close(anchors[12], torch.tensor([4.0, 4, 12, 12]))  # P-next, centre 8


def test_pasted_masks_land_where_the_prototypes_put_them() -> None:
    # Padded batch 32x32 with this image resized to 32x24 at its top-left; the original is
    # 64x48 (scale 2). Prototypes (stride 4) are +20 on proto rows 2..3, columns 1..2, that
    # is padded pixels y 8..16, x 4..12, so original pixels y 16..32, x 8..24.
    protos = torch.full((1, 8, 8), -20.0)
    protos[0, 2:4, 1:3] = 20.0
    whole = torch.tensor([[0.0, 0.0, 48.0, 64.0]])
    masks = paste_masks(protos, torch.ones(1, 1), whole, (32, 24), (32, 32), (64, 48))
    assert masks.shape == (1, 1, 64, 48)
    # Through the block's middle (bilinear rounds its corners), the edges are exact.
    inside = masks[0, 0] > 0.5
    assert inside[24].nonzero().squeeze(1).tolist() == list(range(8, 24))
    assert inside[:, 16].nonzero().squeeze(1).tolist() == list(range(16, 32))
    # The crop to the box zeroes everything outside it (here: columns from 16 on).
    box = torch.tensor([[0.0, 0, 16, 64]])
    cropped = paste_masks(protos, torch.ones(1, 1), box, (32, 24), (32, 32), (64, 48))
    assert (cropped[0, 0, 24] > 0.5).nonzero().squeeze(1).tolist() == list(range(8, 16))
    assert float(cropped[0, 0, :, 16:].max()) == 0


def test_soft_nms_keeps_overlapping_boxes_with_decayed_scores() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [30, 30, 40, 40]], dtype=torch.float32)
    class_scores = torch.tensor([[0.9], [0.8], [0.6]])  # one class
    iou = 90 / 110
    soft = DetectionSettings(nms="soft", soft_nms_sigma=0.5)
    _, labels, scores, kept = select_detections(class_scores, boxes, soft)
    assert labels.tolist() == [1, 1, 1]
    assert scores.tolist() == pytest.approx([0.9, 0.6, 0.8 * math.exp(-(iou**2) / 0.5)], abs=1e-6)
    torch.testing.assert_close(kept[2], boxes[1])
    for hard in ("fast", "hard"):  # both drop the overlapping box
        index, _, _, _ = select_detections(class_scores, boxes, DetectionSettings(nms=hard))
        assert index.tolist() == [0, 2]


def test_group_norm_has_no_batchnorm_and_trains() -> None:
    torch.manual_seed(0)
    model = build_yolact(2, norm="group", **TINY).train()
    kinds = {type(m) for m in model.modules()}
    assert nn.GroupNorm in kinds
    assert not any(issubclass(k, nn.modules.batchnorm._BatchNorm) for k in kinds)
    images, targets = _batch()
    losses = model(images[:1], targets[:1])
    assert all(torch.isfinite(v) for v in losses.values())


def test_focal_classifier_trains_and_detects() -> None:
    torch.manual_seed(0)
    model = build_yolact(2, classifier="focal", nms="hard", **TINY).train()
    assert model.head.cls.out_channels == 3 * 2  # K sigmoid logits per anchor, no background
    images, targets = _batch()
    losses = model(images, targets)
    assert set(losses) == LOSS_KEYS and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    with torch.no_grad():
        (out,) = model.eval()(images[:1])
    assert out["masks"].shape[1:] == (1, 64, 80)


def test_options_are_checked_by_name() -> None:
    assert "nms_thresh" in detector_options("yolact")
    with pytest.raises(InvalidInputError, match="bogus"):
        create_detector("yolact", 2, bogus=1)
    with pytest.raises(InvalidInputError, match="did you mean 'fpn_channels'"):
        create_detector("yolact", 2, fpn_channel=32)
    with pytest.raises(InvalidInputError, match="resnet99"):
        build_yolact(2, backbone="resnet99")
    with pytest.raises(InvalidInputError, match="neg_iou"):
        build_yolact(2, pos_iou=0.4, neg_iou=0.5)
    with pytest.raises(InvalidInputError, match="anchor_sizes"):
        build_yolact(2, anchor_sizes=(8, 16))


def test_backbone_weights_load_locally_and_missing_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pt"
    with pytest.raises(CheckpointError, match=r"resnet18\.pt"):
        build_yolact(1, backbone_weights=path, **TINY)
    torch.manual_seed(3)
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), path)  # fc.* included: must be ignored
    model = build_yolact(1, backbone_weights=path, **TINY)
    torch.testing.assert_close(
        model.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight
    )
    grouped = build_yolact(1, backbone_weights=path, norm="group", **TINY)
    torch.testing.assert_close(grouped.backbone.conv1.weight, reference.conv1.weight)


def test_a_few_adam_steps_on_one_square_reduce_the_loss() -> None:
    torch.manual_seed(0)
    model = build_yolact(1, min_size=64, max_size=64, fpn_channels=32, norm="group").train()
    image = torch.full((3, 64, 64), 0.2)
    image[:, 16:48, 20:52] = 0.9
    target = _square_target(64, 64, (20, 16, 52, 48))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    start, history = time.perf_counter(), []
    for _ in range(30):
        loss = sum(model([image], [target]).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
        if time.perf_counter() - start > 15:
            pytest.skip("machine too loaded for the 30-step learning check")
    assert sum(history[-3:]) / 3 < 0.5 * sum(history[:3]) / 3
