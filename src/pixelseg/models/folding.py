"""BatchNorm folded into the preceding conv at inference, for encoders built by torchvision.

In eval mode a BatchNorm is a fixed per-channel affine map, so ``bn(conv(x))`` equals one
conv with rescaled weights and a bias. Eager PyTorch does not do this by itself (only
``torch.jit.freeze`` or an FX pass do), and each unfolded BatchNorm is one more pass over
the activations: about 3% of a ResNet-50's CPU latency at 512x512. torchvision's
``fuse_conv_bn_eval`` builds a new conv and drops the BatchNorm, which would change the
module tree and the state dict, and stop the model from training again; here the modules
stay where they are with the same parameters, and only their behaviour in eval mode changes:
the conv computes with folded weights and the BatchNorm passes its input through. In
training mode (or with a BatchNorm still in training mode) both behave exactly as before.

The folded weights are recomputed on every eval forward (about 1% of a ResNet's CPU
latency) rather than cached: a cache keyed on tensor version counters would serve stale
weights after edits that do not bump them (``param.data.copy_(...)``, some fused optimiser
kernels), and a wrong validation score costs more than that 1%.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["fold_batchnorm_at_inference", "folded_weight_and_bias"]


def folded_weight_and_bias(
    conv: nn.Conv2d, bn: nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of one conv equal to ``bn(conv(x))`` with ``bn`` in eval mode."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)  # type: ignore[operator]
    bias = bn.bias - bn.running_mean * scale  # type: ignore[operator]
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return conv.weight * scale[:, None, None, None], bias


def _folds(bn: nn.BatchNorm2d) -> bool:
    return not bn.training and bn.running_mean is not None and bn.running_var is not None


class _FoldingConv2d(nn.Conv2d):
    """A Conv2d that, while its BatchNorm is in eval mode, applies the BatchNorm itself."""

    _folded_bn: nn.BatchNorm2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self._folded_bn
        if not _folds(bn):
            return super().forward(x)
        weight, bias = folded_weight_and_bias(self, bn)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class _FoldedBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d whose eval-mode map has been applied by the conv before it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _folds(self):
            return x
        return super().forward(x)


def _fold(conv: nn.Module, bn: nn.Module) -> bool:
    # Exact types only: a subclass may compute something else, and folding twice must not.
    if type(conv) is not nn.Conv2d or type(bn) is not nn.BatchNorm2d:
        return False
    if conv.padding_mode != "zeros" or conv.out_channels != bn.num_features or not bn.affine:
        return False
    conv.__class__ = _FoldingConv2d
    # Not a submodule: the BatchNorm keeps its one place in the module tree and state dict.
    object.__setattr__(conv, "_folded_bn", bn)
    bn.__class__ = _FoldedBatchNorm2d
    return True


def fold_batchnorm_at_inference(module: nn.Module) -> int:
    """Make every conv -> BatchNorm pair of ``module`` compute as one conv in eval mode.

    Pairs are found where the BatchNorm directly follows the conv in the forward pass of
    the torchvision modules our encoders use: consecutive items of an ``nn.Sequential``
    (VGG-BN, MobileNetV3's Conv2dNormActivation, ResNet downsample) and ``convK``/``bnK``
    attributes (ResNet stem and blocks). Returns how many pairs were folded. Parameters,
    buffers, state-dict keys and training behaviour are unchanged.
    """
    count = 0
    for parent in module.modules():
        if isinstance(parent, nn.Sequential):
            count += sum(_fold(a, b) for a, b in itertools.pairwise(parent))
        children = dict(parent.named_children())
        for name, child in children.items():
            if name[:4] == "conv" and name[4:].isdigit() and f"bn{name[4:]}" in children:
                count += _fold(child, children[f"bn{name[4:]}"])
    return count
