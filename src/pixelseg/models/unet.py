"""U-Net (Ronneberger et al., 2015), on its classic encoder or on a torchvision encoder."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from pixelseg.errors import InvalidInputError, unknown_choice
from pixelseg.models.base import (
    SegmentationModel,
    check_choice,
    check_positive_int,
    decoder_memory_format,
    init_weights,
)
from pixelseg.models.blocks import UPSAMPLING_MODES, DecoderBlock
from pixelseg.models.encoders import (
    ClassicUNetEncoder,
    Encoder,
    available_encoders,
    build_encoder,
)

__all__ = ["UNet", "UNetDecoder", "build_unet_encoder", "check_decoder_channels"]

# Decoder widths of segmentation_models_pytorch's Unet/UnetPlusPlus for 5-level encoders.
SMP_DECODER_CHANNELS = (256, 128, 64, 32, 16)


def extra_upsamplings(strides: Sequence[int]) -> int:
    """Number of 2x steps from the shallowest feature (stride ``strides[0]``) to stride 1.

    Also checks the contract the U-Net decoders need: strides 2**k, doubling level to level.
    """
    ok = strides[0] >= 1 and strides[0] & (strides[0] - 1) == 0
    ok = ok and all(b == 2 * a for a, b in itertools.pairwise(strides))
    if not ok:
        raise InvalidInputError(
            f"U-Net decoders need encoder strides that double level to level, got {tuple(strides)}"
        )
    return int(math.log2(strides[0]))


def check_decoder_channels(value: object, expected_len: int) -> tuple[int, ...]:
    """Return ``value`` as a tuple of ``expected_len`` positive ints, or raise naming it."""
    if (
        not isinstance(value, Sequence)
        or len(value) != expected_len
        or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in value)
    ):
        raise InvalidInputError(
            f"decoder_channels must be {expected_len} positive integers for this encoder "
            f"(one per upsampling step), got {value!r}"
        )
    return tuple(value)


def build_unet_encoder(
    model: str,
    encoder: str | None,
    in_channels: int,
    base_channels: int | None,
    encoder_weights: str | Path | None,
    default_base: int,
) -> Encoder:
    """The classic encoder (``encoder=None``) or torchvision encoder ``encoder``.

    Rejects options that do not apply: ``base_channels`` with a torchvision encoder,
    ``encoder_weights`` with the classic one.
    """
    if encoder is None:
        if encoder_weights is not None:
            raise InvalidInputError(
                f"{model}: encoder_weights={str(encoder_weights)!r} needs a torchvision encoder; "
                f"the classic encoder (encoder=None) has no pretrained weights. Valid encoders: "
                f"{', '.join(available_encoders())}"
            )
        base = default_base if base_channels is None else base_channels
        return ClassicUNetEncoder(in_channels, check_positive_int("base_channels", base))
    if encoder not in available_encoders():
        raise unknown_choice(f"encoder for {model!r}", encoder, available_encoders())
    if base_channels is not None:
        raise InvalidInputError(
            f"{model}: base_channels={base_channels!r} only applies to the classic encoder "
            f"(encoder=None), not to encoder={encoder!r}"
        )
    return build_encoder(encoder, in_channels=in_channels, weights=encoder_weights)


def unet_decoder_defaults(
    encoder: Encoder,
    classic: bool,
    decoder_channels: Sequence[int] | None,
    upsampling: str | None,
) -> tuple[Sequence[int], str, int]:
    """Decoder widths, upsampling mode and head kernel shared by U-Net and UNet++.

    The classic encoder mirrors its own widths with learnable up-convs and a 1x1 head (the
    paper); torchvision encoders take segmentation_models_pytorch's decoder (nearest
    upsampling, 3x3 head) so that both load smp's weights.
    """
    if upsampling is not None:
        check_choice("upsampling mode", upsampling, UPSAMPLING_MODES)
    if decoder_channels is None:
        decoder_channels = encoder.channels[-2::-1] if classic else SMP_DECODER_CHANNELS
    if upsampling is None:
        upsampling = "transpose" if classic else "nearest"
    return decoder_channels, upsampling, 1 if classic else 3


class UNetDecoder(nn.Module):
    """Expanding path over any encoder: one :class:`DecoderBlock` per skip level, deep to shallow,
    then blocks without skip until stride 1 (encoders whose first feature has stride 2).

    ``features`` (shallow to deep) -> ``[B, decoder_channels[-1], H, W]`` at stride 1.
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        encoder_strides: Sequence[int],
        decoder_channels: Sequence[int],
        upsampling: str,
    ) -> None:
        super().__init__()
        n_extra = extra_upsamplings(encoder_strides)
        decoder_channels = check_decoder_channels(
            decoder_channels, len(encoder_channels) - 1 + n_extra
        )
        skip_channels = [*encoder_channels[-2::-1], *([0] * n_extra)]
        in_channels = [encoder_channels[-1], *decoder_channels[:-1]]
        self.blocks = nn.ModuleList(
            DecoderBlock(c_in, c_skip, c_out, upsampling)
            for c_in, c_skip, c_out in zip(
                in_channels, skip_channels, decoder_channels, strict=True
            )
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Decode ``features`` (shallow to deep, as the encoder returns them)."""
        skips = features[-2::-1]
        x = features[-1]
        for i, block in enumerate(self.blocks):
            x = block(x, skips[i : i + 1])
        return x


class UNet(SegmentationModel):
    """U-Net (Ronneberger et al. 2015): classic encoder, or a torchvision encoder as smp's Unet.

    ``encoder=None`` (the paper): 4 downsamplings, widths ``base_channels * (1, 2, 4, 8, 16)``
    (default 64..1024), padded 3x3 convs with BatchNorm, ``upsampling="transpose"`` (2x2
    up-conv halving the channels; ``"bilinear"``/``"nearest"`` interpolate instead), 1x1 head.
    Input padded to a multiple of 16.

    ``encoder="resnet34"`` etc.: the decoder of segmentation_models_pytorch's ``Unet``:
    ``decoder_channels`` (256, 128, 64, 32, 16), nearest upsampling, a last block up to
    stride 1 without skip, 3x3 head. Input padded to a multiple of 32.

    ``x [B, in_channels, H, W]`` -> logits ``[B, num_classes, H, W]``.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        encoder: str | None = None,
        *,
        base_channels: int | None = None,
        upsampling: str | None = None,
        decoder_channels: Sequence[int] | None = None,
        encoder_weights: str | Path | None = None,
    ) -> None:
        super().__init__(num_classes, in_channels, size_multiple=1)
        self.encoder = build_unet_encoder(
            "unet", encoder, in_channels, base_channels, encoder_weights, default_base=64
        )
        decoder_channels, upsampling, kernel = unet_decoder_defaults(
            self.encoder, encoder is None, decoder_channels, upsampling
        )
        self.decoder = UNetDecoder(
            self.encoder.channels, self.encoder.strides, decoder_channels, upsampling
        )
        self.head = nn.Conv2d(decoder_channels[-1], num_classes, kernel, padding=kernel // 2)
        init_weights(self.decoder)
        init_weights(self.head)
        self.size_multiple = self.encoder.strides[-1]

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes, H, W]`` for ``H, W`` multiples of ``size_multiple``."""
        layout = decoder_memory_format(self, x)
        features = [f.contiguous(memory_format=layout) for f in self.encoder(x)]
        return self.head(self.decoder(features)).contiguous()
