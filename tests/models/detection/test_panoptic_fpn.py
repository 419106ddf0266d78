"""Panoptic FPN: factory, joint losses and weights, semantic target geometry, eval outputs."""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pixelseg.errors import InvalidInputError
from pixelseg.models.detection import (
    DETECTOR_NAMES,
    PANOPTIC_MODEL_NAMES,
    available_panoptic_models,
    create_panoptic_model,
    panoptic_model_options,
)
from pixelseg.models.detection.maskrcnn import build_maskrcnn
from pixelseg.models.detection.panoptic_fpn import PanopticFPN, build_panoptic_fpn
from pixelseg.models.detection.semantic_fpn_head import SemanticFPNHead

TINY: dict[str, Any] = {
    "min_size": 64,
    "max_size": 96,
    "fpn_channels": 32,
    "semantic_channels": 32,
    "rpn_batch_size_per_image": 32,
    "rpn_pre_nms_top_n_train": 100,
    "rpn_post_nms_top_n_train": 50,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_test": 50,
    "box_batch_size_per_image": 16,
}
# odd sizes: the resize gives non-multiples of 32, so the batch is padded on both axes
SIZES = [(61, 83), (77, 50)]
NUM_THINGS, NUM_STUFF = 2, 3


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Small-op models run faster on one thread when the cores are shared (see test_maskrcnn)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(**options: Any) -> PanopticFPN:
    torch.manual_seed(0)
    model = create_panoptic_model("panoptic_fpn", NUM_THINGS, NUM_STUFF, **{**TINY, **options})
    assert isinstance(model, PanopticFPN)
    return model


def _sample(h: int, w: int, things: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """An image whose colour is a function of its semantic map: stuff in vertical bands
    (1..NUM_STUFF), one thing box (semantic 0) unless ``things`` is False."""
    palette = torch.tensor([[0.9, 0.1, 0.2], [0.1, 0.8, 0.3], [0.3, 0.2, 0.9], [0.7, 0.7, 0.1]])
    semantic = (torch.arange(w) * NUM_STUFF // w + 1).expand(h, w).clone()
    boxes = [[w // 4, h // 4, w // 2 + 5, h // 2 + 7]] if things else []
    masks = torch.zeros(len(boxes), h, w, dtype=torch.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        masks[i, y1:y2, x1:x2] = 1
        semantic[y1:y2, x1:x2] = 0
    image = palette[semantic].permute(2, 0, 1).contiguous()
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.ones(len(boxes), dtype=torch.int64),
        "masks": masks,
        "semantic": semantic,
    }
    return image, target


def _batch(things: bool = True) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    pairs = [_sample(h, w, things) for h, w in SIZES]
    return [image for image, _ in pairs], [target for _, target in pairs]


def test_factory_lists_and_creates_panoptic_fpn_with_every_maskrcnn_option() -> None:
    assert PANOPTIC_MODEL_NAMES == ("panoptic_fpn",)
    assert "panoptic_fpn" not in DETECTOR_NAMES
    assert available_panoptic_models()["panoptic_fpn"].startswith("Panoptic FPN")
    options = panoptic_model_options("panoptic_fpn")
    assert options[:3] == ["semantic_channels", "semantic_loss_weight", "instance_loss_weight"]
    maskrcnn = [p for p in inspect.signature(build_maskrcnn).parameters if p != "num_classes"]
    assert options[3:] == maskrcnn  # same names, same order: nothing hidden in **kwargs
    doc = inspect.getdoc(build_panoptic_fpn) or ""
    assert all(f"``{name}``" in doc for name in options)
    model = _model(semantic_loss_weight=0.25)
    assert (model.num_things, model.num_stuff) == (NUM_THINGS, NUM_STUFF)
    assert (model.semantic_loss_weight, model.instance_loss_weight) == (0.25, 1.0)
    assert model.roi_heads.box_predictor.cls_score.out_features == NUM_THINGS + 1
    assert model.semantic_head.predictor.out_channels == NUM_STUFF + 1


def test_factory_rejects_unknown_names_and_options_with_a_hint() -> None:
    with pytest.raises(InvalidInputError, match=r"panoptic model 'panoptic_fp'.*'panoptic_fpn'"):
        create_panoptic_model("panoptic_fp", 2, 3)
    with pytest.raises(InvalidInputError, match=r"'semantic_chanels' \(did you mean 'semantic_ch"):
        create_panoptic_model("panoptic_fpn", 2, 3, semantic_chanels=64)
    with pytest.raises(InvalidInputError, match="unknown option 'num_classes'"):
        create_panoptic_model("panoptic_fpn", 2, 3, num_classes=4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_stuff": 0}, r"num_stuff must be an integer >= 1 .* got 0"),
        ({"num_things": 0}, r"num_things must be an integer >= 1 .* got 0"),
        ({"semantic_loss_weight": -1.0}, r"semantic_loss_weight must be .* got -1.0"),
        ({"instance_loss_weight": math.nan}, r"instance_loss_weight must be .* got nan"),
        ({"semantic_channels": 0}, r"semantic_channels must be .* got 0"),
        ({"returned_layers": [3, 2]}, r"returned_layers .* got \[3, 2\]"),
    ],
)
def test_bad_builder_values_are_named(kwargs: dict[str, Any], message: str) -> None:
    args = {"num_things": 2, "num_stuff": 3, **kwargs}
    with pytest.raises(InvalidInputError, match=message):
        build_panoptic_fpn(**args)


def test_semantic_head_stages_follow_the_strides() -> None:
    head = SemanticFPNHead(8, [4, 8, 16, 32], num_classes=5, channels=8)
    convs = [sum(isinstance(m, nn.Conv2d) for m in h.modules()) for h in head.scale_heads]
    ups = [sum(isinstance(m, nn.Upsample) for m in h.modules()) for h in head.scale_heads]
    assert (convs, ups, head.common_stride) == ([1, 1, 2, 3], [0, 1, 2, 3], 4)
    features = [torch.rand(2, 8, 32 // s, 64 // s) for s in (4, 8, 16, 32)]
    assert head(features).shape == (2, 5, 8, 16)
    assert SemanticFPNHead(8, [8, 16, 32], 5, 8).common_stride == 8


def test_training_losses_are_finite_and_reach_the_semantic_head_and_the_backbone() -> None:
    model = _model(norm="group")
    assert model.semantic_head.strides == [4, 8, 16, 32]  # P2-P5 for MobileNet too
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    model.train()
    images, targets = _batch()
    losses = model(images, targets)
    assert set(losses) == {
        "loss_classifier",
        "loss_box_reg",
        "loss_mask",
        "loss_objectness",
        "loss_rpn_box_reg",
        "loss_semantic",
    }
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    losses["loss_semantic"].backward()  # the semantic loss alone trains the shared backbone
    head_grad = model.semantic_head.predictor.weight.grad
    body_grad = next(p.grad for p in model.backbone.body.parameters() if p.requires_grad)
    assert head_grad is not None and head_grad.abs().sum() > 0
    assert body_grad is not None and body_grad.abs().sum() > 0
    assert model.rpn.head.conv[0][0].weight.grad is None  # no path from the semantic loss


def test_loss_weights_scale_the_terms() -> None:
    model = _model(norm="group")
    model.train()
    images, targets = _batch()

    def losses(semantic: float, instance: float) -> dict[str, float]:
        model.semantic_loss_weight, model.instance_loss_weight = semantic, instance
        torch.manual_seed(1)  # the same RPN and RoI samples each time
        with torch.no_grad():
            return {k: v.item() for k, v in model(images, targets).items()}

    base, doubled, off = losses(0.5, 1.0), losses(1.0, 2.0), losses(0.0, 1.0)
    assert off["loss_semantic"] == 0.0
    for key, value in base.items():
        assert doubled[key] == pytest.approx(2 * value, rel=1e-5), key


def test_images_without_things_train() -> None:
    model = _model()
    model.train()
    images, targets = _batch(things=False)
    assert all(t["boxes"].shape == (0, 4) and t["masks"].shape[0] == 0 for t in targets)
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.semantic_head.predictor.weight.grad is not None


def _check_alignment(model: PanopticFPN, images: list[torch.Tensor], targets: list[dict]) -> None:
    batch, instance, semantic = model.preprocess(images, targets)
    assert instance is not None and semantic is not None
    assert semantic.shape == (len(images), *batch.tensors.shape[-2:])
    assert all(s % 32 == 0 for s in batch.tensors.shape[-2:])
    mean = torch.tensor(model.transform.image_mean)[:, None, None]
    std = torch.tensor(model.transform.image_std)[:, None, None]
    palette = torch.tensor([[0.9, 0.1, 0.2], [0.1, 0.8, 0.3], [0.3, 0.2, 0.9], [0.7, 0.7, 0.1]])
    for i, (h, w) in enumerate(batch.image_sizes):
        inside = semantic[i, :h, :w]
        assert (inside != 255).all()
        padding = torch.ones_like(semantic[i], dtype=torch.bool)
        padding[:h, :w] = False
        assert (semantic[i][padding] == 255).all()
        # torchvision's resize of the instance masks (legacy "nearest", half a pixel off
        # when shrinking) agrees up to the thing's one-pixel border
        thing = (inside == 0).float()[None, None]
        border = F.max_pool2d(thing, 3, 1, 1) - -F.max_pool2d(-thing, 3, 1, 1)
        differ = instance[i]["masks"][0].bool() != (inside == 0)
        assert not differ[border[0, 0] == 0].any()
        # the image's content exactly: where the resized image shows a palette colour
        # (away from bilinear blends at edges), the label is that colour's
        image = batch.tensors[i, :, :h, :w] * std + mean
        distance = (image[None] - palette[:, :, None, None]).abs().amax(dim=1)  # [4, h, w]
        exact = distance.amin(dim=0) < 1e-4
        assert exact.float().mean() > 0.7
        assert torch.equal(distance.argmin(dim=0)[exact], inside[exact])


def test_semantic_targets_follow_the_image_resize_and_padding() -> None:
    model = _model()
    model.train()
    images, targets = _batch()
    _check_alignment(model, images, targets)
    model.eval()  # eval resizes too (the last min_size)
    _check_alignment(model, images, targets)


def test_multi_scale_training_resizes_semantic_with_the_same_draw() -> None:
    model = _model(min_size=(48, 64, 80), max_size=128)
    model.train()
    images, targets = _batch()
    shapes = set()
    for seed in range(6):
        torch.manual_seed(seed)
        _check_alignment(model, images, targets)
        torch.manual_seed(seed)
        shapes.add(tuple(model.preprocess(images, targets)[2].shape))
    assert len(shapes) > 1  # several scales were drawn


def test_eval_outputs_are_at_the_original_sizes() -> None:
    model = _model()
    model.eval()
    images, targets = _batch()
    with torch.no_grad():
        outputs = model(images, targets)  # targets are ignored in eval, as torchvision's
    assert len(outputs) == 2
    for output, (h, w) in zip(outputs, SIZES, strict=True):
        detections = output["boxes"].shape[0]
        assert output["semantic"].shape == (NUM_STUFF + 1, h, w)
        assert output["semantic"].dtype == torch.float32
        assert output["masks"].shape == (detections, 1, h, w)
        assert output["labels"].shape == output["scores"].shape == (detections,)
        assert torch.isfinite(output["semantic"]).all()


def test_common_stride_8_with_levels_2_to_4() -> None:
    model = _model(returned_layers=[2, 3, 4])
    assert (model.semantic_head.strides, model.semantic_head.common_stride) == ([8, 16, 32], 8)
    model.train()
    images, targets = _batch()
    losses = model(images, targets)
    assert torch.isfinite(losses["loss_semantic"])
    model.eval()
    with torch.no_grad():
        outputs = model(images)
    assert [tuple(o["semantic"].shape) for o in outputs] == [(NUM_STUFF + 1, *s) for s in SIZES]


def test_the_semantic_head_learns_an_image() -> None:
    model = _model(norm="group")
    model.train()
    image, target = _sample(64, 80)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(30):
        losses = model([image], [target])
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        history.append(losses["loss_semantic"].item())
    assert history[-1] < 0.3 * history[0], history
    model.eval()
    with torch.no_grad():
        predicted = model([image])[0]["semantic"].argmax(dim=0)
    assert (predicted == target["semantic"]).float().mean() > 0.9


def test_state_dict_round_trip_gives_identical_eval_outputs() -> None:
    model = _model()
    model.train()
    images, targets = _batch()
    model(images, targets)  # move BatchNorm running statistics off their defaults
    model.eval()
    torch.manual_seed(5)
    other = create_panoptic_model("panoptic_fpn", NUM_THINGS, NUM_STUFF, **TINY)
    other.load_state_dict(model.state_dict())
    other.eval()
    with torch.no_grad():
        expected, got = model(images), other(images)
    for a, b in zip(expected, got, strict=True):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[key], b[key]) for key in a)
    # a plain Mask R-CNN's keys are a subset: its weights can start the instance branch
    maskrcnn = build_maskrcnn(NUM_THINGS, returned_layers=[1, 2, 3, 4], fpn_channels=32)
    keys = set(model.state_dict())
    assert set(maskrcnn.state_dict()) <= keys
    assert {k for k in keys if k not in maskrcnn.state_dict()} == {
        k for k in keys if k.startswith("semantic_head.")
    }


def _train_error(targets: list[dict[str, torch.Tensor]] | None, message: str) -> None:
    model = _model()
    model.train()
    images, _ = _batch()
    with pytest.raises(InvalidInputError, match=message):
        model(images, targets)


def test_bad_training_targets_are_named() -> None:
    _train_error(None, "training mode needs targets")
    _, targets = _batch()
    del targets[1]["semantic"]
    _train_error(targets, r"target 1 has no 'semantic' map")
    _, targets = _batch()
    targets[0]["semantic"][0, 0] = 7
    _train_error(targets, r"target 0: semantic values \[7\] outside 0..3")
    _, targets = _batch()
    targets[0]["semantic"] = targets[0]["semantic"][:-1]
    _train_error(targets, r"target 0: semantic shape \(60, 83\) does not match .*\(61, 83\)")
    _, targets = _batch()
    targets[1]["labels"] = torch.tensor([3])
    _train_error(targets, r"target 1: labels \[3\] outside 1..2")
    _, targets = _batch()
    targets[0]["boxes"] = torch.tensor([[10.0, 10.0, 10.0, 20.0]])
    _train_error(targets, "target 0: boxes need positive width and height")
