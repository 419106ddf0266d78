"""Encoders: the channels/strides contract, dilation, local weights, input-channel adaptation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.models.resnet import BasicBlock

from pixelseg.errors import CheckpointError, InvalidInputError
from pixelseg.models import build_encoder, create
from pixelseg.models.encoders import ClassicUNetEncoder, DilatedBasicBlock


@pytest.mark.parametrize(
    ("name", "output_stride", "strides"),
    [
        ("resnet18", 32, (2, 4, 8, 16, 32)),
        ("resnet34", 16, (2, 4, 8, 16, 16)),
        ("resnet50", 8, (2, 4, 8, 8, 8)),
        ("vgg16", 32, (2, 4, 8, 16, 32)),
        ("mobilenet_v3_large", 32, (2, 4, 8, 16, 32)),
        ("mobilenet_v3_large", 16, (2, 4, 8, 16, 16)),
    ],
)
def test_feature_shapes_match_declared_channels_and_strides(
    name: str, output_stride: int, strides: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    encoder = build_encoder(name, output_stride=output_stride).eval()
    assert encoder.strides == strides
    with torch.no_grad():
        features = encoder(torch.randn(1, 3, 64, 96))
    assert len(features) == len(encoder.channels)
    for f, c, s in zip(features, encoder.channels, encoder.strides, strict=True):
        assert f.shape == (1, c, 64 // s, 96 // s)


def test_classic_unet_encoder_contract() -> None:
    encoder = ClassicUNetEncoder(in_channels=1, base_channels=8)
    assert encoder.channels == (8, 16, 32, 64, 128)
    features = encoder(torch.randn(1, 1, 32, 48))
    assert [tuple(f.shape[1:]) for f in features] == [
        (8, 32, 48),
        (16, 16, 24),
        (32, 8, 12),
        (64, 4, 6),
        (128, 2, 3),
    ]


def test_deeplab_resnet50_output_stride_8_is_torchvision_dilated_resnet() -> None:
    torch.manual_seed(0)
    model = create("deeplabv3plus", 3, encoder="resnet50", output_stride=8).eval()
    encoder = model.encoder
    assert encoder.strides == (2, 4, 8, 8, 8)
    # torchvision's own mechanism: first block keeps the previous dilation, then 2 (layer3), 4.
    assert encoder.layer3[0].conv2.dilation == (1, 1) and encoder.layer3[0].conv2.stride == (1, 1)
    assert encoder.layer3[1].conv2.dilation == (2, 2)
    assert encoder.layer4[1].conv2.dilation == (4, 4)
    reference = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True])
    reference.load_state_dict(encoder.state_dict(), strict=False)
    reference.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = encoder(x)
        r = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
        r = reference.layer4(reference.layer3(reference.layer2(reference.layer1(r))))
    assert features[-1].shape == (1, 2048, 8, 8)  # stride 8
    torch.testing.assert_close(
        features[-1], r
    )  # torchvision's modules, run as torchvision runs them


def test_torchvision_basic_block_refuses_dilation() -> None:
    # Why DilatedBasicBlock exists: torchvision's resnet18/34 cannot be dilated as is.
    with pytest.raises(NotImplementedError):
        torchvision.models.resnet18(replace_stride_with_dilation=[False, False, True])


def test_dilated_basic_block_resnet18() -> None:
    torch.manual_seed(0)
    encoder = build_encoder("resnet18", output_stride=16).eval()
    first, second = encoder.layer4
    assert isinstance(first, DilatedBasicBlock)
    assert first.conv1.stride == (1, 1) and first.downsample[0].stride == (1, 1)
    assert first.conv1.dilation == (1, 1)  # keeps the previous dilation, as torchvision does
    assert second.conv1.dilation == (2, 2) and second.conv2.dilation == (2, 2)
    assert second.conv1.padding == (2, 2)
    # With dilation 1 the block is exactly torchvision's BasicBlock.
    ours = DilatedBasicBlock(8, 8).eval()
    theirs = BasicBlock(8, 8).eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(1, 8, 9, 9)
    torch.testing.assert_close(ours(x), theirs(x))
    # Dilation 2 equals torchvision's conv3x3 with dilation 2, composed by hand.
    block = DilatedBasicBlock(4, 4, dilation=2).eval()
    y = torch.randn(1, 4, 10, 10)
    w1, w2 = block.conv1.weight, block.conv2.weight
    h = torch.relu(block.bn1(torch.nn.functional.conv2d(y, w1, padding=2, dilation=2)))
    expected = torch.relu(block.bn2(torch.nn.functional.conv2d(h, w2, padding=2, dilation=2)) + y)
    torch.testing.assert_close(block(y), expected)


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    torch.manual_seed(123)
    net = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        net.bn1.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    state = net.state_dict()
    torch.save(state, path)
    return path, state


def test_encoder_weights_load_from_local_file(resnet18_file: tuple[Path, dict]) -> None:
    path, state = resnet18_file
    model = create("unet", 2, encoder="resnet18", encoder_weights=path)
    assert torch.equal(model.encoder.conv1.weight, state["conv1.weight"])
    assert torch.equal(model.encoder.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert torch.equal(model.encoder.bn1.running_var, state["bn1.running_var"])
    # The dilated BasicBlock variant keeps torchvision's parameter names: same file loads.
    deeplab = create("deeplabv3plus", 2, encoder="resnet18", encoder_weights=str(path))
    assert torch.equal(deeplab.encoder.layer4[1].conv1.weight, state["layer4.1.conv1.weight"])


def test_pretrained_first_conv_is_adapted_for_grey_and_multichannel(
    resnet18_file: tuple[Path, dict],
) -> None:
    path, state = resnet18_file
    rgb = build_encoder("resnet18", weights=path).eval()
    grey = build_encoder("resnet18", in_channels=1, weights=path).eval()
    w = state["conv1.weight"]
    torch.testing.assert_close(grey.conv1.weight, w.sum(dim=1, keepdim=True))
    # A grey image g seen as (g, g, g) by the RGB encoder gives the same features.
    g = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        from_grey, from_rgb = grey(g)[-1], rgb(g.expand(1, 3, 32, 32))[-1]
    scale = from_rgb.abs().max().item()
    torch.testing.assert_close(from_grey, from_rgb, rtol=1e-4, atol=1e-5 * scale)
    five = build_encoder("resnet18", in_channels=5, weights=path)
    expected = w[:, [0, 1, 2, 0, 1]] * (3 / 5)
    torch.testing.assert_close(five.conv1.weight, expected)


def test_missing_weights_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "resnet34.pth"
    with pytest.raises(CheckpointError, match=str(missing)):
        create("deeplabv3plus", 2, encoder="resnet34", encoder_weights=missing)


def test_mismatched_weights_name_path_and_keys(resnet18_file: tuple[Path, dict]) -> None:
    path, _ = resnet18_file
    with pytest.raises(CheckpointError) as info:
        build_encoder("resnet50", weights=path)
    message = str(info.value)
    assert str(path) in message and "'resnet50'" in message
    assert "missing keys" in message and "shape mismatches" in message


def test_non_state_dict_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        build_encoder("resnet18", weights=path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="could not read"):
        build_encoder("resnet18", weights=garbage)


def test_vgg_cannot_be_dilated() -> None:
    with pytest.raises(InvalidInputError, match="output_stride"):
        build_encoder("vgg16", output_stride=16)
