"""DeepLabV3+ (Chen et al., 2018): ASPP on a dilated encoder, plus a stride-4 decoder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pixelseg.errors import InvalidInputError, unknown_choice
from pixelseg.models.base import (
    SegmentationModel,
    check_positive_int,
    decoder_memory_format,
    init_weights,
)
from pixelseg.models.blocks import ASPP, ConvBNReLU
from pixelseg.models.encoders import available_encoders, build_encoder

__all__ = ["DeepLabV3Plus"]

SUPPORTED_ENCODERS = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v3_large")
# The paper's atrous rates: doubled when the output stride halves.
DEFAULT_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}


class DeepLabV3Plus(SegmentationModel):
    """DeepLabV3+ (Chen et al. 2018): dilated encoder, ASPP, decoder with stride-4 features.

    The encoder (default ``resnet50``) is dilated to ``output_stride`` 16 or 8 through
    torchvision's own mechanisms (ResNet ``replace_stride_with_dilation``; MobileNetV3
    ``dilated=True``, which only gives 16). ASPP: 1x1, three 3x3 at ``atrous_rates`` (6, 12,
    18 at stride 16; 12, 24, 36 at 8), image pooling, ``aspp_channels`` (256) each, BN+ReLU,
    dropout. Decoder: ASPP output upsampled to stride 4, concatenated with a
    ``low_level_channels`` (48) 1x1 projection of the stride-4 features, two 3x3 conv-BN-ReLU,
    1x1 classifier, bilinear upsampling to the input. ``separable=True`` (default, as the
    paper's Xception model and segmentation_models_pytorch) makes the 3x3 convs of ASPP and
    decoder depthwise-separable. Input padded to a multiple of ``output_stride``.
    Parameters with ResNet-50 and 21 classes: 26.68 M separable (23.51 M encoder), 40.35 M
    dense. segmentation_models_pytorch's DeepLabV3Plus differs in one place: its decoder has
    a single 3x3 conv after the fusion (plus one on the ASPP output at stride 16).

    ``x [B, in_channels, H, W]`` -> logits ``[B, num_classes, H, W]``.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        encoder: str | None = None,
        *,
        output_stride: int = 16,
        atrous_rates: Sequence[int] | None = None,
        aspp_channels: int = 256,
        aspp_dropout: float = 0.5,
        low_level_channels: int = 48,
        separable: bool = True,
        encoder_weights: str | Path | None = None,
    ) -> None:
        super().__init__(num_classes, in_channels, size_multiple=output_stride)
        encoder = "resnet50" if encoder is None else encoder
        if encoder not in SUPPORTED_ENCODERS:
            if encoder in available_encoders():  # exists, but cannot be dilated in torchvision
                raise InvalidInputError(
                    f"encoder {encoder!r} cannot be dilated for 'deeplabv3plus' (torchvision "
                    f"offers no dilation for it). Valid choices: {', '.join(SUPPORTED_ENCODERS)}"
                )
            raise unknown_choice("encoder for 'deeplabv3plus'", encoder, SUPPORTED_ENCODERS)
        if output_stride not in DEFAULT_RATES:
            raise InvalidInputError(f"output_stride must be 8 or 16, got {output_stride!r}")
        if encoder == "mobilenet_v3_large" and output_stride != 16:
            raise InvalidInputError(
                f"output_stride={output_stride} is not available for encoder {encoder!r}: "
                "torchvision's dilated MobileNetV3 has output stride 16 only. Valid: 16"
            )
        rates = DEFAULT_RATES[output_stride] if atrous_rates is None else tuple(atrous_rates)
        if not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in rates):
            raise InvalidInputError(f"atrous_rates must be positive integers, got {rates!r}")
        check_positive_int("aspp_channels", aspp_channels)
        check_positive_int("low_level_channels", low_level_channels)
        if not 0.0 <= aspp_dropout < 1.0:
            raise InvalidInputError(f"aspp_dropout must be in [0, 1), got {aspp_dropout!r}")

        self.encoder = build_encoder(encoder, in_channels, encoder_weights, output_stride)
        self._low_index = self.encoder.strides.index(4)
        self.aspp = ASPP(
            self.encoder.channels[-1],
            aspp_channels,
            rates,
            separable=separable,
            dropout=aspp_dropout,
        )
        self.low_level = ConvBNReLU(
            self.encoder.channels[self._low_index], low_level_channels, kernel_size=1
        )
        self.fuse = nn.Sequential(
            ConvBNReLU(aspp_channels + low_level_channels, aspp_channels, separable=separable),
            ConvBNReLU(aspp_channels, aspp_channels, separable=separable),
        )
        self.classifier = nn.Conv2d(aspp_channels, num_classes, 1)
        for part in (self.aspp, self.low_level, self.fuse, self.classifier):
            init_weights(part)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes, H, W]`` for ``H, W`` multiples of ``output_stride``."""
        features = self.encoder(x)
        # Converting after the low-level projection and ASPP: only small maps change layout.
        layout = decoder_memory_format(self, x)
        low = self.low_level(features[self._low_index]).contiguous(memory_format=layout)
        y = self.aspp(features[-1]).contiguous(memory_format=layout)
        y = F.interpolate(y, size=low.shape[-2:], mode="bilinear", align_corners=False)
        y = self.classifier(self.fuse(torch.cat([y, low], dim=1))).contiguous()
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
