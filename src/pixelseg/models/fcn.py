"""Fully convolutional networks FCN-32s/16s/8s (Long, Shelhamer and Darrell, 2015).

Differences from the Caffe reference, and why:

* No 100-pixel input padding. The original padded every input by 100 pixels so that the
  unpadded 7x7 ``conv6`` still worked on small images, then cropped at odd offsets. Here
  ``conv6`` is padded ("same") and the input is padded up to a multiple of 32 and the logits
  cropped back (:class:`~pixelseg.models.base.SegmentationModel`), so every score map aligns
  exactly with pool4/pool3 and no compute is spent on 200 extra rows and columns.
* The upsampling layers are per-class (``groups=num_classes``) transposed convs: the
  reference's full ``C x C`` kernels are initialised diagonal anyway, and for many classes
  (150 on ADE20K) the 64x64 one alone would hold 92 M parameters.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pixelseg.errors import InvalidInputError, unknown_choice
from pixelseg.models.base import SegmentationModel, init_weights
from pixelseg.models.encoders import available_encoders, build_encoder, load_weights_file

__all__ = [
    "FCN",
    "BilinearUpsample",
    "FCN8s",
    "FCN16s",
    "FCN32s",
    "Im2colConv2d",
    "bilinear_kernel",
]

logger = logging.getLogger(__name__)


def bilinear_kernel(size: int) -> torch.Tensor:
    """2D bilinear interpolation kernel ``[size, size]`` (Caffe's ``upsample_filt``).

    A transposed conv with this kernel, stride ``f``, kernel ``2f`` and padding ``f/2``
    equals bilinear upsampling by ``f`` (``align_corners=False``) of the zero-extended input.
    """
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    taps = 1 - (torch.arange(size, dtype=torch.float32) - center).abs() / factor
    return taps[:, None] * taps[None, :]


class BilinearUpsample(nn.ConvTranspose2d):
    """Learnable per-channel ``factor``x upsampling, initialised to bilinear interpolation.

    ``[B, channels, h, w]`` -> ``[B, channels, factor * h, factor * w]`` (``factor`` even).
    """

    def __init__(self, channels: int, factor: int) -> None:
        super().__init__(
            channels,
            channels,
            kernel_size=2 * factor,
            stride=factor,
            padding=factor // 2,
            groups=channels,
            bias=False,
        )  # ConvTranspose2d.__init__ calls our reset_parameters: bilinear from the start

    def reset_parameters(self) -> None:
        """Set every channel's kernel to the bilinear one."""
        with torch.no_grad():
            self.weight.copy_(bilinear_kernel(self.kernel_size[0]).expand_as(self.weight))


class Im2colConv2d(nn.Conv2d):
    """A ``Conv2d`` (same parameters and state dict) computed as unfold + one matrix product.

    For ``conv6`` (7x7, 512 -> 4096) on the few-pixel stride-32 maps, oneDNN's CPU kernels
    take 15-50 s for the weight gradient of a single image; the same product as one GEMM
    takes about 1 s, with identical results (it is how Caffe computed it). ``groups`` must be 1.
    Memory: the unfolded input holds ``B x in_channels*k*k x h'*w'`` values (25 MB per
    512x512 image for conv6).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_channels, h, w]`` -> ``[B, out_channels, h', w']`` (conv arithmetic)."""
        b, _, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
        )
        h_out = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        w_out = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)
        out = torch.matmul(self.weight.flatten(1), cols)  # [B, out_channels, h' * w']
        if self.bias is not None:
            out = out + self.bias[:, None]
        return out.view(b, self.out_channels, h_out, w_out)


class FCN(SegmentationModel):
    """Fully convolutional network (Long et al. 2015); build FCN32s, FCN16s or FCN8s.

    Encoder ``vgg16`` (default, as the paper) or any encoder of ``available_encoders()``.
    On VGG the classifier ``fc6``/``fc7`` become ``conv6`` (7x7, ``fc_channels`` = 4096) and
    ``conv7`` (1x1) with ReLU and dropout; with VGG ``encoder_weights`` the torchvision
    ``classifier`` weights are reshaped into them, as the paper does. Other encoders end in
    global pooling and a small classifier, which the paper's recipe simply discards (as it did
    for GoogLeNet), so ``fc_channels`` defaults to 0 there (score layer on the last features).
    ``score_fr`` scores the stride-32 features; FCN-16s/8s add zero-initialised score layers
    on the stride-16 (pool4) and stride-8 (pool3) features; every upsampling is a learnable
    transposed conv initialised to bilinear interpolation.

    ``x [B, in_channels, H, W]`` -> logits ``[B, num_classes, H, W]``.
    """

    skips = 0  # stride-16/8 score layers fused: 0 (32s), 1 (16s), 2 (8s)
    model_name = "fcn"

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        encoder: str | None = None,
        *,
        fc_channels: int | None = None,
        dropout: float = 0.5,
        encoder_weights: str | Path | None = None,
    ) -> None:
        super().__init__(num_classes, in_channels, size_multiple=32)
        encoder = "vgg16" if encoder is None else encoder
        if encoder not in available_encoders():
            raise unknown_choice(f"encoder for {self.model_name!r}", encoder, available_encoders())
        vgg = encoder.startswith("vgg")
        fc_channels = (4096 if vgg else 0) if fc_channels is None else fc_channels
        if isinstance(fc_channels, bool) or not isinstance(fc_channels, int) or fc_channels < 0:
            raise InvalidInputError(f"fc_channels must be an integer >= 0, got {fc_channels!r}")
        if not 0.0 <= dropout < 1.0:
            raise InvalidInputError(f"dropout must be in [0, 1), got {dropout!r}")

        self.encoder = build_encoder(encoder, in_channels, encoder_weights)
        strides = self.encoder.strides
        self._taps = {s: strides.index(s) for s in (8, 16, 32)}
        channels = {s: self.encoder.channels[i] for s, i in self._taps.items()}
        self.fc: nn.Module = nn.Identity()
        score_in = channels[32]
        if fc_channels > 0:
            # Built on "meta" and initialised once: torch's default init of 120 M weights,
            # overwritten right away by init_weights, would double the construction time.
            self.fc = nn.Sequential(
                Im2colConv2d(channels[32], fc_channels, 7, padding=3, device="meta"),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Conv2d(fc_channels, fc_channels, 1, device="meta"),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
            ).to_empty(device="cpu")
            score_in = fc_channels
        self.score_fr = nn.Conv2d(score_in, num_classes, 1)
        init_weights(self.fc)
        init_weights(self.score_fr)
        if self.skips == 0:
            self.upscore = BilinearUpsample(num_classes, 32)
        else:
            self.upscore2 = BilinearUpsample(num_classes, 2)
            self.score_pool4 = self._zero_score(channels[16], num_classes)
        if self.skips == 1:
            self.upscore16 = BilinearUpsample(num_classes, 16)
        elif self.skips == 2:
            self.upscore_pool4 = BilinearUpsample(num_classes, 2)
            self.score_pool3 = self._zero_score(channels[8], num_classes)
            self.upscore8 = BilinearUpsample(num_classes, 8)
        if vgg and fc_channels > 0 and encoder_weights is not None:
            self._convolutionalize(encoder_weights)

    @staticmethod
    def _zero_score(in_channels: int, num_classes: int) -> nn.Conv2d:
        # Zero init: a new skip starts as a no-op, so the net begins as its coarser parent.
        conv = nn.Conv2d(in_channels, num_classes, 1)
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
        return conv

    def _convolutionalize(self, path: str | Path) -> None:
        """Copy torchvision VGG ``classifier.0``/``classifier.3`` (fc6/fc7) into conv6/conv7."""
        state = load_weights_file(path)
        conv6, conv7 = self.fc[0], self.fc[3]
        shapes = {
            "classifier.0.weight": (conv6.out_channels, conv6.in_channels * 49),
            "classifier.0.bias": (conv6.out_channels,),
            "classifier.3.weight": (conv7.out_channels, conv7.in_channels),
            "classifier.3.bias": (conv7.out_channels,),
        }
        if any(k not in state or tuple(state[k].shape) != s for k, s in shapes.items()):
            logger.warning(
                "%s has no fc6/fc7 of shape %s; conv6/conv7 keep their random init",
                path,
                shapes["classifier.0.weight"],
            )
            return
        with torch.no_grad():
            conv6.weight.copy_(state["classifier.0.weight"].view_as(conv6.weight))
            conv6.bias.copy_(state["classifier.0.bias"])
            conv7.weight.copy_(state["classifier.3.weight"].view_as(conv7.weight))
            conv7.bias.copy_(state["classifier.3.bias"])
        logger.info("conv6/conv7 initialised from fc6/fc7 of %s", path)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes, H, W]`` for ``H, W`` multiples of 32."""
        features = self.encoder(x)
        score = self.score_fr(self.fc(features[self._taps[32]]))
        if self.skips == 0:
            return self.upscore(score)
        score = self.upscore2(score) + self.score_pool4(features[self._taps[16]])
        if self.skips == 1:
            return self.upscore16(score)
        score = self.upscore_pool4(score) + self.score_pool3(features[self._taps[8]])
        return self.upscore8(score)


class FCN32s(FCN):
    """FCN-32s (Long et al. 2015): VGG-16 by default, one 32x bilinear-initialised upsampling."""

    skips = 0
    model_name = "fcn32s"


class FCN16s(FCN):
    """FCN-16s (Long et al. 2015): FCN-32s plus a zero-initialised pool4 skip."""

    skips = 1
    model_name = "fcn16s"


class FCN8s(FCN):
    """FCN-8s (Long et al. 2015): FCN-16s plus a zero-initialised pool3 skip."""

    skips = 2
    model_name = "fcn8s"
