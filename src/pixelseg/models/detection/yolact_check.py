"""Validation of YOLACT's options and inputs: each error names the bad value.

Kept apart from the model so ``yolact.py`` reads like the architecture.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from pixelseg.errors import InvalidInputError, unknown_choice

__all__ = ["check_inputs", "check_options"]


def _positive(name: str, value: Any, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
        noun = "a positive integer" if integer else "a positive number"
        raise InvalidInputError(f"YOLACT option {name} must be {noun}, got {value!r}")


def _fraction(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise InvalidInputError(f"YOLACT option {name} must be in [0, 1], got {value!r}")


def check_options(
    options: Mapping[str, Any], backbones: Mapping[str, Any], norms: tuple[str, ...]
) -> None:
    """Raise InvalidInputError for the first invalid builder option."""
    for name, choices in (
        ("backbone", backbones),
        ("norm", norms),
        ("classifier", ("ohem", "focal")),
        ("nms", ("fast", "hard", "soft")),
    ):
        if options[name] not in choices:
            raise unknown_choice(f"YOLACT {name}", str(options[name]), choices)
    for name in (
        "fpn_channels",
        "num_prototypes",
        "max_size",
        "negpos_ratio",
        "masks_to_train",
        "top_k",
        "detections_per_img",
    ):
        _positive(name, options[name], integer=True)
    for size in options["min_size"]:
        _positive("min_size", size, integer=True)
    for name in ("pos_iou", "neg_iou", "nms_thresh", "score_thresh"):
        _fraction(name, options[name])
    if options["neg_iou"] > options["pos_iou"]:
        raise InvalidInputError(
            f"YOLACT option neg_iou ({options['neg_iou']}) must not exceed pos_iou "
            f"({options['pos_iou']})"
        )
    _positive("soft_nms_sigma", options["soft_nms_sigma"])
    for name in (
        "class_loss_weight",
        "box_loss_weight",
        "mask_loss_weight",
        "semantic_loss_weight",
    ):
        value = options[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise InvalidInputError(f"YOLACT option {name} must be >= 0, got {value!r}")
    ratios = tuple(options["aspect_ratios"])
    if not ratios:
        raise InvalidInputError("YOLACT option aspect_ratios must not be empty")
    for ratio in ratios:
        _positive("aspect_ratios", ratio)
    sizes = options["anchor_sizes"]
    if sizes is not None:
        if len(tuple(sizes)) != 5:
            raise InvalidInputError(
                f"YOLACT option anchor_sizes needs 5 sizes (P3..P7), got {sizes!r}"
            )
        for size in sizes:
            _positive("anchor_sizes", size)


def check_inputs(
    images: list[Tensor], targets: list[dict[str, Tensor]] | None, num_classes: int, training: bool
) -> None:
    """Images: float ``[3, H, W]``; targets (required in training) as the detector contract."""
    if not isinstance(images, (list, tuple)) or not images:
        raise InvalidInputError(
            f"YOLACT takes a non-empty list of images, got {type(images).__name__}"
        )
    for i, image in enumerate(images):
        if image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point():
            raise InvalidInputError(
                f"image {i} must be a float [3, H, W] tensor, got {image.dtype} {tuple(image.shape)}"
            )
    if targets is None:
        if training:
            raise InvalidInputError("YOLACT in training mode needs targets (boxes, labels, masks)")
        return
    if len(targets) != len(images):
        raise InvalidInputError(f"got {len(images)} images but {len(targets)} targets")
    for i, (image, target) in enumerate(zip(images, targets, strict=True)):
        for key in ("boxes", "labels", "masks"):
            if key not in target:
                raise InvalidInputError(f"target {i} has no {key!r}")
        boxes, labels, masks = target["boxes"], target["labels"], target["masks"]
        n = labels.shape[0] if labels.dim() == 1 else -1
        if boxes.shape != (n, 4) or not boxes.is_floating_point():
            raise InvalidInputError(
                f"target {i} boxes must be float [N, 4], got {tuple(boxes.shape)}"
            )
        if labels.dtype != torch.int64 or n < 0:
            raise InvalidInputError(f"target {i} labels must be int64 [N], got {labels.dtype}")
        if n and (int(labels.min()) < 1 or int(labels.max()) > num_classes):
            raise InvalidInputError(
                f"target {i} labels must be in 1..{num_classes}, got {labels.unique().tolist()}"
            )
        if masks.shape != (n, *image.shape[-2:]):
            raise InvalidInputError(
                f"target {i} masks must be [N, H, W] = {(n, *image.shape[-2:])}, "
                f"got {tuple(masks.shape)}"
            )
        if n and bool(((boxes[:, 2:] <= boxes[:, :2]).any(dim=1)).any()):
            raise InvalidInputError(
                f"target {i} has a box with x2 <= x1 or y2 <= y1: {boxes.tolist()}"
            )
