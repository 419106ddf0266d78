"""UNet++ (Zhou et al., 2018): U-Net with nested, dense skip pathways and deep supervision."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pixelseg.errors import PixelsegError
from pixelseg.models.base import (
    SegmentationModel,
    check_choice,
    decoder_memory_format,
    init_weights,
)
from pixelseg.models.blocks import DecoderBlock
from pixelseg.models.unet import (
    build_unet_encoder,
    check_decoder_channels,
    extra_upsamplings,
    unet_decoder_defaults,
)

__all__ = ["NestedDecoder", "UNetPlusPlus"]

DEEP_SUPERVISION_INFERENCE = ("average", "last")


class NestedDecoder(nn.Module):
    """The nested skip pathways of UNet++ over any encoder (paper notation ``X^{i,j}``).

    ``X^{i,0}`` is encoder feature ``i`` (shallow to deep, L + 1 levels). For ``j >= 1``:
    ``X^{i,j} = H(cat(U(X^{i+1,j-1}), X^{i,j-1}, ..., X^{i,0}))`` with ``U`` a 2x upsampling
    and ``H`` two 3x3 conv-BN-ReLU (:class:`DecoderBlock`). Widths follow
    segmentation_models_pytorch's UnetPlusPlus: node ``X^{i,j}`` has the encoder width of
    level ``i``, except the diagonal ``i + j == L`` which takes ``decoder_channels[j - 1]``;
    the remaining ``decoder_channels`` are blocks without skip that bring ``X^{0,L}`` from the
    encoder's first stride to stride 1 (see :meth:`finish`).
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
        self.depth = depth = len(encoder_channels) - 1
        decoder_channels = check_decoder_channels(decoder_channels, depth + n_extra)
        width = {(i, 0): c for i, c in enumerate(encoder_channels)}
        self.nodes = nn.ModuleDict()
        for j in range(1, depth + 1):
            for i in range(depth + 1 - j):
                out = decoder_channels[j - 1] if i + j == depth else encoder_channels[i]
                skips = sum(width[(i, k)] for k in range(j))
                self.nodes[f"x_{i}_{j}"] = DecoderBlock(
                    width[(i + 1, j - 1)], skips, out, upsampling
                )
                width[(i, j)] = out
        self.level0_channels = tuple(width[(0, j)] for j in range(1, depth + 1))
        ins = [width[(0, depth)], *decoder_channels[depth:]][:-1]
        self.final = nn.ModuleList(
            DecoderBlock(c_in, 0, c_out, upsampling)
            for c_in, c_out in zip(ins, decoder_channels[depth:], strict=True)
        )
        self.out_channels = decoder_channels[-1]

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """``[X^{0,1}, ..., X^{0,L}]``, all at the stride of ``features[0]``."""
        x = {(i, 0): f for i, f in enumerate(features)}
        for j in range(1, self.depth + 1):
            for i in range(self.depth + 1 - j):
                # Newest first, as segmentation_models_pytorch concatenates: same weight layout.
                skips = [x[(i, k)] for k in range(j - 1, -1, -1)]
                x[(i, j)] = self.nodes[f"x_{i}_{j}"](x[(i + 1, j - 1)], skips)
        return [x[(0, j)] for j in range(1, self.depth + 1)]

    def finish(self, x0: torch.Tensor) -> torch.Tensor:
        """``X^{0,L}`` -> ``[B, out_channels, H, W]`` at stride 1 (identity for stride-1 encoders)."""
        for block in self.final:
            x0 = block(x0)
        return x0


class UNetPlusPlus(SegmentationModel):
    """UNet++ (Zhou et al. 2018): nested dense skips; classic encoder or smp's UnetPlusPlus.

    ``encoder=None``: the paper's plain encoder (widths ``base_channels * (1..16)``, default
    32..512), transposed-conv upsampling, a 1x1 head on each ``X^{0,j}`` (full resolution).
    ``encoder="resnet34"`` etc.: segmentation_models_pytorch's UnetPlusPlus layout
    (``decoder_channels`` (256, 128, 64, 32, 16), nearest upsampling, 3x3 head).

    ``deep_supervision=True`` adds a head on every nested output ``X^{0,j}`` (j = 1..L): in
    training mode ``forward`` returns the list of L logits, all ``[B, num_classes, H, W]``,
    the last one being the main head. In eval mode it returns one tensor:
    ``deep_supervision_inference="average"`` the mean of the L logits, ``"last"`` the main
    head only (the other heads are then not computed). With a torchvision encoder ``X^{0,j}``
    has stride 2: the side heads (1x1 convs) are upsampled bilinearly, while the main head
    goes through the decoder's last block as without deep supervision.
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
        deep_supervision: bool = False,
        deep_supervision_inference: str = "average",
        encoder_weights: str | Path | None = None,
    ) -> None:
        super().__init__(num_classes, in_channels, size_multiple=1)
        check_choice(
            "deep_supervision_inference", deep_supervision_inference, DEEP_SUPERVISION_INFERENCE
        )
        self.encoder = build_unet_encoder(
            "unetpp", encoder, in_channels, base_channels, encoder_weights, default_base=32
        )
        decoder_channels, upsampling, kernel = unet_decoder_defaults(
            self.encoder, encoder is None, decoder_channels, upsampling
        )
        self.decoder = NestedDecoder(
            self.encoder.channels, self.encoder.strides, decoder_channels, upsampling
        )
        self.head = nn.Conv2d(self.decoder.out_channels, num_classes, kernel, padding=kernel // 2)
        self.deep_supervision = bool(deep_supervision)
        self.deep_supervision_inference = deep_supervision_inference
        side_channels = self.decoder.level0_channels[:-1] if self.deep_supervision else ()
        self.side_heads = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in side_channels)
        init_weights(self.decoder)
        init_weights(self.head)
        init_weights(self.side_heads)
        self.size_multiple = self.encoder.strides[-1]

    def _level0(self, x: torch.Tensor) -> list[torch.Tensor]:
        layout = decoder_memory_format(self, x)
        return self.decoder([f.contiguous(memory_format=layout) for f in self.encoder(x)])

    def _all_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        level0 = self._level0(x)
        size = x.shape[-2:]
        outs = []
        for head, feature in zip(self.side_heads, level0[:-1], strict=True):
            logits = head(feature).contiguous()
            if logits.shape[-2:] != size:
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            outs.append(logits)
        outs.append(self.head(self.decoder.finish(level0[-1])).contiguous())
        return outs

    def _main_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder.finish(self._level0(x)[-1])).contiguous()

    def nested_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every nested output ``X^{0,1..L}`` whatever the mode (deep supervision only).

        ``x [B, in_channels, H, W]`` -> list of L tensors ``[B, num_classes, H, W]``.
        """
        if not self.deep_supervision:
            raise PixelsegError("nested_logits needs a model built with deep_supervision=True")
        return self.run_padded(self._all_logits, x)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Main logits, or the list of nested logits (deep supervision, training mode)."""
        if not self.deep_supervision or (
            not self.training and self.deep_supervision_inference == "last"
        ):
            return self._main_logits(x)
        outs = self._all_logits(x)
        if self.training:
            return outs
        return torch.stack(outs).mean(dim=0)
