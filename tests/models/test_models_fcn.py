"""FCN: bilinear upsampling init, zero-initialised skips, conv6 as GEMM, fc6/fc7 transfer."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from pixelseg.models import FCN8s, FCN16s, FCN32s, create
from pixelseg.models.fcn import BilinearUpsample, Im2colConv2d, bilinear_kernel


def test_bilinear_kernel_hand_computed() -> None:
    taps = torch.tensor([0.25, 0.75, 0.75, 0.25])
    torch.testing.assert_close(bilinear_kernel(4), taps[:, None] * taps[None, :])
    taps3 = torch.tensor([0.5, 1.0, 0.5])  # odd size: centre tap 1
    torch.testing.assert_close(bilinear_kernel(3), taps3[:, None] * taps3[None, :])


@pytest.mark.parametrize("factor", [2, 8, 16, 32])
def test_upsampling_init_equals_bilinear_interpolation(factor: int) -> None:
    torch.manual_seed(0)
    up = BilinearUpsample(3, factor)
    x = torch.randn(2, 3, 5, 7)
    y = up(x)
    assert y.shape == (2, 3, 5 * factor, 7 * factor)
    # Exactly bilinear (align_corners=False) of the input extended by one zero pixel ...
    zero_extended = F.pad(x, (1, 1, 1, 1))
    reference = F.interpolate(zero_extended, scale_factor=factor, mode="bilinear")
    torch.testing.assert_close(y, reference[..., factor:-factor, factor:-factor])
    # ... so away from the border it is plain bilinear interpolation.
    plain = F.interpolate(x, scale_factor=factor, mode="bilinear")
    inner = slice(factor, -factor)
    torch.testing.assert_close(y[..., inner, inner], plain[..., inner, inner])
    # Per-class: channel 0 of the output does not see channel 1 of the input.
    x2 = x.clone()
    x2[:, 1] += 5
    assert torch.equal(up(x2)[:, 0], y[:, 0])
    assert up.weight.requires_grad  # learnable, as in the paper


def test_fcn_layers_and_skip_init() -> None:
    torch.manual_seed(0)
    m32, m16, m8 = (cls(4, encoder="resnet18") for cls in (FCN32s, FCN16s, FCN8s))
    assert not hasattr(m32, "score_pool4") and not hasattr(m16, "score_pool3")
    for layer in (m16.score_pool4, m8.score_pool4, m8.score_pool3):
        assert torch.equal(layer.weight, torch.zeros_like(layer.weight))
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
    assert isinstance(m8.fc, nn.Identity)  # ResNet: no fc6/fc7 to convolutionalise
    assert m8.score_fr.in_channels == 512
    assert (m8.upscore8.stride, m8.upscore2.stride, m32.upscore.stride) == (
        (8, 8),
        (2, 2),
        (32, 32),
    )


def test_zero_skips_make_fcn16s_start_as_its_coarser_parent() -> None:
    torch.manual_seed(0)
    model = FCN16s(3, encoder="resnet18").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = model.encoder(x)
        coarse = model.upscore16(model.upscore2(model.score_fr(features[-1])))
        torch.testing.assert_close(model(x), coarse)
    # The skip still learns: its gradient is non-zero.
    model.train()
    model(x).square().mean().backward()
    assert model.score_pool4.weight.grad.abs().sum() > 0


def test_im2col_conv_equals_conv2d() -> None:
    torch.manual_seed(0)
    ours = Im2colConv2d(6, 5, 3, stride=2, padding=2, dilation=2)
    reference = nn.Conv2d(6, 5, 3, stride=2, padding=2, dilation=2)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(2, 6, 11, 9, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    y, y_ref = ours(x), reference(x_ref)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    y.square().sum().backward()
    y_ref.square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_fcn8s_vgg16_with_paper_width_conv6() -> None:
    torch.manual_seed(0)
    model = create("fcn8s", 5, encoder="vgg16")  # fc_channels 4096, as the paper
    conv6, conv7 = model.fc[0], model.fc[3]
    assert conv6.weight.shape == (4096, 512, 7, 7) and conv7.weight.shape == (4096, 4096, 1, 1)
    assert conv6.weight.std().item() == pytest.approx((2 / (4096 * 49)) ** 0.5, rel=0.05)
    x = torch.randn(1, 3, 33, 45)
    out = model(x)
    assert out.shape == (1, 5, 33, 45)
    out.square().mean().backward()
    assert conv6.weight.grad.abs().sum() > 0


def test_vgg_fc6_fc7_are_convolutionalised_from_encoder_weights(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    # A torchvision VGG-16 state dict with a narrow classifier (32 instead of 4096 units)
    # keeps the file small; the reshaping is the same.
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.0.weight"] = torch.randn(32, 512 * 7 * 7)
    state["classifier.0.bias"] = torch.randn(32)
    state["classifier.3.weight"] = torch.randn(32, 32)
    state["classifier.3.bias"] = torch.randn(32)
    state["classifier.6.weight"] = torch.randn(1000, 32)
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)

    model = create("fcn32s", 3, encoder="vgg16", fc_channels=32, encoder_weights=path)
    assert torch.equal(model.encoder.features[28].weight, state["features.28.weight"])
    conv6, conv7 = model.fc[0], model.fc[3]
    torch.testing.assert_close(conv6.weight.flatten(1), state["classifier.0.weight"])
    torch.testing.assert_close(conv6.bias, state["classifier.0.bias"])
    torch.testing.assert_close(conv7.weight.flatten(1), state["classifier.3.weight"])
    # On a 7x7 pool5 map, conv6's centre output is fc6 applied to the flattened map.
    pool5 = torch.randn(1, 512, 7, 7)
    fc6 = F.linear(pool5.flatten(1), state["classifier.0.weight"], state["classifier.0.bias"])
    torch.testing.assert_close(conv6(pool5)[0, :, 3, 3], fc6[0], rtol=1e-4, atol=1e-4)

    with caplog.at_level(logging.WARNING, logger="pixelseg.models.fcn"):
        other = create("fcn32s", 3, encoder="vgg16", fc_channels=16, encoder_weights=path)
    assert "keep their random init" in caplog.text
    assert other.fc[0].weight.shape == (16, 512, 7, 7)
