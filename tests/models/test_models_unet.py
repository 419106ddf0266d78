"""U-Net and UNet++: layout, output parity with segmentation_models_pytorch, deep supervision."""

from __future__ import annotations

import itertools
import re

import pytest
import torch
from torch import nn

from pixelseg.models import UNet, UNetPlusPlus, create

smp = pytest.importorskip("segmentation_models_pytorch")


def smp_to_ours(state: dict[str, torch.Tensor], nested_depth: int | None) -> dict:
    """Rename an smp Unet/UnetPlusPlus state dict to ours (same tensors, other names).

    smp's UNet++ block ``x_{d}_{l}`` is our node ``X^{i,j}`` with i = depth - 1 - l and
    j = l - d + 1; its ``x_0_{depth}`` is our last no-skip block.
    """
    out = {}
    for key, value in state.items():
        key = key.replace("segmentation_head.0.", "head.")
        key = re.sub(r"\.conv([12])\.0\.", r".conv\1.conv.", key)
        key = re.sub(r"\.conv([12])\.1\.", r".conv\1.bn.", key)
        match = re.match(r"decoder\.blocks\.x_(\d+)_(\d+)\.(.*)", key)
        if nested_depth is not None and match:
            d, layer, rest = int(match[1]), int(match[2]), match[3]
            if layer == nested_depth:
                key = f"decoder.final.0.{rest}"
            else:
                key = f"decoder.nodes.x_{nested_depth - 1 - layer}_{layer - d + 1}.{rest}"
        out[key] = value
    return out


def _randomise_bn(model: nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


@pytest.mark.parametrize(
    ("name", "smp_class", "nested_depth"),
    [("unet", "Unet", None), ("unetpp", "UnetPlusPlus", 4)],
)
def test_same_architecture_and_outputs_as_smp(
    name: str, smp_class: str, nested_depth: int | None
) -> None:
    torch.manual_seed(0)
    theirs = getattr(smp, smp_class)("resnet18", encoder_weights=None, classes=3, in_channels=1)
    _randomise_bn(theirs)
    ours = create(name, 3, in_channels=1, encoder="resnet18")
    ours.load_state_dict(smp_to_ours(theirs.state_dict(), nested_depth), strict=True)
    ours.eval()
    theirs.eval()
    x = torch.randn(2, 1, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-4)


def test_classic_unet_layout() -> None:
    model = UNet(2, base_channels=64)
    assert model.encoder.channels == (64, 128, 256, 512, 1024)
    assert model.size_multiple == 16
    up = model.decoder.blocks[0].up
    assert isinstance(up, nn.ConvTranspose2d)  # the paper's 2x2 up-conv, halving channels
    assert (up.in_channels, up.out_channels, up.kernel_size) == (1024, 512, (2, 2))
    assert model.decoder.blocks[-1].conv2.conv.out_channels == 64
    assert model.head.kernel_size == (1, 1)

    def double_conv(c_in: int, c_out: int) -> int:  # two bias-free 3x3 convs, two BNs
        return c_in * c_out * 9 + 2 * c_out + c_out * c_out * 9 + 2 * c_out

    widths = [64, 128, 256, 512, 1024]
    expected = double_conv(3, 64) + sum(double_conv(a, b) for a, b in itertools.pairwise(widths))
    for c in widths[:0:-1]:  # up-conv (with bias) halving c, then a double conv from c
        expected += c * (c // 2) * 4 + c // 2 + double_conv(c, c // 2)
    expected += 64 * 2 + 2  # 1x1 head
    assert sum(p.numel() for p in model.parameters()) == expected  # 31.04 M


@pytest.mark.parametrize("upsampling", ["bilinear", "nearest"])
def test_classic_unet_interpolating_upsampling(upsampling: str) -> None:
    torch.manual_seed(0)
    model = UNet(2, base_channels=4, upsampling=upsampling)
    block = model.decoder.blocks[0]
    assert block.up is None and block.conv1.conv.in_channels == 64 + 32
    assert model(torch.randn(1, 3, 20, 28)).shape == (1, 2, 20, 28)


@pytest.fixture(scope="module")
def deep() -> UNetPlusPlus:
    torch.manual_seed(0)
    return UNetPlusPlus(3, base_channels=4, deep_supervision=True)


def test_deep_supervision_list_in_training_tensor_in_eval(deep: UNetPlusPlus) -> None:
    x = torch.randn(2, 3, 30, 22)
    deep.train()
    outs = deep(x)
    assert isinstance(outs, list) and len(outs) == 4
    assert all(o.shape == (2, 3, 30, 22) for o in outs)
    deep.eval()
    with torch.no_grad():
        assert isinstance(deep(x), torch.Tensor)


def test_deep_supervision_average_vs_last(deep: UNetPlusPlus) -> None:
    torch.manual_seed(1)
    x = torch.randn(1, 3, 32, 32)
    deep.eval()
    with torch.no_grad():
        nested = deep.nested_logits(x)
        deep.deep_supervision_inference = "average"
        average = deep(x)
        deep.deep_supervision_inference = "last"
        last = deep(x)
    torch.testing.assert_close(average, torch.stack(nested).mean(0))
    torch.testing.assert_close(last, nested[-1])
    assert not torch.allclose(average, last)


def test_deep_supervision_with_resnet_encoder() -> None:
    torch.manual_seed(0)
    model = UNetPlusPlus(2, encoder="resnet18", deep_supervision=True)
    plain = UNetPlusPlus(2, encoder="resnet18")
    # Side heads are 1x1 convs on X^{0,1..3} (64 channels at stride 2); the rest is shared.
    assert [h.in_channels for h in model.side_heads] == [64, 64, 64]
    extra = sum(p.numel() for p in model.side_heads.parameters())
    n_model = sum(p.numel() for p in model.parameters())
    assert n_model - extra == sum(p.numel() for p in plain.parameters())
    outs = model(torch.randn(1, 3, 40, 40))
    assert [o.shape for o in outs] == [torch.Size([1, 2, 40, 40])] * 4
    sum(o.mean() for o in outs).backward()
    assert all(h.weight.grad is not None for h in model.side_heads)


def test_without_deep_supervision_always_one_tensor() -> None:
    model = UNetPlusPlus(2, base_channels=4)
    assert len(model.side_heads) == 0
    assert isinstance(model.train()(torch.randn(1, 3, 32, 32)), torch.Tensor)
    with pytest.raises(Exception, match="deep_supervision=True"):
        model.nested_logits(torch.randn(1, 3, 16, 16))


def test_classic_unetpp_node_widths_follow_the_paper() -> None:
    model = UNetPlusPlus(2)  # paper: 32, 64, 128, 256, 512 at every level
    assert model.encoder.channels == (32, 64, 128, 256, 512)
    widths = {k: b.conv2.conv.out_channels for k, b in model.decoder.nodes.items()}
    assert widths == {f"x_{i}_{j}": 32 * 2**i for j in range(1, 5) for i in range(5 - j)}
    # X^{0,4} concatenates U(X^{1,3}) (64 -> 32 by the up-conv) with X^{0,0..3}: 32 + 4 * 32.
    assert model.decoder.nodes["x_0_4"].conv1.conv.in_channels == 32 + 4 * 32
