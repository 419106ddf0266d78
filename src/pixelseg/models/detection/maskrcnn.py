"""Mask R-CNN (He et al., 2017) assembled from torchvision parts, sized for CPU by default.

torchvision's ``MaskRCNN`` does the work (RPN, RoIAlign, box and mask heads, resizing and
normalising the inputs, mapping outputs back); this module picks the parts: a backbone +
FPN from :mod:`.maskrcnn_backbones`, anchors matching its levels, heads with the chosen
norm, and optionally Soft-NMS in the box post-processing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import boxes as box_ops

from pixelseg.errors import InvalidInputError, unknown_choice
from pixelseg.models.detection.maskrcnn_backbones import (
    BACKBONES,
    NORMS,
    build_fpn_backbone,
    head_norm_layer,
    level_stride,
    max_trainable_layers,
)
from pixelseg.ops import batched_soft_nms

__all__ = ["SoftNMSRoIHeads", "build_maskrcnn"]

NMS_KINDS = ("hard", "soft")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# fc width of the box head, torchvision's representation_size.
_BOX_FC = 1024


class SoftNMSRoIHeads(RoIHeads):
    """torchvision's RoIHeads with Gaussian Soft-NMS in place of per-class hard NMS.

    ``postprocess_detections`` is torchvision's (0.29) line for line except the NMS step:
    scores returned are the decayed ones, boxes whose decayed score falls below
    ``score_thresh`` are dropped, and at most ``detections_per_img`` are kept, best first.
    """

    def __init__(self, *args: Any, soft_nms_sigma: float = 0.5, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.soft_nms_sigma = soft_nms_sigma

    def postprocess_detections(
        self,
        class_logits: Tensor,
        box_regression: Tensor,
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Per image: boxes ``[D, 4]``, decayed scores ``[D]`` and labels ``[D]``."""
        device = class_logits.device
        num_classes = class_logits.shape[-1]
        boxes_per_image = [p.shape[0] for p in proposals]
        pred_boxes = self.box_coder.decode(box_regression, proposals)
        pred_scores = F.softmax(class_logits, -1)
        all_boxes, all_scores, all_labels = [], [], []
        for boxes, scores, image_shape in zip(
            pred_boxes.split(boxes_per_image, 0),
            pred_scores.split(boxes_per_image, 0),
            image_shapes,
            strict=True,
        ):
            boxes = box_ops.clip_boxes_to_image(boxes, image_shape)
            labels = torch.arange(num_classes, device=device).view(1, -1).expand_as(scores)
            # drop the background column, then one candidate per (proposal, class)
            boxes = boxes[:, 1:].reshape(-1, 4)
            scores = scores[:, 1:].reshape(-1)
            labels = labels[:, 1:].reshape(-1)
            inds = torch.where(scores > self.score_thresh)[0]
            boxes, scores, labels = boxes[inds], scores[inds], labels[inds]
            keep = box_ops.remove_small_boxes(boxes, min_size=1e-2)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep, decayed = batched_soft_nms(
                boxes,
                scores,
                labels,
                sigma=self.soft_nms_sigma,
                score_threshold=self.score_thresh,
                max_detections=self.detections_per_img,
            )
            all_boxes.append(boxes[keep])
            all_scores.append(decayed)
            all_labels.append(labels[keep])
        return all_boxes, all_scores, all_labels


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise InvalidInputError(message)


def _levels(backbone: str, returned_layers: Sequence[int] | None) -> list[int]:
    if returned_layers is None:
        # MobileNet: strides 8-32 (P3-P5, + P6 pool). A stride-4 level at 320 px is 80x107
        # cells: its FPN and RPN 3x3 convs alone would cost more than the whole body.
        # ResNets: torchvision's default, P2-P5 (+ pool).
        return [2, 3, 4] if backbone.startswith("mobilenet") else [1, 2, 3, 4]
    levels = [int(level) for level in returned_layers]
    _require(
        bool(levels) and all(1 <= lv <= 4 for lv in levels) and levels == sorted(set(levels)),
        f"returned_layers must be increasing levels in 1..4 (strides 4, 8, 16, 32), "
        f"got {list(returned_layers)}",
    )
    return levels


def _anchor_generator(
    levels: list[int],
    anchor_sizes: Sequence[int | Sequence[int]] | None,
    aspect_ratios: Sequence[float],
) -> AnchorGenerator:
    strides = [level_stride(lv) for lv in levels] + [2 * level_stride(levels[-1])]  # + pool
    if anchor_sizes is None:
        # 4x the stride: half torchvision's 8x (32 at stride 4), because the default
        # images are 320-512 px rather than 800-1333, so objects are about half as big.
        sizes = tuple((4 * s,) for s in strides)
    else:
        sizes = tuple(
            (int(s),) if isinstance(s, int | float) else tuple(int(v) for v in s)
            for s in anchor_sizes
        )
    _require(
        len(sizes) == len(strides),
        f"anchor_sizes needs one entry per FPN output: {len(strides)} "
        f"(strides {strides}, the last is the max-pool level), got {len(sizes)}",
    )
    _require(
        len({len(s) for s in sizes}) == 1 and all(v > 0 for s in sizes for v in s),
        f"anchor_sizes must give every level the same number of positive sizes (the RPN "
        f"head is shared across levels), got {sizes}",
    )
    ratios = tuple(float(r) for r in aspect_ratios)
    _require(
        bool(ratios) and all(r > 0 for r in ratios),
        f"aspect_ratios must be positive, got {ratios}",
    )
    return AnchorGenerator(sizes, (ratios,) * len(sizes))


def _check_numbers(**values: float) -> None:
    """Counts must be >= 1, fractions and thresholds in [0, 1], sigma > 0."""
    for name, value in values.items():
        if name.endswith(("_fraction", "_thresh")):
            _require(0 <= value <= 1, f"{name} must be in [0, 1], got {value}")
        elif name == "soft_nms_sigma":
            _require(value > 0, f"soft_nms_sigma must be > 0, got {value}")
        else:
            _require(
                int(value) == value and value >= 1, f"{name} must be an integer >= 1, got {value}"
            )


def build_maskrcnn(
    num_classes: int,
    *,
    backbone: str = "mobilenet_v3_large",
    norm: str = "batch",
    returned_layers: Sequence[int] | None = None,
    fpn_channels: int | None = None,
    anchor_sizes: Sequence[int | Sequence[int]] | None = None,
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    min_size: int | Sequence[int] = 320,
    max_size: int = 512,
    image_mean: Sequence[float] = IMAGENET_MEAN,
    image_std: Sequence[float] = IMAGENET_STD,
    rpn_batch_size_per_image: int = 256,
    rpn_positive_fraction: float = 0.5,
    rpn_pre_nms_top_n_train: int = 1000,
    rpn_pre_nms_top_n_test: int = 500,
    rpn_post_nms_top_n_train: int = 1000,
    rpn_post_nms_top_n_test: int = 300,
    box_batch_size_per_image: int = 128,
    box_positive_fraction: float = 0.25,
    box_head_convs: int = 0,
    mask_head_convs: int = 4,
    box_score_thresh: float = 0.05,
    box_nms_thresh: float = 0.5,
    box_detections_per_img: int = 100,
    nms: str = "hard",
    soft_nms_sigma: float = 0.5,
    backbone_weights: str | Path | None = None,
    trainable_backbone_layers: int | None = None,
) -> MaskRCNN:
    """Mask R-CNN with FPN (torchvision parts), MobileNetV3-Large or ResNet, CPU-sized.

    ``num_classes`` object classes (labels 1..K); torchvision's heads get K + 1 with the
    background. Options:

    - ``backbone``: ``"mobilenet_v3_large"`` (the CPU choice), ``"resnet18"``,
      ``"resnet34"``, ``"resnet50"``.
    - ``norm``: ``"batch"``; ``"group"`` (GroupNorm in backbone, FPN, box-head convs and mask
      head, for training from scratch at batch 1-4 where batch statistics are noise, as in
      He et al., "Rethinking ImageNet Pre-training"); ``"frozen_batch"`` (FrozenBatchNorm in
      the backbone, no norm in FPN and heads: torchvision's fine-tuning setting, only sensible
      with ``backbone_weights``). The RPN head has no norm: torchvision's RPNHead takes none.
    - ``returned_layers``: backbone levels under the FPN, 1..4 = strides 4, 8, 16, 32; a
      max-pool level at twice the deepest stride is added. Default ``[2, 3, 4]`` for
      MobileNet (a stride-4 level would cost more than the body at 320 px), ``[1, 2, 3, 4]``
      (P2-P5, torchvision's) for ResNets.
    - ``fpn_channels``: FPN, RPN and head width; default 128 for MobileNet (its deepest
      maps have 112 and 160 channels, and heads cost quadratically in it), 256 for ResNets.
    - ``anchor_sizes``: one entry per FPN output (returned levels + pool), an int or a
      tuple of ints (same count per level); default 4 x each stride, e.g. 32-256 for
      MobileNet (torchvision uses 8 x, for images 2.5 x larger).
    - ``aspect_ratios``: height/width ratios at every level, default ``(0.5, 1.0, 2.0)``.
    - ``min_size``, ``max_size``: images are rescaled so the short side is ``min_size``
      unless the long side would exceed ``max_size``; defaults 320 / 512 (torchvision:
      800 / 1333). A list ``min_size`` is multi-scale training: each training batch draws
      one at random; evaluation always uses the last entry.
    - ``image_mean``, ``image_std``: normalisation of the 0..1 inputs, default ImageNet.
    - ``rpn_batch_size_per_image`` (256), ``rpn_positive_fraction`` (0.5): anchors sampled
      for the RPN loss. ``rpn_pre_nms_top_n_train`` / ``rpn_pre_nms_top_n_test`` (1000 / 500,
      per level) and ``rpn_post_nms_top_n_train`` / ``rpn_post_nms_top_n_test`` (1000 / 300):
      proposals kept before / after the RPN NMS (torchvision: 2000 / 1000 and 2000 / 1000;
      the box head runs on every proposal).
    - ``box_batch_size_per_image`` (128, Fast R-CNN's; torchvision 512),
      ``box_positive_fraction`` (0.25): RoIs sampled for the box and mask losses.
    - ``box_head_convs``: 0 gives the two-fc box head (torchvision v1); 4 gives the
      "4conv1fc" head of the GroupNorm paper and torchvision v2 (normalised, far slower).
      ``mask_head_convs``: 3x3 convs before the mask upsampling (4, the paper's).
    - ``box_score_thresh`` (0.05), ``box_nms_thresh`` (0.5), ``box_detections_per_img``
      (100): prediction filtering. ``nms``: ``"hard"`` (torchvision's per-class NMS) or
      ``"soft"`` (Gaussian Soft-NMS with ``soft_nms_sigma``, default 0.5; scores decay
      instead of boxes vanishing, and the returned scores are the decayed ones).
    - ``backbone_weights``: path to a local torchvision classification state dict
      (e.g. an ImageNet resnet50 ``.pth``) for the backbone; its classifier keys are ignored.
    - ``trainable_backbone_layers``: backbone stages trained, counted from the deepest
      (ResNet 0..5, MobileNet 0..6); default all without weights, 3 with weights.
    """
    for option, value, choices in (
        ("backbone", backbone, BACKBONES),
        ("norm", norm, NORMS),
        ("nms", nms, NMS_KINDS),
    ):
        if value not in choices:
            raise unknown_choice(f"Mask R-CNN {option}", value, choices)
    sizes = [min_size] if isinstance(min_size, int) else list(min_size)
    _require(
        bool(sizes) and all(isinstance(s, int) and s >= 1 for s in sizes),
        f"min_size must be a positive int or a list of them, got {min_size!r}",
    )
    channels = fpn_channels or (128 if backbone.startswith("mobilenet") else 256)
    heads_norm = head_norm_layer(norm)
    _check_numbers(
        fpn_channels=channels,
        max_size=max_size,
        rpn_batch_size_per_image=rpn_batch_size_per_image,
        rpn_positive_fraction=rpn_positive_fraction,
        rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train,
        rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=rpn_post_nms_top_n_train,
        rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
        box_batch_size_per_image=box_batch_size_per_image,
        box_positive_fraction=box_positive_fraction,
        box_score_thresh=box_score_thresh,
        box_nms_thresh=box_nms_thresh,
        box_detections_per_img=box_detections_per_img,
        soft_nms_sigma=soft_nms_sigma,
    )
    for name, value in (("box_head_convs", box_head_convs), ("mask_head_convs", mask_head_convs)):
        _require(int(value) == value and value >= 0, f"{name} must be an integer >= 0, got {value}")
    top = max_trainable_layers(backbone)
    if trainable_backbone_layers is None:
        trainable_backbone_layers = top if backbone_weights is None else 3
    _require(
        0 <= trainable_backbone_layers <= top,
        f"trainable_backbone_layers must be in 0..{top} for {backbone}, "
        f"got {trainable_backbone_layers}",
    )

    levels = _levels(backbone, returned_layers)
    anchors = _anchor_generator(levels, anchor_sizes, aspect_ratios)
    body = build_fpn_backbone(
        backbone,
        norm=norm,
        levels=levels,
        fpn_channels=channels,
        weights=backbone_weights,
        trainable_layers=trainable_backbone_layers,
    )
    names = [str(i) for i in range(len(levels))]  # RoIAlign skips the pool level, as torchvision
    box_fc = [_BOX_FC] if box_head_convs else [_BOX_FC, _BOX_FC]
    roi_parts = {
        "box_roi_pool": MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2),
        "box_head": FastRCNNConvFCHead(
            (channels, 7, 7), [channels] * box_head_convs, box_fc, norm_layer=heads_norm
        ),
        "box_predictor": FastRCNNPredictor(_BOX_FC, num_classes + 1),
        "mask_roi_pool": MultiScaleRoIAlign(names, output_size=14, sampling_ratio=2),
        "mask_head": MaskRCNNHeads(channels, [channels] * mask_head_convs, 1, heads_norm),
        "mask_predictor": MaskRCNNPredictor(channels, channels, num_classes + 1),
    }
    model = MaskRCNN(
        body,
        num_classes=None,  # the predictors above carry K + 1
        min_size=tuple(sizes),
        max_size=max_size,
        image_mean=list(image_mean),
        image_std=list(image_std),
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(channels, anchors.num_anchors_per_location()[0]),
        rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train,
        rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=rpn_post_nms_top_n_train,
        rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=rpn_batch_size_per_image,
        rpn_positive_fraction=rpn_positive_fraction,
        box_score_thresh=box_score_thresh,
        box_nms_thresh=box_nms_thresh,
        box_detections_per_img=box_detections_per_img,
        box_batch_size_per_image=box_batch_size_per_image,
        box_positive_fraction=box_positive_fraction,
        **roi_parts,
    )
    if nms == "soft":
        # MaskRCNN builds a plain RoIHeads and has no parameter for its class; swap in the
        # subclass, built from the same parts and torchvision's default IoU thresholds.
        model.roi_heads = SoftNMSRoIHeads(
            fg_iou_thresh=0.5,
            bg_iou_thresh=0.5,
            batch_size_per_image=box_batch_size_per_image,
            positive_fraction=box_positive_fraction,
            bbox_reg_weights=None,
            score_thresh=box_score_thresh,
            nms_thresh=box_nms_thresh,
            detections_per_img=box_detections_per_img,
            soft_nms_sigma=soft_nms_sigma,
            **roi_parts,
        )
    return model
