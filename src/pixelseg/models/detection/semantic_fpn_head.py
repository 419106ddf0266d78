"""The semantic FPN head of Panoptic FPN (Kirillov et al., 2019; detectron2's SemSegFPNHead).

Each FPN level is brought to the finest stride present (the *common stride*: 4 with P2-P5)
by stages of 3x3 conv + GroupNorm + ReLU + 2x bilinear upsampling; the branches are summed
and a 1x1 conv classifies every cell. A level at stride ``s`` gets ``max(1, log2(s / c))``
stages for common stride ``c``, and the common-stride level one stage without upsampling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from pixelseg.errors import InvalidInputError
from pixelseg.models.blocks import group_norm

__all__ = ["SemanticFPNHead"]


def _stage(in_channels: int, out_channels: int, upsample: bool) -> nn.Sequential:
    # No conv bias: the GroupNorm's shift follows. GroupNorm, not the detector's norm,
    # because batch statistics at 1-4 images are noise, and detectron2's head uses GN too.
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        group_norm(out_channels),
        nn.ReLU(inplace=True),
    ]
    if upsample:
        layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
    return nn.Sequential(*layers)


class SemanticFPNHead(nn.Module):
    """Semantic logits from FPN levels: ``[B, in_channels, H/s_i, W/s_i]`` for each stride
    ``s_i`` -> ``[B, num_classes, H/c, W/c]`` at the common stride ``c = min(strides)``.

    The caller upsamples the logits to the input size (x ``common_stride``, bilinear), so
    the loss and the prediction live at pixel resolution, as in the paper.
    """

    def __init__(
        self,
        in_channels: int,
        strides: Sequence[int],
        num_classes: int,
        channels: int = 128,
    ) -> None:
        super().__init__()
        strides = [int(s) for s in strides]
        if not strides or any(s < 1 or s & (s - 1) for s in strides):
            raise InvalidInputError(f"FPN strides must be powers of 2, got {strides}")
        if channels < 1 or num_classes < 1:
            raise InvalidInputError(
                f"semantic head needs channels >= 1 and num_classes >= 1, "
                f"got channels={channels}, num_classes={num_classes}"
            )
        self.strides = strides
        self.common_stride = min(strides)
        self.scale_heads = nn.ModuleList()
        for stride in strides:
            ups = int(math.log2(stride // self.common_stride))
            stages = [
                _stage(in_channels if k == 0 else channels, channels, upsample=ups > 0)
                for k in range(max(1, ups))
            ]
            self.scale_heads.append(nn.Sequential(*stages))
        self.predictor = nn.Conv2d(channels, num_classes, 1)
        # The 3x3 convs as detectron2 ("MSRA fill": He normal over fan-out). The classifier
        # not: MSRA fill over its few outputs starts with logits of std ~3-10 (initial
        # cross-entropy 5-18 measured with 32 channels), a semantic loss that would swamp
        # the instance terms early on; std 0.01 starts near uniform (ln C), as torchvision's
        # box classifier.
        for module in self.scale_heads.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """``features`` one map per stride, in ``strides`` order -> logits at the common stride."""
        if len(features) != len(self.scale_heads):
            raise InvalidInputError(
                f"semantic head expects {len(self.scale_heads)} feature maps "
                f"(strides {self.strides}), got {len(features)}"
            )
        total = self.scale_heads[0](features[0])
        for head, feature in zip(self.scale_heads[1:], features[1:], strict=True):
            out = head(feature)
            if out.shape[-2:] != total.shape[-2:]:
                # Only when the input size is not a multiple of the largest stride; the
                # detector pads to 32, so this is for direct use of the head.
                out = F.interpolate(
                    out, size=total.shape[-2:], mode="bilinear", align_corners=False
                )
            total = total + out
        return self.predictor(total)
