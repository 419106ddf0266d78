"""Input checks, padding/cropping, init and the eval-mode BatchNorm folding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pixelseg.errors import InvalidInputError
from pixelseg.models import create
from pixelseg.models.base import decoder_memory_format, init_weights, pad_to_multiple
from pixelseg.models.blocks import ASPP, ConvBNReLU


@pytest.fixture(scope="module")
def unet() -> nn.Module:
    torch.manual_seed(0)
    return create("unet", num_classes=3, in_channels=2, base_channels=4).eval()


@pytest.mark.parametrize(
    ("x", "fragments"),
    [
        (torch.zeros(2, 16, 16), ["[B, 2, H, W]", "3 dims", "(2, 16, 16)"]),
        (torch.zeros(1, 1, 2, 16, 16), ["5 dims"]),
        (torch.zeros(1, 3, 16, 16), ["expected 2 input channels", "got 3 channels"]),
        (torch.zeros(1, 2, 16, 16, dtype=torch.uint8), ["floating-point", "uint8"]),
        (torch.zeros(0, 2, 16, 16), ["non-empty"]),
    ],
)
def test_bad_input_shapes_name_expected_and_got(
    unet: nn.Module, x: torch.Tensor, fragments: list[str]
) -> None:
    with pytest.raises(InvalidInputError) as info:
        unet(x)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_not_a_tensor(unet: nn.Module) -> None:
    with pytest.raises(InvalidInputError, match="ndarray"):
        unet(torch.zeros(1, 2, 8, 8).numpy())


@pytest.mark.parametrize(
    ("value", "counts"), [(float("nan"), "1 NaN, 0 Inf"), (-float("inf"), "0 NaN, 1 Inf")]
)
def test_non_finite_input(unet: nn.Module, value: float, counts: str) -> None:
    x = torch.zeros(1, 2, 16, 16)
    x[0, 1, 3, 4] = value
    with pytest.raises(InvalidInputError, match=counts):
        unet(x)


def test_huge_finite_input_is_accepted(unet: nn.Module) -> None:
    # The sum overflows float32 here; the exact per-element check must then let it through.
    x = torch.full((1, 2, 16, 16), 3e38)
    with torch.no_grad():
        assert unet(x).shape == (1, 3, 16, 16)


def test_pad_to_multiple_values() -> None:
    x = torch.arange(12.0).view(1, 1, 3, 4)
    padded = pad_to_multiple(x, 4)
    assert padded.shape == (1, 1, 4, 4)
    torch.testing.assert_close(padded[..., :3, :], x)
    torch.testing.assert_close(padded[0, 0, 3], x[0, 0, 1])  # reflect: row 3 mirrors row 1
    tiny = pad_to_multiple(torch.ones(1, 1, 2, 3), 8)  # reflect impossible -> replicate
    assert tiny.shape == (1, 1, 8, 8)
    assert torch.equal(tiny, torch.ones(1, 1, 8, 8))
    aligned = torch.ones(1, 1, 8, 16)
    assert pad_to_multiple(aligned, 8) is aligned


def test_forward_equals_padded_forward_cropped(unet: nn.Module) -> None:
    torch.manual_seed(1)
    x = torch.randn(1, 2, 21, 30)
    with torch.no_grad():
        out = unet(x)
        reference = unet.forward_padded(F.pad(x, (0, 2, 0, 11), mode="reflect"))[..., :21, :30]
        tiny = unet(x[..., :3, :5])
    torch.testing.assert_close(out, reference)
    assert tiny.shape == (1, 3, 3, 5)


def test_init_weights_scheme() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 256, 3)
    bn = nn.BatchNorm2d(8)
    bn.running_mean.fill_(3.0)
    init_weights(nn.Sequential(conv, bn))
    fan_out = 256 * 9
    assert conv.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.05)
    assert torch.equal(conv.bias, torch.zeros(256))
    assert torch.equal(bn.weight, torch.ones(8)) and torch.equal(bn.bias, torch.zeros(8))
    assert torch.equal(bn.running_mean, torch.zeros(8))
    depthwise = nn.Conv2d(512, 512, 3, groups=512, bias=False)
    init_weights(depthwise)
    assert depthwise.weight.std().item() == pytest.approx((2 / 9) ** 0.5, rel=0.05)


@pytest.mark.parametrize("separable", [False, True])
def test_conv_bn_relu_eval_folding_equals_unfolded(separable: bool) -> None:
    torch.manual_seed(0)
    block = ConvBNReLU(6, 5, kernel_size=3, dilation=2, separable=separable)
    with torch.no_grad():
        block.bn.running_mean.uniform_(-1, 1)
        block.bn.running_var.uniform_(0.5, 2)
        block.bn.weight.uniform_(0.5, 1.5)
        block.bn.bias.uniform_(-1, 1)
    x = torch.randn(2, 6, 11, 13)
    block.eval()
    h = block.depthwise(x) if separable else x
    reference = F.relu(block.bn(block.conv(h)))
    torch.testing.assert_close(block(x), reference, rtol=1e-5, atol=1e-5)
    assert (block(x) == 0).any() and (block(x) > 0).any()
    block.train()  # training mode uses batch statistics, not the folded running ones
    batch_stats = F.relu(
        F.batch_norm(block.conv(h), None, None, block.bn.weight, block.bn.bias, True)
    )
    torch.testing.assert_close(block(x), batch_stats, rtol=1e-5, atol=1e-5)


def test_aspp_image_pooling_branch_is_a_broadcast_constant() -> None:
    torch.manual_seed(0)
    aspp = ASPP(8, 4, rates=(1, 2, 3), dropout=0.0).eval()
    x = torch.randn(1, 8, 6, 7)
    pooled = aspp.pool(x)
    assert pooled.shape == (1, 4, 1, 1)
    manual = F.relu(aspp.pool[1](x.mean(dim=(2, 3), keepdim=True)))
    torch.testing.assert_close(pooled, manual)
    # Zeroing the other branches' share of the projection leaves only the pooled branch:
    # the output must then be spatially constant.
    with torch.no_grad():
        aspp.project[0].conv.weight[:, :16] = 0
    out = aspp(x)
    assert torch.allclose(out, out[..., :1, :1].expand_as(out))


@pytest.mark.parametrize(
    ("name", "module"),
    [
        ("unet", "pixelseg.models.unet"),
        ("unetpp", "pixelseg.models.unetpp"),
        ("deeplabv3plus", "pixelseg.models.deeplabv3plus"),
    ],
)
def test_channels_last_inference_layout_changes_nothing_but_speed(
    name: str, module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    model = create(name, 3, encoder="resnet18").eval()
    x = torch.randn(2, 3, 64, 96)
    assert decoder_memory_format(model, x) == torch.channels_last
    assert decoder_memory_format(model.train(), x) == torch.contiguous_format
    model.eval()
    with torch.no_grad():
        out = model(x)
        monkeypatch.setattr(module + ".decoder_memory_format", lambda m, x: torch.contiguous_format)
        reference = model(x)
    assert out.is_contiguous()  # logits come back in the default layout
    scale = reference.abs().max().item()
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5 * scale)
