"""Mask R-CNN builder: the detector contract, norms, FPN levels vs anchors, Soft-NMS, weights."""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.ops.misc import FrozenBatchNorm2d

from pixelseg.errors import CheckpointError, InvalidInputError
from pixelseg.models.detection import create_detector, detector_options
from pixelseg.models.detection.maskrcnn import SoftNMSRoIHeads, build_maskrcnn
from pixelseg.models.detection.maskrcnn_backbones import group_norm

TINY = {"min_size": 64, "max_size": 96, "fpn_channels": 16}
SIZES = [(64, 80), (72, 60)]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Run these small-op models on one thread: with the cores busy, two threads measured
    5x slower (25 training steps: 14 s against 3 s), and the results are the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _images() -> list[torch.Tensor]:
    return [torch.rand(3, h, w) for h, w in SIZES]


def _targets() -> list[dict[str, torch.Tensor]]:
    targets = []
    per_image = ([[10, 10, 40, 40]], [[5, 5, 30, 50], [20, 20, 50, 60]])
    for (h, w), boxes in zip(SIZES, per_image, strict=True):
        masks = torch.zeros(len(boxes), h, w, dtype=torch.uint8)
        for i, (x1, y1, x2, y2) in enumerate(boxes):
            masks[i, y1:y2, x1:x2] = 1
        targets.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32),
                "labels": torch.arange(1, len(boxes) + 1),
                "masks": masks,
            }
        )
    return targets


def _has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, _BatchNorm | FrozenBatchNorm2d) for m in model.modules())


def test_registered_with_a_description_and_every_option() -> None:
    # available_detectors() would import every registered builder; read this one directly
    assert inspect.getdoc(build_maskrcnn).splitlines()[0].startswith("Mask R-CNN")
    options = detector_options("maskrcnn")
    assert options[:2] == ["backbone", "norm"] and "soft_nms_sigma" in options
    doc = inspect.getdoc(build_maskrcnn)
    assert all(f"``{name}" in doc for name in options)


@pytest.mark.parametrize("backbone", ["mobilenet_v3_large", "resnet18", "resnet34", "resnet50"])
@pytest.mark.parametrize("norm", ["batch", "frozen_batch", "group"])
def test_every_backbone_and_norm_builds_with_one_anchor_tuple_per_level(
    backbone: str, norm: str
) -> None:
    torch.manual_seed(0)
    model = build_maskrcnn(2, backbone=backbone, norm=norm, **TINY)
    with torch.no_grad():
        levels = model.backbone(torch.rand(1, 3, 64, 96))
    assert len(levels) == len(model.rpn.anchor_generator.sizes)
    assert all(f.shape[1] == 16 for f in levels.values())
    assert _has_batch_norm(model) == (norm != "group")
    # K + 1 outputs: the heads carry the background class
    assert model.roi_heads.box_predictor.cls_score.out_features == 3
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 3


def test_mobilenet_default_levels_are_strides_8_to_64_with_matching_anchors() -> None:
    model = build_maskrcnn(1, fpn_channels=16)
    with torch.no_grad():
        levels = model.backbone(torch.rand(1, 3, 128, 128))
    assert [f.shape[-1] for f in levels.values()] == [16, 8, 4, 2]  # strides 8, 16, 32, 64
    assert model.rpn.anchor_generator.sizes == ((32,), (64,), (128,), (256,))
    four = build_maskrcnn(1, fpn_channels=16, returned_layers=[1, 2, 3, 4])
    with torch.no_grad():
        levels = four.backbone(torch.rand(1, 3, 128, 128))
    assert [f.shape[-1] for f in levels.values()] == [32, 16, 8, 4, 2]
    assert len(four.rpn.anchor_generator.sizes) == 5


def test_group_norm_keeps_two_channels_per_group_and_at_most_32_groups() -> None:
    groups = {c: group_norm(c).num_groups for c in (16, 24, 40, 72, 112, 120, 960, 64, 256)}
    assert groups == {16: 8, 24: 12, 40: 20, 72: 24, 112: 28, 120: 30, 960: 32, 64: 32, 256: 32}


def test_group_norm_reaches_fpn_box_and_mask_heads() -> None:
    model = build_maskrcnn(1, norm="group", box_head_convs=1, **TINY)
    for part in (model.backbone.fpn, model.roi_heads.box_head, model.roi_heads.mask_head):
        assert any(isinstance(m, nn.GroupNorm) for m in part.modules())
    assert not _has_batch_norm(model)


@pytest.mark.parametrize(
    ("backbone", "norm"), [("mobilenet_v3_large", "group"), ("resnet18", "batch")]
)
def test_train_losses_backprop_and_eval_follows_the_contract(backbone: str, norm: str) -> None:
    torch.manual_seed(0)
    model = build_maskrcnn(2, backbone=backbone, norm=norm, **TINY)
    model.train()
    losses = model(_images(), _targets())
    assert set(losses) == {
        "loss_classifier",
        "loss_box_reg",
        "loss_mask",
        "loss_objectness",
        "loss_rpn_box_reg",
    }
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)

    model.eval()
    with torch.no_grad():
        outputs = model(_images())
    for out, (h, w) in zip(outputs, SIZES, strict=True):
        d = out["boxes"].shape[0]
        assert out["boxes"].shape == (d, 4) and out["boxes"].dtype == torch.float32
        assert out["labels"].shape == (d,) and out["labels"].dtype == torch.int64
        assert out["scores"].shape == (d,) and out["scores"].dtype == torch.float32
        assert out["masks"].shape == (d, 1, h, w) and out["masks"].dtype == torch.float32
        assert ((out["labels"] >= 1) & (out["labels"] <= 2)).all()
        assert (out["scores"][:-1] >= out["scores"][1:]).all()
        assert (out["masks"] >= 0).all() and (out["masks"] <= 1).all()


def test_min_size_list_draws_per_batch_in_training_and_uses_the_last_in_eval() -> None:
    model = build_maskrcnn(1, min_size=[48, 64], max_size=200, **{"fpn_channels": 16})
    image = [torch.rand(3, 100, 100)]
    model.transform.eval()
    assert model.transform(image)[0].image_sizes == [(64, 64)]
    model.transform.train()
    torch.manual_seed(0)
    seen = {model.transform(image)[0].image_sizes[0] for _ in range(20)}
    assert seen == {(48, 48), (64, 64)}


def _postprocess(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Two proposals of class 1 with IoU 1/3, class probabilities 0.9 and 0.8."""
    proposals = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 5.0, 10.0, 15.0]])]
    probs = torch.tensor([0.9, 0.8])
    logits = torch.stack([torch.zeros(2), torch.log(probs / (1 - probs))], dim=1)
    boxes, scores, labels = model.roi_heads.postprocess_detections(
        logits, torch.zeros(2, 8), proposals, [(20, 20)]
    )
    assert (labels[0] == 1).all()
    return boxes[0], scores[0]


def test_soft_nms_keeps_both_overlapping_boxes_with_the_gaussian_decay() -> None:
    options = {**TINY, "box_nms_thresh": 0.3}
    soft = build_maskrcnn(1, nms="soft", soft_nms_sigma=0.5, **options)
    assert isinstance(soft.roi_heads, SoftNMSRoIHeads)
    boxes, scores = _postprocess(soft)
    assert boxes.tolist() == [[0, 0, 10, 10], [0, 5, 10, 15]]
    expected = torch.tensor([0.9, 0.8 * math.exp(-((1 / 3) ** 2) / 0.5)])
    torch.testing.assert_close(scores, expected)

    boxes, scores = _postprocess(build_maskrcnn(1, nms="hard", **options))
    assert boxes.tolist() == [[0, 0, 10, 10]]
    torch.testing.assert_close(scores, torch.tensor([0.9]))


@pytest.mark.parametrize(
    ("backbone", "saved_key", "model_key"),
    [
        ("resnet18", "conv1.weight", "body.conv1.weight"),
        ("mobilenet_v3_large", "features.0.0.weight", "body.0.0.weight"),
    ],
)
def test_backbone_weights_initialise_the_body(
    tmp_path: Path, backbone: str, saved_key: str, model_key: str
) -> None:
    torch.manual_seed(1)
    state = getattr(torchvision.models, backbone)(weights=None).state_dict()
    path = tmp_path / f"{backbone}.pth"
    torch.save(state, path)
    torch.manual_seed(2)
    model = build_maskrcnn(1, backbone=backbone, backbone_weights=str(path), **TINY)
    loaded = dict(model.backbone.named_parameters())[model_key]
    torch.testing.assert_close(loaded, state[saved_key])
    # with weights, only the 3 deepest stages train by default (torchvision's choice)
    assert not loaded.requires_grad
    assert any(p.requires_grad for p in model.backbone.body.parameters())


def test_backbone_weights_errors_name_the_file_and_the_keys(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match=str(missing).replace(".", r"\.")):
        build_maskrcnn(1, backbone="resnet18", backbone_weights=missing, **TINY)
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"r18\.pth.*running_mean"):
        build_maskrcnn(1, backbone="resnet18", norm="group", backbone_weights=path, **TINY)


def test_unknown_and_bad_options_are_named() -> None:
    with pytest.raises(InvalidInputError, match=r"'bogus'.*soft_nms_sigma"):
        create_detector("maskrcnn", 2, bogus=1)
    with pytest.raises(InvalidInputError, match="did you mean 'backbone'"):
        create_detector("maskrcnn", 2, backbon="resnet18")
    with pytest.raises(InvalidInputError, match="resnet18"):
        build_maskrcnn(1, backbone="resnet19")
    with pytest.raises(InvalidInputError, match="returned_layers"):
        build_maskrcnn(1, returned_layers=[0, 1])
    with pytest.raises(InvalidInputError, match="anchor_sizes needs one entry per FPN output: 4"):
        build_maskrcnn(1, anchor_sizes=[16, 32, 64])


@pytest.mark.slow
def test_learns_one_square() -> None:
    torch.manual_seed(0)
    image = torch.rand(3, 64, 64) * 0.2
    image[:, 16:48, 16:48] += 0.7
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 16:48, 16:48] = 1
    target = {
        "boxes": torch.tensor([[16.0, 16, 48, 48]]),
        "labels": torch.tensor([1]),
        "masks": masks,
    }
    model = build_maskrcnn(1, norm="group", **TINY)
    model.train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    totals = []
    for _ in range(25):
        loss = sum(model([image], [target]).values())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        totals.append(loss.item())
    assert sum(totals[-5:]) / 5 < 0.7 * sum(totals[:5]) / 5
