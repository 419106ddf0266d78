"""Encoders: torchvision backbones (and the classic U-Net encoder) as lists of feature maps.

The contract every decoder relies on (as in segmentation_models_pytorch): an :class:`Encoder`
maps ``x [B, in_channels, H, W]`` to a list of feature maps ordered shallow to deep, where
feature ``i`` has ``channels[i]`` channels and is ``strides[i]`` times smaller than the input
(for ``H, W`` divisible by the deepest stride).

Backbones are torchvision's own classes, always without downloaded weights. They are built on
the ``meta`` device and materialised with :func:`init_weights`, torchvision's own init scheme
(bar depthwise convs, see there); this skips allocating and initialising the ImageNet classifier we drop (120 M
parameters for VGG-16) and the double init of every conv. ``weights=PATH`` loads a local
torchvision state dict instead.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet, conv3x3

from pixelseg.errors import InvalidInputError, unknown_choice
from pixelseg.models.base import init_weights
from pixelseg.models.blocks import ConvBNReLU
from pixelseg.models.weights import load_matching, read_state_dict

__all__ = [
    "ClassicUNetEncoder",
    "DilatedBasicBlock",
    "Encoder",
    "MobileNetV3Encoder",
    "ResNetEncoder",
    "VGGEncoder",
    "available_encoders",
    "build_encoder",
    "load_weights_file",
]

logger = logging.getLogger(__name__)


class Encoder(nn.Module):
    """Backbone contract: ``forward(x) -> list[Tensor]`` with known ``channels`` and ``strides``."""

    channels: tuple[int, ...]
    strides: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps ``[B, channels[i], H / strides[i], W / strides[i]]``, shallow to deep."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward")


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a local torchvision state dict named by ``model.encoder_weights``
    (see :func:`pixelseg.models.weights.read_state_dict`)."""
    return read_state_dict(path, "encoder_weights")


def _load_matching(
    module: nn.Module, state: dict[str, torch.Tensor], path: str | Path, name: str, head: str
) -> None:
    """Load ``state`` into ``module`` strictly, ignoring the classifier keys under ``head``."""
    load_matching(module, state, path, option="encoder_weights", model_name=name, head=head)
    logger.info("loaded %s encoder weights from %s", name, path)


def _replace_first_conv(conv: nn.Conv2d, in_channels: int, pretrained: bool) -> nn.Conv2d:
    """A copy of ``conv`` taking ``in_channels`` inputs.

    With pretrained RGB weights, one channel gets their sum (a grey image g seen as (g, g, g)
    gives exactly the RGB response), other counts cycle the RGB filters scaled by 3 /
    in_channels, as segmentation_models_pytorch does. Without weights: fresh Kaiming init.
    """
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=conv.bias is not None,
    )
    init_weights(new)
    if pretrained:
        with torch.no_grad():
            w = conv.weight
            if in_channels == 1:
                new.weight.copy_(w.sum(dim=1, keepdim=True))
            else:
                idx = torch.arange(in_channels) % w.shape[1]
                new.weight.copy_(w[:, idx] * (w.shape[1] / in_channels))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
    return new


class DilatedBasicBlock(BasicBlock):
    """torchvision's BasicBlock with dilation support, for ``replace_stride_with_dilation``.

    torchvision's ResNet computes the dilation of every block itself (the first block of a
    dilated stage keeps the previous dilation, the others get the new one) and passes it to
    the block; its BasicBlock raises NotImplementedError for dilation > 1. This subclass
    applies that dilation to both 3x3 convs. Parameter names and shapes are BasicBlock's,
    so torchvision resnet18/34 state dicts load unchanged.
    """

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__(inplanes, planes, stride, downsample, groups, base_width, 1, norm_layer)
        if dilation > 1:
            self.conv1 = conv3x3(inplanes, planes, stride, dilation=dilation)
            self.conv2 = conv3x3(planes, planes, dilation=dilation)


_DILATE = {32: [False, False, False], 16: [False, False, True], 8: [False, True, True]}
_RESNET_LAYERS = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
    "resnet101": (Bottleneck, [3, 4, 23, 3]),
}


def _check_output_stride(name: str, output_stride: int, supported: tuple[int, ...]) -> None:
    if output_stride not in supported:
        raise InvalidInputError(
            f"encoder {name!r} supports output_stride {', '.join(map(str, supported))}; "
            f"got {output_stride!r}"
        )


class ResNetEncoder(Encoder):
    """torchvision ResNet-18/34/50/101: stem (stride 2) and layer1..layer4 (strides 4..32).

    ``output_stride`` 16 or 8 dilates layer4 (and layer3) through torchvision's own
    ``replace_stride_with_dilation``; for the BasicBlock nets (18/34) the blocks are
    :class:`DilatedBasicBlock`. Channels: (64, 64, 128, 256, 512) for 18/34,
    (64, 256, 512, 1024, 2048) for 50/101.
    """

    def __init__(
        self,
        name: str = "resnet50",
        in_channels: int = 3,
        weights: str | Path | None = None,
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        if name not in _RESNET_LAYERS:
            raise unknown_choice("ResNet encoder", name, _RESNET_LAYERS)
        _check_output_stride(name, output_stride, (8, 16, 32))
        dilate = _DILATE[output_stride]
        block, layers = _RESNET_LAYERS[name]
        with torch.device("meta"):
            if block is BasicBlock and any(dilate):
                net = ResNet(DilatedBasicBlock, layers, replace_stride_with_dilation=dilate)
            else:
                builder = getattr(torchvision.models, name)
                net = builder(weights=None, replace_stride_with_dilation=dilate)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        self.to_empty(device="cpu")
        init_weights(self)
        if weights is not None:
            _load_matching(self, load_weights_file(weights), weights, name, head="fc.")
        if in_channels != 3:
            self.conv1 = _replace_first_conv(self.conv1, in_channels, weights is not None)
        width = 4 if block is Bottleneck else 1
        self.channels = (64, 64 * width, 128 * width, 256 * width, 512 * width)
        stage_strides = [2, 4, 8, 16, 32]
        for i, d in enumerate(dilate):  # a dilated stage keeps the previous stride
            if d:
                stage_strides[i + 2] = stage_strides[i + 1]
        self.strides = tuple(stage_strides)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Five feature maps, strides ``self.strides``."""
        f1 = self.relu(self.bn1(self.conv1(x)))
        f2 = self.layer1(self.maxpool(f1))
        f3 = self.layer2(f2)
        f4 = self.layer3(f3)
        f5 = self.layer4(f4)
        return [f1, f2, f3, f4, f5]


class VGGEncoder(Encoder):
    """torchvision VGG-16 (optionally with BatchNorm): pool1..pool5 outputs, strides 2..32.

    ``features`` is built by torchvision's ``vgg.make_layers`` exactly as ``vgg16()`` builds
    it (same parameter names), without the 120 M-parameter classifier. Channels:
    (64, 128, 256, 512, 512). VGG has no dilation mechanism in torchvision: output stride 32.
    """

    def __init__(
        self,
        name: str = "vgg16",
        in_channels: int = 3,
        weights: str | Path | None = None,
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        if name not in ("vgg16", "vgg16_bn"):
            raise unknown_choice("VGG encoder", name, ("vgg16", "vgg16_bn"))
        _check_output_stride(name, output_stride, (32,))
        with torch.device("meta"):
            features = torchvision.models.vgg.make_layers(
                torchvision.models.vgg.cfgs["D"], batch_norm=name.endswith("_bn")
            )
        self.features = features.to_empty(device="cpu")
        init_weights(self)
        if weights is not None:
            _load_matching(self, load_weights_file(weights), weights, name, head="classifier.")
        if in_channels != 3:
            self.features[0] = _replace_first_conv(
                self.features[0], in_channels, weights is not None
            )
        self._taps = tuple(i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d))
        self.channels = (64, 128, 256, 512, 512)
        self.strides = (2, 4, 8, 16, 32)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five pooling outputs pool1..pool5."""
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._taps:
                out.append(x)
        return out


class MobileNetV3Encoder(Encoder):
    """torchvision MobileNetV3-Large: features at strides 2, 4, 8, 16, 32.

    ``output_stride=16`` uses torchvision's ``dilated=True`` (the last stage keeps stride 16
    with dilation 2); torchvision offers no stride-8 variant. Channels: (16, 24, 40, 112, 960).
    """

    _TAPS = (1, 3, 6, 12, 16)  # last block before each stride-2 block, and the final 1x1 conv

    def __init__(
        self,
        name: str = "mobilenet_v3_large",
        in_channels: int = 3,
        weights: str | Path | None = None,
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        if name != "mobilenet_v3_large":
            raise unknown_choice("MobileNetV3 encoder", name, ("mobilenet_v3_large",))
        _check_output_stride(name, output_stride, (16, 32))
        with torch.device("meta"):
            net = torchvision.models.mobilenet_v3_large(weights=None, dilated=output_stride == 16)
        self.features = net.features.to_empty(device="cpu")
        init_weights(self)
        if weights is not None:
            _load_matching(self, load_weights_file(weights), weights, name, head="classifier.")
        if in_channels != 3:
            stem = self.features[0]
            stem[0] = _replace_first_conv(stem[0], in_channels, weights is not None)
        self.channels = (16, 24, 40, 112, 960)
        self.strides = (2, 4, 8, 16, output_stride)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Five feature maps, strides ``self.strides``."""
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._TAPS:
                out.append(x)
        return out


class ClassicUNetEncoder(Encoder):
    """The contracting path of Ronneberger et al.: double 3x3 conv stages, 2x2 max-pool between.

    Stage ``i`` has ``base_channels * 2**i`` channels at stride ``2**i`` (i = 0..depth); with
    the default 64 and depth 4 the widths are 64..1024 as in the paper. Convs are padded
    ("same") with BatchNorm, rather than the paper's unpadded convs, so output size = input.
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 64, depth: int = 4) -> None:
        super().__init__()
        widths = [base_channels * 2**i for i in range(depth + 1)]
        stages = [
            nn.Sequential(ConvBNReLU(in_channels, widths[0]), ConvBNReLU(widths[0], widths[0]))
        ]
        for c_in, c_out in itertools.pairwise(widths):
            stages.append(
                nn.Sequential(nn.MaxPool2d(2), ConvBNReLU(c_in, c_out), ConvBNReLU(c_out, c_out))
            )
        self.stages = nn.ModuleList(stages)
        init_weights(self)
        self.channels = tuple(widths)
        self.strides = tuple(2**i for i in range(depth + 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``depth + 1`` feature maps, strides 1, 2, ..., 2**depth."""
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


_ENCODERS: dict[str, tuple[Callable[..., Encoder], str]] = {
    "resnet18": (partial(ResNetEncoder, "resnet18"), "torchvision ResNet-18 (11 M params)"),
    "resnet34": (partial(ResNetEncoder, "resnet34"), "torchvision ResNet-34 (21 M params)"),
    "resnet50": (partial(ResNetEncoder, "resnet50"), "torchvision ResNet-50 (24 M params)"),
    "resnet101": (partial(ResNetEncoder, "resnet101"), "torchvision ResNet-101 (43 M params)"),
    "vgg16": (partial(VGGEncoder, "vgg16"), "torchvision VGG-16 conv layers (15 M params)"),
    "vgg16_bn": (
        partial(VGGEncoder, "vgg16_bn"),
        "torchvision VGG-16 conv layers with BatchNorm (15 M params)",
    ),
    "mobilenet_v3_large": (
        partial(MobileNetV3Encoder, "mobilenet_v3_large"),
        "torchvision MobileNetV3-Large features (3 M params)",
    ),
}


def available_encoders() -> dict[str, str]:
    """Encoder name -> one-line description, for ``encoder=`` of the models."""
    return {name: description for name, (_, description) in _ENCODERS.items()}


def build_encoder(
    name: str,
    in_channels: int = 3,
    weights: str | Path | None = None,
    output_stride: int = 32,
) -> Encoder:
    """Build encoder ``name`` taking ``in_channels`` inputs; ``weights`` is a local file.

    ``output_stride`` 8 or 16 dilates the deepest stages (ResNets; MobileNetV3: 16 only).
    """
    if name not in _ENCODERS:
        raise unknown_choice("encoder", name, _ENCODERS)
    builder, _ = _ENCODERS[name]
    return builder(in_channels=in_channels, weights=weights, output_stride=output_stride)
