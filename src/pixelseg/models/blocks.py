"""Building blocks shared by the decoders: conv-BN-ReLU, the U-Net decoder block, ASPP."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pixelseg.models.base import check_choice

__all__ = ["ASPP", "UPSAMPLING_MODES", "ConvBNReLU", "DecoderBlock"]

UPSAMPLING_MODES = ("transpose", "bilinear", "nearest")


def _folded_weight_and_bias(
    conv: nn.Conv2d, bn: nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of one conv equal to ``bn(conv(x))`` with ``bn`` in eval mode.

    Recomputed on every call rather than cached: a cache keyed on tensor versions would serve
    stale weights after edits that do not bump them (``param.data.copy_(...)``).
    """
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)  # type: ignore[operator]
    bias = bn.bias - bn.running_mean * scale  # type: ignore[operator]
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return conv.weight * scale[:, None, None, None], bias


def group_norm(num_channels: int) -> nn.GroupNorm:
    """GroupNorm with the most groups (at most 32) that still puts >= 2 channels in each.

    Groups must divide the channels, and MobileNetV3 has 16, 24, 40, 72, 120, 960, ...
    channels, so a fixed 32 does not fit. At least 2 channels per group because 1 is
    InstanceNorm, clearly the worst setting in Wu & He's ablation (GroupNorm, Table 3).
    """
    groups = max(
        g for g in range(1, min(32, max(1, num_channels // 2)) + 1) if num_channels % g == 0
    )
    return nn.GroupNorm(groups, num_channels)


class ConvBNReLU(nn.Module):
    """``k x k`` conv (no bias: BN follows), BatchNorm, in-place ReLU; "same" padding.

    ``separable=True`` makes the conv depthwise ``k x k`` followed by pointwise 1x1 (as
    DeepLabV3+ and segmentation_models_pytorch): about ``k*k`` times fewer multiply-adds.
    In eval mode the BatchNorm is folded into the (pointwise) conv's weight and bias, which
    gives the same result without a separate pass over the activations; this explicit
    ``forward`` is pixelseg's only BatchNorm folding (torchvision encoders run unchanged).
    The modules and the state dict are the plain ``conv``/``bn`` ones either way.
    Input ``[B, in_channels, H, W]`` -> ``[B, out_channels, H, W]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        dilation: int = 1,
        separable: bool = False,
    ) -> None:
        super().__init__()
        padding = dilation * (kernel_size // 2)
        self.depthwise: nn.Conv2d | None = None
        if separable and kernel_size > 1:
            self.depthwise = nn.Conv2d(
                in_channels,
                in_channels,
                kernel_size,
                padding=padding,
                dilation=dilation,
                groups=in_channels,
                bias=False,
            )
            kernel_size, padding, dilation = 1, 0, 1
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_channels, H, W]`` -> ``[B, out_channels, H, W]``."""
        if self.depthwise is not None:
            x = self.depthwise(x)
        if self.training or self.bn.running_var is None:
            x = self.bn(self.conv(x))
        else:
            weight, bias = _folded_weight_and_bias(self.conv, self.bn)
            conv = self.conv
            x = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation)
        return F.relu(x, inplace=True)


class DecoderBlock(nn.Module):
    """U-Net decoder step: upsample 2x, concatenate skip features, two 3x3 conv-BN-ReLU.

    ``upsampling``: ``"transpose"`` is the paper's learnable 2x2 up-conv that halves the
    channels; ``"bilinear"`` and ``"nearest"`` are parameter-free and keep them (nearest is
    segmentation_models_pytorch's default). ``x [B, in_channels, h, w]`` and skips
    ``[B, c_k, 2h, 2w]`` with ``sum(c_k) == skip_channels`` -> ``[B, out_channels, 2h, 2w]``.
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        upsampling: str = "nearest",
    ) -> None:
        super().__init__()
        check_choice("upsampling mode", upsampling, UPSAMPLING_MODES)
        self.upsampling = upsampling
        self.up: nn.Module | None = None
        up_channels = in_channels
        if upsampling == "transpose":
            up_channels = max(in_channels // 2, 1)
            self.up = nn.ConvTranspose2d(in_channels, up_channels, kernel_size=2, stride=2)
        self.conv1 = ConvBNReLU(up_channels + skip_channels, out_channels)
        self.conv2 = ConvBNReLU(out_channels, out_channels)

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """Upsample ``x`` to the skips' size (or 2x without skips), fuse, convolve."""
        if self.up is not None:
            x = self.up(x)
        else:
            size = skips[0].shape[-2:] if skips else (2 * x.shape[-2], 2 * x.shape[-1])
            align = False if self.upsampling == "bilinear" else None
            x = F.interpolate(x, size=size, mode=self.upsampling, align_corners=align)
        if skips:
            x = torch.cat([x, *skips], dim=1)
        return self.conv2(self.conv1(x))


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling (Chen et al., DeepLabV3).

    Parallel branches on ``x [B, in_channels, h, w]``: a 1x1 conv, one 3x3 conv per atrous
    rate, and image pooling (global average -> 1x1 conv -> broadcast back to ``h x w``); their
    concatenation is projected by a 1x1 conv-BN-ReLU and dropout -> ``[B, out_channels, h, w]``.

    The image-pooling branch uses a biased 1x1 conv + ReLU without BatchNorm: BN over a 1x1
    map has one value per channel at batch size 1, which torch rejects in training mode.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 256,
        rates: Sequence[int] = (6, 12, 18),
        separable: bool = False,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        branches = [ConvBNReLU(in_channels, out_channels, kernel_size=1)]
        branches += [
            ConvBNReLU(in_channels, out_channels, dilation=r, separable=separable) for r in rates
        ]
        self.branches = nn.ModuleList(branches)
        self.pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1),
            nn.ReLU(inplace=True),
        )
        self.project = nn.Sequential(
            ConvBNReLU(out_channels * (len(rates) + 2), out_channels, kernel_size=1),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_channels, h, w]`` -> ``[B, out_channels, h, w]``."""
        # Bilinear upsampling of a 1x1 map is a broadcast; expand avoids the interpolation.
        pooled = self.pool(x).expand(-1, -1, x.shape[-2], x.shape[-1])
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))
