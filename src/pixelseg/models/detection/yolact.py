"""YOLACT (Bolya et al., "YOLACT: Real-time Instance Segmentation", ICCV 2019).

A one-stage instance segmenter: ResNet + FPN (P3-P7), a protonet on P3 that predicts ``k``
prototype masks for the whole image, and one head shared over the pyramid that predicts,
per anchor, class confidences, a box and ``k`` mask coefficients. No RoI pooling: a mask is
``sigmoid(P C^T)`` cropped to its box. Resizing, normalisation and batching are
torchvision's ``GeneralizedRCNNTransform``; the pieces live in ``yolact_head.py`` (heads,
anchors, box coding), ``yolact_loss.py`` (matching, losses) and ``yolact_post.py``
(Fast NMS, mask assembly).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d, clip_boxes_to_image
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from pixelseg.models.blocks import group_norm
from pixelseg.models.detection.yolact_check import check_inputs, check_options
from pixelseg.models.detection.yolact_head import (
    PredictionHead,
    Protonet,
    decode_boxes,
    make_anchors,
)
from pixelseg.models.detection.yolact_loss import YolactLoss
from pixelseg.models.detection.yolact_post import (
    DetectionSettings,
    paste_masks,
    select_detections,
)
from pixelseg.models.weights import load_matching, read_state_dict

__all__ = ["YOLACT", "build_yolact"]

# name -> (torchvision constructor, channels of C3, C4, C5)
_BACKBONES: dict[str, tuple[Callable[..., nn.Module], tuple[int, int, int]]] = {
    "resnet18": (torchvision.models.resnet18, (128, 256, 512)),
    "resnet34": (torchvision.models.resnet34, (128, 256, 512)),
    "resnet50": (torchvision.models.resnet50, (512, 1024, 2048)),
}
_NORMS = ("batch", "frozen_batch", "group")
# YOLACT-550's anchor sizes for P3..P7 (Sec. 6), scaled to other input sizes.
_REFERENCE_SIZES = (24.0, 48.0, 96.0, 192.0, 384.0)
_REFERENCE_INPUT = 550
_IMAGENET_MEAN = [0.485, 0.456, 0.406]
_IMAGENET_STD = [0.229, 0.224, 0.225]


def _resnet_backbone(name: str, norm: str, weights: str | Path | None) -> nn.Module:
    """C3, C4, C5 of a torchvision ResNet as an ``OrderedDict``, optionally with local weights."""
    norm_layer = {"batch": nn.BatchNorm2d, "frozen_batch": FrozenBatchNorm2d, "group": group_norm}[
        norm
    ]
    net = _BACKBONES[name][0](weights=None, norm_layer=norm_layer)
    if weights is not None:
        _load_backbone_weights(net, Path(weights), norm)
    return IntermediateLayerGetter(net, {"layer2": "c3", "layer3": "c4", "layer4": "c5"})


def _load_backbone_weights(net: nn.Module, path: Path, norm: str) -> None:
    """Load a torchvision classification state dict, ignoring ``fc.*`` (and, under GroupNorm,
    the BatchNorm running statistics, which GroupNorm has no use for)."""
    dropped = ("running_mean", "running_var", "num_batches_tracked") if norm == "group" else ()
    state = read_state_dict(path, "backbone_weights")
    load_matching(
        net, state, path, option="backbone_weights", model_name="resnet", head="fc.",
        drop_suffixes=dropped,
    )  # fmt: skip


class YOLACT(nn.Module):
    """YOLACT following pixelseg's detector contract (see ``models/detection/__init__.py``)."""

    def __init__(
        self,
        transform: GeneralizedRCNNTransform,
        backbone: nn.Module,
        fpn: FeaturePyramidNetwork,
        protonet: Protonet,
        head: PredictionHead,
        semantic: nn.Conv2d,
        loss: YolactLoss,
        anchor_sizes: tuple[float, ...],
        aspect_ratios: tuple[float, ...],
        settings: DetectionSettings,
        classifier: str,
    ) -> None:
        super().__init__()
        self.transform = transform
        self.backbone = backbone
        self.fpn = fpn
        self.protonet = protonet
        self.head = head
        self.semantic = semantic  # Sec. 3.5: training-only, no cost at inference
        self.loss = loss
        self.anchor_sizes = anchor_sizes
        self.aspect_ratios = aspect_ratios
        self.settings = settings
        self.classifier = classifier

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Loss dict in training mode, per-image detections in evaluation mode."""
        check_inputs(images, targets, self.loss.num_classes, self.training)
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        batch, targets = self.transform(images, targets)
        padded = (int(batch.tensors.shape[-2]), int(batch.tensors.shape[-1]))
        pyramid = list(self.fpn(self.backbone(batch.tensors)).values())  # P3..P7
        protos = self.protonet(pyramid[0])
        logits, offsets, coefs = self.head(pyramid)
        anchors = make_anchors(
            [(int(p.shape[-2]), int(p.shape[-1])) for p in pyramid],
            padded,
            self.anchor_sizes,
            self.aspect_ratios,
            device=logits.device,
        )
        if self.training:
            semantic = self.semantic(pyramid[0])
            return self.loss(logits, offsets, coefs, protos, semantic, anchors, targets, padded)
        return self._detect(
            logits, offsets, coefs, protos, anchors, batch.image_sizes, padded, original_sizes
        )

    def _detect(
        self,
        logits: Tensor,
        offsets: Tensor,
        coefs: Tensor,
        protos: Tensor,
        anchors: Tensor,
        resized: list[tuple[int, int]],
        padded: tuple[int, int],
        original: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        if self.classifier == "focal":
            class_scores = torch.sigmoid(logits)
        else:
            class_scores = torch.softmax(logits, dim=-1)[..., 1:]  # drop the background
        results = []
        for b, (size, orig) in enumerate(zip(resized, original, strict=True)):
            boxes = clip_boxes_to_image(decode_boxes(offsets[b], anchors), size)
            index, labels, scores, boxes = select_detections(class_scores[b], boxes, self.settings)
            # boxes back to the original image (torchvision's ratio rule), then the masks there
            boxes = self.transform.postprocess([{"boxes": boxes}], [size], [orig])[0]["boxes"]
            masks = paste_masks(protos[b], coefs[b, index], boxes, size, padded, orig)
            results.append({"boxes": boxes, "labels": labels, "scores": scores, "masks": masks})
        return results


def build_yolact(
    num_classes: int,
    *,
    backbone: str = "resnet18",
    norm: str = "batch",
    backbone_weights: str | Path | None = None,
    fpn_channels: int = 256,
    num_prototypes: int = 32,
    min_size: int | Sequence[int] = 550,
    max_size: int = 550,
    anchor_sizes: Sequence[float] | None = None,
    aspect_ratios: Sequence[float] = (1.0, 0.5, 2.0),
    pos_iou: float = 0.5,
    neg_iou: float = 0.4,
    classifier: str = "ohem",
    negpos_ratio: int = 3,
    masks_to_train: int = 100,
    class_loss_weight: float = 1.0,
    box_loss_weight: float = 1.5,
    mask_loss_weight: float = 6.125,
    semantic_loss_weight: float = 1.0,
    nms: str = "fast",
    nms_thresh: float = 0.5,
    soft_nms_sigma: float = 0.5,
    score_thresh: float = 0.05,
    top_k: int = 200,
    detections_per_img: int = 100,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
) -> YOLACT:
    """YOLACT: one-stage instance segmentation from prototypes and per-box coefficients (ICCV 2019).

    Options, with the paper's and reference code's defaults unless noted:

    - ``backbone``: ``resnet18`` (the default here, for CPU; the paper uses ResNet-50/101),
      ``resnet34`` or ``resnet50``. ``norm``: ``batch``, ``frozen_batch`` (frozen BatchNorm, for
      fine-tuning ``backbone_weights`` at small batches, as the reference does under 6
      images per GPU) or ``group`` (GroupNorm, for training from scratch at tiny batches).
      ``backbone_weights``: a local torchvision classification state dict (``fc.*`` ignored).
    - ``fpn_channels`` 256 for FPN, protonet and head. On CPU 128 is worth it: the protonet
      runs four 3x3 convs at stride 8 and 4 and the head one per level, all costing
      ``channels^2``, so halving the width roughly quarters their time.
    - ``num_prototypes`` k = 32. ``min_size`` (a tuple: one drawn per training batch,
      multi-scale training) and ``max_size`` (longer side): 550, YOLACT-550 with the aspect
      ratio kept. ``anchor_sizes`` for P3..P7: default 24, 48, 96, 192, 384 scaled by
      ``min(max(min_size), max_size) / 550``; ``aspect_ratios`` (1, 1/2, 2).
    - Matching: positive at IoU >= ``pos_iou`` 0.5, background below ``neg_iou`` 0.4.
    - ``classifier``: ``ohem`` (softmax cross-entropy, ``negpos_ratio`` 3 hard negatives
      per positive) or ``focal`` (sigmoid focal loss). ``masks_to_train`` 100 positives per
      image for the mask loss. Loss weights: class 1, box 1.5, mask 6.125, semantic 1.
    - Inference: ``nms`` ``fast`` (the paper's Fast NMS), ``hard`` or ``soft`` (Gaussian,
      ``soft_nms_sigma``), ``nms_thresh`` 0.5, ``score_thresh`` 0.05, ``top_k`` 200
      candidates per class, ``detections_per_img`` 100.
    - ``image_mean``/``image_std``: the normalisation applied after resizing (ImageNet's).
    """
    sizes = (min_size,) if isinstance(min_size, int) else tuple(min_size)
    check_options(locals() | {"min_size": sizes}, _BACKBONES, _NORMS)
    if anchor_sizes is None:
        scale = min(max(sizes), max_size) / _REFERENCE_INPUT
        anchor_sizes = tuple(s * scale for s in _REFERENCE_SIZES)
    transform = GeneralizedRCNNTransform(
        min_size=sizes,
        max_size=max_size,
        image_mean=list(image_mean or _IMAGENET_MEAN),
        image_std=list(image_std or _IMAGENET_STD),
    )
    in_channels = list(_BACKBONES[backbone][1])
    fpn = FeaturePyramidNetwork(
        in_channels, fpn_channels, extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels)
    )  # P6, P7 by stride-2 convs from P5, as the reference's FPN
    num_logits = num_classes if classifier == "focal" else num_classes + 1
    head = PredictionHead(
        fpn_channels,
        len(aspect_ratios),
        num_logits,
        num_prototypes,
        class_prior=0.01 if classifier == "focal" else None,
    )
    semantic = nn.Conv2d(fpn_channels, num_classes, 1)
    loss = YolactLoss(
        num_classes,
        pos_iou,
        neg_iou,
        classifier,
        negpos_ratio,
        masks_to_train,
        {
            "class": class_loss_weight,
            "box": box_loss_weight,
            "mask": mask_loss_weight,
            "semantic": semantic_loss_weight,
        },
    )
    settings = DetectionSettings(
        nms, nms_thresh, soft_nms_sigma, score_thresh, top_k, detections_per_img
    )
    return YOLACT(
        transform,
        _resnet_backbone(backbone, norm, backbone_weights),
        fpn,
        Protonet(fpn_channels, num_prototypes),
        head,
        semantic,
        loss,
        tuple(float(s) for s in anchor_sizes),
        tuple(float(r) for r in aspect_ratios),
        settings,
        classifier,
    )
