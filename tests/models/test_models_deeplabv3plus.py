"""DeepLabV3+: output stride, atrous rates, decoder layout, parameter counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pixelseg.models import DeepLabV3Plus


@pytest.mark.parametrize(("output_stride", "rates"), [(16, (6, 12, 18)), (8, (12, 24, 36))])
def test_atrous_rates_follow_output_stride(output_stride: int, rates: tuple[int, ...]) -> None:
    model = DeepLabV3Plus(3, encoder="resnet18", output_stride=output_stride)
    assert model.encoder.strides[-1] == output_stride
    assert model.size_multiple == output_stride
    dilations = [b.depthwise.dilation[0] for b in model.aspp.branches[1:]]
    assert tuple(dilations) == rates
    assert model.aspp.branches[0].conv.kernel_size == (1, 1)


def test_decoder_layout_and_stride4_fusion() -> None:
    torch.manual_seed(0)
    model = DeepLabV3Plus(5, encoder="resnet50").eval()
    assert model.low_level.conv.in_channels == 256 and model.low_level.conv.out_channels == 48
    first, second = model.fuse
    assert first.depthwise.in_channels == 256 + 48 and first.conv.out_channels == 256
    assert second.conv.out_channels == 256
    seen = {}
    model.fuse.register_forward_hook(lambda m, i, o: seen.update(fused=o))
    model.encoder.register_forward_hook(lambda m, i, o: seen.update(features=o))
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        out = model(x)
    features = seen["features"]
    assert features[-1].shape[-2:] == (4, 5)  # stride 16
    assert seen["fused"].shape == (1, 256, 16, 20)  # decoder works at stride 4
    expected = F.interpolate(model.classifier(seen["fused"]), size=(64, 80), mode="bilinear")
    scale = expected.abs().max().item()
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5 * scale)


def test_dense_option_and_parameter_counts() -> None:
    separable = DeepLabV3Plus(21, encoder="resnet50")
    dense = DeepLabV3Plus(21, encoder="resnet50", separable=False)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # Separable (default): 26.68 M, of which ResNet-50 features 23.51 M.
    assert count(separable.encoder) == 23_508_032
    assert count(separable) == 26_682_469
    # Dense 3x3 convs in ASPP and decoder: 3 * (2048 * 256 * 9) + 304 * 256 * 9 + 256 * 256 * 9
    # weights instead of the depthwise + pointwise pairs.
    sep_3x3 = 3 * (2048 * 9 + 2048 * 256) + (304 * 9 + 304 * 256) + (256 * 9 + 256 * 256)
    dense_3x3 = 3 * 2048 * 256 * 9 + 304 * 256 * 9 + 256 * 256 * 9
    assert count(dense) - count(separable) == dense_3x3 - sep_3x3
    assert dense.aspp.branches[1].depthwise is None
