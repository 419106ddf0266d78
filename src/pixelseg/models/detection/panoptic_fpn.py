"""Panoptic FPN (Kirillov et al., 2019): Mask R-CNN plus a semantic FPN head on its features.

The instance branch is :func:`build_maskrcnn`'s torchvision Mask R-CNN, reused part by part
(``transform``, ``backbone``, ``rpn``, ``roi_heads``, under the same state-dict names as a
plain Mask R-CNN). torchvision's ``MaskRCNN.forward`` hides the FPN features and would not
resize a semantic map with the images, so :class:`PanopticFPN` has its own forward: one
pass through the transform, backbone and both branches, the semantic target carried through
exactly the images' resize and padding.

Semantic classes: 0 is "things" (any pixel of an instance class), ``1..num_stuff`` are the
stuff classes and 255 is void (ignored by the loss).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.image_list import ImageList

from pixelseg.errors import InvalidInputError
from pixelseg.models.detection.maskrcnn import IMAGENET_MEAN, IMAGENET_STD, build_maskrcnn
from pixelseg.models.detection.maskrcnn_backbones import level_stride
from pixelseg.models.detection.semantic_fpn_head import SemanticFPNHead

__all__ = ["IGNORE_INDEX", "PanopticFPN", "build_panoptic_fpn"]

#: Semantic target value ignored by the loss (void, and the batch padding).
IGNORE_INDEX = 255

Targets = list[dict[str, Tensor]]


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise InvalidInputError(message)


def _check_count(name: str, value: int, meaning: str) -> None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    _require(
        number and math.isfinite(value) and int(value) == value and value >= 1,
        f"{name} must be an integer >= 1 ({meaning}), got {value!r}",
    )


def _check_weight(name: str, value: float) -> None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    _require(
        number and math.isfinite(value) and value >= 0,
        f"{name} must be a finite number >= 0, got {value!r}",
    )


class PanopticFPN(nn.Module):
    """Mask R-CNN + semantic FPN head, trained jointly on one set of FPN features.

    ``forward(images, targets=None)``: ``images`` a list of float ``[3, H, W]`` in 0..1, any
    sizes.

    - Training: each target has torchvision's ``boxes`` float ``[N, 4]`` xyxy, ``labels``
      int64 ``[N]`` in ``1..num_things``, ``masks`` uint8 ``[N, H, W]`` (N may be 0) and
      ``semantic`` int64 ``[H, W]`` (0 things, ``1..num_stuff`` stuff, 255 void). Returns
      the weighted loss terms: torchvision's five times ``instance_loss_weight`` and
      ``loss_semantic`` = ``semantic_loss_weight`` x cross-entropy at the padded input size.
    - Eval: one dict per image with torchvision's ``boxes``, ``labels``, ``scores``,
      ``masks`` (float ``[D, 1, H, W]``) and ``semantic`` float32 logits
      ``[num_stuff + 1, H, W]``, all at the original image size.
    """

    def __init__(
        self,
        detector: MaskRCNN,
        num_things: int,
        num_stuff: int,
        strides: Sequence[int],
        *,
        semantic_channels: int = 128,
        semantic_loss_weight: float = 0.5,
        instance_loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        _check_count("num_things", num_things, "instance classes")
        _check_count("num_stuff", num_stuff, "stuff classes; 'things' is added as class 0")
        _check_count("semantic_channels", semantic_channels, "semantic head width")
        _check_weight("semantic_loss_weight", semantic_loss_weight)
        _check_weight("instance_loss_weight", instance_loss_weight)
        self.num_things = int(num_things)
        self.num_stuff = int(num_stuff)
        self.semantic_loss_weight = float(semantic_loss_weight)
        self.instance_loss_weight = float(instance_loss_weight)
        self.transform = detector.transform
        self.backbone = detector.backbone
        self.rpn = detector.rpn
        self.roi_heads = detector.roi_heads
        self.semantic_head = SemanticFPNHead(
            detector.backbone.out_channels, strides, self.num_stuff + 1, int(semantic_channels)
        )
        # The FPN names its levels "0".."n-1" finest first, then "pool" (left out, as in
        # the paper: P6 exists only for the RPN).
        self._levels = [str(i) for i in range(len(strides))]

    def preprocess(
        self, images: list[Tensor], targets: Targets | None = None
    ) -> tuple[ImageList, Targets | None, Tensor | None]:
        """Normalise, resize and pad the images; the targets follow the same geometry.

        Returns the padded batch (with each resized image's size), the instance targets as
        torchvision's transform leaves them, and the semantic targets int64 ``[B, Hp, Wp]``:
        each map resized to its image's resized size by nearest neighbour, then padded with
        255 to the batch size. ``None`` without targets.

        The nearest neighbour is the one under each output pixel's centre
        (``"nearest-exact"``), the centre the bilinear image resize samples around. PyTorch's
        legacy ``"nearest"``, which torchvision uses for the instance masks, samples half a
        pixel off when shrinking: measured on striped images, 16-18 label pixels per image
        disagreed with the resized image's colour, none with ``"nearest-exact"``.
        """
        instance = None if targets is None else [_without_semantic(t) for t in targets]
        # One transform call: in training with several min_size values it draws the scale
        # once, and the semantic maps below reuse the sizes it chose.
        batch, instance = self.transform(images, instance)
        if targets is None:
            return batch, instance, None
        semantic = torch.full(
            (len(targets), *batch.tensors.shape[-2:]),
            IGNORE_INDEX,
            dtype=torch.int64,
            device=batch.tensors.device,
        )
        for i, (target, (h, w)) in enumerate(zip(targets, batch.image_sizes, strict=True)):
            resized = F.interpolate(
                target["semantic"][None, None].float(), size=(h, w), mode="nearest-exact"
            )
            semantic[i, :h, :w] = resized[0, 0].to(torch.int64)
        return batch, instance, semantic

    def forward(
        self, images: list[Tensor], targets: Targets | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Loss terms in training mode, per-image predictions in eval mode (see the class)."""
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        if self.training:
            self._check_targets(images, targets)
        else:
            targets = None  # as torchvision: eval mode predicts, it computes no loss
        batch, instance, semantic = self.preprocess(images, targets)
        features = self.backbone(batch.tensors)
        proposals, rpn_losses = self.rpn(batch, features, instance)
        detections, roi_losses = self.roi_heads(features, proposals, batch.image_sizes, instance)
        logits = self.semantic_head([features[name] for name in self._levels])
        logits = F.interpolate(
            logits, size=batch.tensors.shape[-2:], mode="bilinear", align_corners=False
        )
        if self.training:
            assert semantic is not None
            losses = {
                key: self.instance_loss_weight * value
                for key, value in {**rpn_losses, **roi_losses}.items()
            }
            losses["loss_semantic"] = self.semantic_loss_weight * _semantic_loss(logits, semantic)
            return losses
        detections = self.transform.postprocess(detections, batch.image_sizes, original_sizes)
        for detection, scores, size, original in zip(
            detections, logits, batch.image_sizes, original_sizes, strict=True
        ):
            # crop the padding, then undo the resize (detectron2's sem_seg_postprocess)
            cropped = scores[None, :, : size[0], : size[1]]
            detection["semantic"] = F.interpolate(
                cropped, size=original, mode="bilinear", align_corners=False
            )[0].float()
        return detections

    def _check_targets(self, images: list[Tensor], targets: Targets | None) -> None:
        """Clear errors for what torchvision would report as an assert or an index error."""
        _require(targets is not None, "PanopticFPN in training mode needs targets")
        assert targets is not None
        _require(
            len(targets) == len(images),
            f"got {len(images)} images but {len(targets)} targets",
        )
        for i, (image, target) in enumerate(zip(images, targets, strict=True)):
            _require(
                "semantic" in target,
                f"target {i} has no 'semantic' map (keys: {sorted(target)}); panoptic "
                f"training needs int64 [H, W] with 0 things, 1..{self.num_stuff} stuff, 255 void",
            )
            semantic = target["semantic"]
            _require(
                tuple(semantic.shape) == tuple(image.shape[-2:]),
                f"target {i}: semantic shape {tuple(semantic.shape)} does not match "
                f"the image's {tuple(image.shape[-2:])}",
            )
            bad = semantic[((semantic < 0) | (semantic > self.num_stuff)) & (semantic != 255)]
            _require(
                bad.numel() == 0,
                f"target {i}: semantic values {bad.unique()[:5].tolist()} outside "
                f"0..{self.num_stuff} (num_stuff={self.num_stuff}) and 255 (void)",
            )
            boxes, labels = target["boxes"], target["labels"]
            _require(
                boxes.dim() == 2 and boxes.shape[-1] == 4,
                f"target {i}: boxes must be [N, 4], got {tuple(boxes.shape)}",
            )
            degenerate = (boxes[:, 2:] <= boxes[:, :2]).any(dim=1)
            _require(
                not bool(degenerate.any()),
                f"target {i}: boxes need positive width and height, got "
                f"{boxes[degenerate][:3].tolist()}",
            )
            bad = labels[(labels < 1) | (labels > self.num_things)]
            _require(
                bad.numel() == 0,
                f"target {i}: labels {bad.unique()[:5].tolist()} outside "
                f"1..{self.num_things} (num_things={self.num_things})",
            )


def _without_semantic(target: dict[str, Tensor]) -> dict[str, Tensor]:
    return {key: value for key, value in target.items() if key != "semantic"}


def _semantic_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Mean cross-entropy over the non-void pixels; 0 (not NaN) when every pixel is void."""
    total = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (target != IGNORE_INDEX).sum().clamp(min=1)


def build_panoptic_fpn(
    num_things: int,
    num_stuff: int,
    *,
    semantic_channels: int = 128,
    semantic_loss_weight: float = 0.5,
    instance_loss_weight: float = 1.0,
    backbone: str = "mobilenet_v3_large",
    norm: str = "batch",
    returned_layers: Sequence[int] | None = (1, 2, 3, 4),
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
) -> PanopticFPN:
    """Panoptic FPN: Mask R-CNN with a semantic FPN head for stuff classes, trained jointly.

    ``num_things`` instance classes (labels 1..K) and ``num_stuff`` stuff classes; the
    semantic head predicts ``num_stuff + 1`` classes, 0 being "things". Options:

    - ``semantic_channels``: width of the semantic head's 3x3 convs (128, detectron2's).
    - ``semantic_loss_weight`` (0.5) and ``instance_loss_weight`` (1.0): factors on the
      semantic cross-entropy and on each Mask R-CNN loss term (detectron2's defaults).
    - ``returned_layers``: FPN levels, 1..4 = strides 4..32; default ``(1, 2, 3, 4)``
      (P2-P5, the paper's) for every backbone, ``None`` meaning the same. The semantic head
      works at the finest stride given (4, or 8 with ``[2, 3, 4]``, cheaper at 1/4 the
      cells) and is upsampled from there.
    - Every other option is :func:`build_maskrcnn`'s, with its meaning and default:
      ``backbone``, ``norm`` (the semantic head uses GroupNorm whatever it is, as
      detectron2's: batch statistics at 1-4 images are noise), ``fpn_channels``,
      ``anchor_sizes``, ``aspect_ratios``, ``min_size``, ``max_size``, ``image_mean``,
      ``image_std``, ``rpn_batch_size_per_image``, ``rpn_positive_fraction``,
      ``rpn_pre_nms_top_n_train``, ``rpn_pre_nms_top_n_test``, ``rpn_post_nms_top_n_train``,
      ``rpn_post_nms_top_n_test``, ``box_batch_size_per_image``, ``box_positive_fraction``,
      ``box_head_convs``, ``mask_head_convs``, ``box_score_thresh``, ``box_nms_thresh``,
      ``box_detections_per_img``, ``nms``, ``soft_nms_sigma``, ``backbone_weights``,
      ``trainable_backbone_layers``.
    """
    _check_count("num_things", num_things, "instance classes")
    _check_count("num_stuff", num_stuff, "stuff classes; 'things' is added as class 0")
    _check_count("semantic_channels", semantic_channels, "semantic head width")
    _check_weight("semantic_loss_weight", semantic_loss_weight)
    _check_weight("instance_loss_weight", instance_loss_weight)
    levels = (1, 2, 3, 4) if returned_layers is None else tuple(returned_layers)
    detector = build_maskrcnn(
        int(num_things),
        backbone=backbone,
        norm=norm,
        returned_layers=levels,
        fpn_channels=fpn_channels,
        anchor_sizes=anchor_sizes,
        aspect_ratios=aspect_ratios,
        min_size=min_size,
        max_size=max_size,
        image_mean=image_mean,
        image_std=image_std,
        rpn_batch_size_per_image=rpn_batch_size_per_image,
        rpn_positive_fraction=rpn_positive_fraction,
        rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train,
        rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=rpn_post_nms_top_n_train,
        rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
        box_batch_size_per_image=box_batch_size_per_image,
        box_positive_fraction=box_positive_fraction,
        box_head_convs=box_head_convs,
        mask_head_convs=mask_head_convs,
        box_score_thresh=box_score_thresh,
        box_nms_thresh=box_nms_thresh,
        box_detections_per_img=box_detections_per_img,
        nms=nms,
        soft_nms_sigma=soft_nms_sigma,
        backbone_weights=backbone_weights,
        trainable_backbone_layers=trainable_backbone_layers,
    )
    return PanopticFPN(
        detector,
        num_things,
        num_stuff,
        # build_maskrcnn has validated the levels (increasing, in 1..4)
        [level_stride(int(level)) for level in levels],
        semantic_channels=semantic_channels,
        semantic_loss_weight=semantic_loss_weight,
        instance_loss_weight=instance_loss_weight,
    )
