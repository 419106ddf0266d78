"""BatchNorm folded into the encoders' convs at inference: same numbers, same modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pixelseg.models import build_encoder
from pixelseg.models.folding import fold_batchnorm_at_inference


def _randomise_batchnorm(module: nn.Module) -> None:
    """Non-trivial statistics and affine maps, so folding them is visible in the output."""
    generator = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)


def _unfolded(module: nn.Module) -> nn.Module:
    """The same module computed the plain way (conv, then BatchNorm)."""
    for m in module.modules():
        if type(m).__name__ == "_FoldingConv2d":
            m.__class__ = nn.Conv2d
        elif type(m).__name__ == "_FoldedBatchNorm2d":
            m.__class__ = nn.BatchNorm2d
    return module


@pytest.mark.parametrize(
    ("name", "pairs"),
    [("resnet18", 20), ("resnet50", 53), ("mobilenet_v3_large", 46), ("vgg16_bn", 13)],
)
def test_eval_output_equals_conv_then_batchnorm(name, pairs):
    torch.manual_seed(0)
    encoder = build_encoder(name, 3, None, 32).eval()
    _randomise_batchnorm(encoder)
    reference = build_encoder(name, 3, None, 32)
    reference.load_state_dict(encoder.state_dict())
    reference = _unfolded(reference).eval()
    assert fold_batchnorm_at_inference(_unfolded(build_encoder(name, 3, None, 32))) == pairs
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(encoder(x), reference(x), strict=True):
            # Float rounding differs (one conv instead of conv + affine) and grows with depth.
            scale = float(theirs.abs().max())
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5 * scale)


def test_training_mode_is_untouched_and_state_dict_keys_are_torchvision_s():
    torch.manual_seed(0)
    encoder = build_encoder("resnet18", 3, None, 32).train()
    reference = _unfolded(build_encoder("resnet18", 3, None, 32)).train()
    reference.load_state_dict(encoder.state_dict())
    x = torch.randn(2, 3, 64, 64)
    for ours, theirs in zip(encoder(x), reference(x), strict=True):
        assert torch.equal(ours, theirs)
    encoder(x)[-1].sum().backward()
    assert encoder.layer1[0].bn1.weight.grad is not None
    assert set(encoder.state_dict()) == set(reference.state_dict())
    assert not any("_folded_bn" in key for key in encoder.state_dict())


def test_folding_twice_and_a_batchnorm_left_in_training_mode_are_safe():
    encoder = build_encoder("resnet18", 3, None, 32)
    _randomise_batchnorm(encoder)
    assert fold_batchnorm_at_inference(encoder) == 0
    encoder.eval()
    encoder.layer1[0].bn1.train()  # conv must then leave the work to the BatchNorm
    reference = _unfolded(build_encoder("resnet18", 3, None, 32))
    reference.load_state_dict(encoder.state_dict())
    reference.eval()
    reference.layer1[0].bn1.train()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x)[-1], reference(x)[-1], rtol=1e-4, atol=1e-4)
