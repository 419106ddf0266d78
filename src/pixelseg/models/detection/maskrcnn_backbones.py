"""Mask R-CNN backbones: a torchvision ResNet or MobileNetV3-Large body under an FPN.

Levels are numbered like ResNet's stages for every backbone: level ``k`` (1..4) is the
deepest feature map at stride ``2 ** (k + 1)``, so level 1 is stride 4 (C2) and level 4 is
stride 32 (C5). The FPN adds a max-pooled level at twice the deepest stride (P6, named
``"pool"``), as in torchvision.

MobileNetV3 is wired here rather than through torchvision's ``mobilenet_backbone``: that
one taps the blocks that *start* a stride (``_is_cn``), so its default two maps are both at
stride 32 (blocks 13 and 16). We tap the last block of each stride instead (blocks 3, 6, 12,
16: 24, 40, 112 and 960 channels).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torchvision
from torch import nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from pixelseg.errors import InvalidInputError, unknown_choice
from pixelseg.models.blocks import group_norm
from pixelseg.models.weights import load_matching, read_state_dict

__all__ = [
    "BACKBONES",
    "NORMS",
    "build_fpn_backbone",
    "group_norm",
    "head_norm_layer",
    "level_stride",
    "load_backbone_weights",
    "max_trainable_layers",
]

logger = logging.getLogger(__name__)

BACKBONES = ("mobilenet_v3_large", "resnet18", "resnet34", "resnet50")
NORMS = ("batch", "frozen_batch", "group")

# ResNet stages from the deepest, as torchvision counts trainable_backbone_layers (0..5).
_RESNET_STAGES = ("layer4", "layer3", "layer2", "layer1", "conv1")
# Classifier keys a torchvision ImageNet state dict has and the detector does not use.
_CLASSIFIER_PREFIX = {"resnet": "fc.", "mobilenet": "classifier."}


def level_stride(level: int) -> int:
    """Stride of level ``level`` (1 -> 4, 2 -> 8, 3 -> 16, 4 -> 32)."""
    return 2 ** (level + 1)


def _backbone_norm_layer(norm: str) -> Callable[[int], nn.Module] | None:
    if norm == "group":
        return group_norm
    if norm == "frozen_batch":
        return FrozenBatchNorm2d
    # None lets MobileNetV3 keep its own BatchNorm (eps 1e-3, momentum 0.01), which its
    # ImageNet weights were trained with; ResNet's default is plain BatchNorm2d.
    return None


def head_norm_layer(norm: str) -> Callable[[int], nn.Module] | None:
    """Norm of the layers the detector adds (FPN, box and mask heads).

    ``frozen_batch`` means "no norm" there, as in torchvision's v1 Mask R-CNN: freezing the
    statistics of a freshly initialised layer would only be a fixed affine map.
    """
    return {"batch": nn.BatchNorm2d, "group": group_norm, "frozen_batch": None}[norm]


def max_trainable_layers(name: str) -> int:
    """Largest ``trainable_backbone_layers`` of a backbone (all of it trainable)."""
    return 6 if name.startswith("mobilenet") else 5


def load_backbone_weights(model: nn.Module, path: str | Path, name: str) -> None:
    """Load a torchvision classification state dict into ``model`` (the whole classifier).

    The classifier head keys (``fc.*``, ``classifier.*``) are ignored; any other key that
    is missing, unexpected or of the wrong shape raises CheckpointError naming the file and
    a few of those keys (a BatchNorm checkpoint into a GroupNorm backbone fails here).
    """
    head = _CLASSIFIER_PREFIX["mobilenet" if name.startswith("mobilenet") else "resnet"]
    state = read_state_dict(path, "backbone_weights")
    load_matching(model, state, path, option="backbone_weights", model_name=name, head=head)


def _freeze(params: Sequence[tuple[str, nn.Parameter]], keep: Callable[[str], bool]) -> None:
    for param_name, param in params:
        if not keep(param_name):
            param.requires_grad_(False)


def _resnet_body(
    name: str, norm: str, levels: list[int], weights: str | Path | None, trainable: int
) -> tuple[nn.Module, dict[str, str], list[int]]:
    model = getattr(torchvision.models, name)(weights=None, norm_layer=_backbone_norm_layer(norm))
    if weights is not None:
        load_backbone_weights(model, weights, name)
    stages = list(_RESNET_STAGES[:trainable]) + (["bn1"] if trainable == 5 else [])
    _freeze(list(model.named_parameters()), lambda p: any(p.startswith(s) for s in stages))
    return_layers = {f"layer{level}": str(i) for i, level in enumerate(levels)}
    # After construction ``inplanes`` is layer4's width (512 basic, 2048 bottleneck).
    channels = [model.inplanes // 8 * 2 ** (level - 1) for level in levels]
    return model, return_layers, channels


def _mobilenet_body(
    name: str, norm: str, levels: list[int], weights: str | Path | None, trainable: int
) -> tuple[nn.Module, dict[str, str], list[int]]:
    model = torchvision.models.mobilenet_v3_large(
        weights=None, norm_layer=_backbone_norm_layer(norm)
    )
    if weights is not None:
        load_backbone_weights(model, weights, name)
    features = model.features
    starts = [i for i, block in enumerate(features) if getattr(block, "_is_cn", False)]
    level_ends = [s - 1 for s in starts[1:]] + [len(features) - 1]  # strides 4, 8, 16, 32
    # trainable_backbone_layers counts stages from the deepest, as torchvision does for
    # MobileNet: stage starts [0, 2, 4, 7, 13, 16]; 6 trains everything, 0 nothing.
    stage_starts = [0, *starts, len(features) - 1]
    freeze_before = len(features) if trainable == 0 else stage_starts[len(stage_starts) - trainable]
    for block in features[:freeze_before]:
        _freeze(list(block.named_parameters()), lambda _: False)
    return_layers = {str(level_ends[level - 1]): str(i) for i, level in enumerate(levels)}
    channels = [features[level_ends[level - 1]].out_channels for level in levels]
    return features, return_layers, channels


def build_fpn_backbone(
    name: str,
    *,
    norm: str,
    levels: list[int],
    fpn_channels: int,
    weights: str | Path | None,
    trainable_layers: int,
) -> BackboneWithFPN:
    """Backbone body + FPN returning ``{"0": P_first, ..., "pool": P_last+1}``.

    ``levels`` are the returned levels (1..4, see the module docstring); every output has
    ``fpn_channels`` channels.
    """
    if name not in BACKBONES:
        raise unknown_choice("Mask R-CNN backbone", name, BACKBONES)
    if norm not in NORMS:
        raise unknown_choice("Mask R-CNN norm", norm, NORMS)
    if norm == "frozen_batch" and weights is None:
        logger.warning(
            "norm='frozen_batch' without backbone_weights freezes the statistics of random "
            "weights (an identity normalisation); use it with pretrained backbone_weights"
        )
    make_body = _mobilenet_body if name.startswith("mobilenet") else _resnet_body
    body, return_layers, channels = make_body(name, norm, levels, weights, trainable_layers)
    if not channels:
        raise InvalidInputError("returned_layers must name at least one level (1..4)")
    return BackboneWithFPN(
        body,
        return_layers,
        channels,
        fpn_channels,
        extra_blocks=LastLevelMaxPool(),
        norm_layer=head_norm_layer(norm),
    )
