"""The factory: listing, name lookup, option checking, and the errors users see."""

from __future__ import annotations

import pytest
import torch

from pixelseg.errors import InvalidInputError, PixelsegError
from pixelseg.models import (
    DeepLabV3Plus,
    UNet,
    UNetPlusPlus,
    available,
    available_encoders,
    create,
)


def test_available_lists_every_model_with_a_description() -> None:
    models = available()
    assert set(models) == {"fcn32s", "fcn16s", "fcn8s", "unet", "unetpp", "deeplabv3plus"}
    assert all(isinstance(d, str) and len(d) > 10 and "\n" not in d for d in models.values())
    assert "Long et al" in models["fcn8s"]


def test_available_encoders() -> None:
    encoders = available_encoders()
    assert set(encoders) == {
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "vgg16",
        "vgg16_bn",
        "mobilenet_v3_large",
    }
    assert all(d for d in encoders.values())


def test_create_builds_the_named_class_with_options() -> None:
    model = create("unet", num_classes=2, in_channels=1, base_channels=8, upsampling="bilinear")
    assert isinstance(model, UNet)
    assert model.encoder.channels == (8, 16, 32, 64, 128)
    assert model.decoder.blocks[0].upsampling == "bilinear"
    assert model.head.out_channels == 2
    assert model.encoder.stages[0][0].conv.in_channels == 1
    assert isinstance(create("unetpp", 2, base_channels=4), UNetPlusPlus)
    deeplab = create("deeplabv3plus", 2, encoder="resnet18", output_stride=8, aspp_channels=32)
    assert isinstance(deeplab, DeepLabV3Plus)
    assert deeplab.size_multiple == 8


def test_unknown_model_names_value_hint_and_choices() -> None:
    with pytest.raises(InvalidInputError) as info:
        create("unet++", 3)
    message = str(info.value)
    assert "'unet++'" in message
    assert "Did you mean 'unet'" in message
    for name in available():
        assert name in message


def test_unknown_encoder_lists_choices() -> None:
    with pytest.raises(InvalidInputError) as info:
        create("unet", 3, encoder="resnet35")
    message = str(info.value)
    assert "'resnet35'" in message and "resnet34" in message and "mobilenet_v3_large" in message


def test_encoder_the_model_does_not_support() -> None:
    with pytest.raises(InvalidInputError) as info:
        create("deeplabv3plus", 3, encoder="vgg16")
    message = str(info.value)
    assert "'vgg16'" in message and "resnet50" in message and "mobilenet_v3_large" in message


def test_unknown_option_lists_valid_options() -> None:
    with pytest.raises(InvalidInputError) as info:
        create("unet", 3, base_channel=16)
    message = str(info.value)
    assert "'base_channel'" in message
    assert "did you mean 'base_channels'" in message
    for option in ("base_channels", "upsampling", "decoder_channels", "encoder_weights"):
        assert option in message


@pytest.mark.parametrize("num_classes", [0, -1, 2.5, True])
def test_bad_num_classes(num_classes: object) -> None:
    with pytest.raises(InvalidInputError, match="num_classes"):
        create("unet", num_classes, base_channels=4)


def test_bad_in_channels() -> None:
    with pytest.raises(InvalidInputError, match="in_channels"):
        create("fcn8s", 3, in_channels=0, encoder="resnet18")


@pytest.mark.parametrize(
    ("name", "options", "fragment"),
    [
        ("unet", {"upsampling": "cubic"}, "'cubic'"),
        ("unetpp", {"deep_supervision_inference": "max"}, "'max'"),
        ("deeplabv3plus", {"output_stride": 32}, "output_stride"),
        ("deeplabv3plus", {"aspp_dropout": 1.5}, "aspp_dropout"),
        ("unet", {"decoder_channels": (64, 32)}, "decoder_channels"),
        ("fcn8s", {"fc_channels": -1}, "fc_channels"),
    ],
)
def test_bad_option_values(name: str, options: dict, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        create(name, 3, encoder="resnet18" if name != "unetpp" else None, **options)


def test_mobilenet_has_no_output_stride_8() -> None:
    with pytest.raises(InvalidInputError, match=r"output_stride=8.*mobilenet_v3_large"):
        create("deeplabv3plus", 3, encoder="mobilenet_v3_large", output_stride=8)


def test_options_that_do_not_apply_are_rejected() -> None:
    with pytest.raises(InvalidInputError, match="base_channels"):
        create("unet", 3, encoder="resnet18", base_channels=16)
    with pytest.raises(InvalidInputError, match="encoder_weights"):
        create("unetpp", 3, encoder_weights="weights.pt")


def test_all_errors_are_pixelseg_errors() -> None:
    with pytest.raises(PixelsegError):
        create("nope", 3)
    model = create("unet", 2, base_channels=4)
    with pytest.raises(PixelsegError):
        model(torch.zeros(1, 2, 16, 16))


def test_input_scale_runs_the_net_on_a_resized_input_and_returns_input_size_logits():
    torch.manual_seed(0)
    scaled = create("unet", 3, encoder="resnet18", input_scale=0.5).eval()
    plain = create("unet", 3, encoder="resnet18").eval()
    plain.load_state_dict(scaled.state_dict())
    x = torch.randn(2, 3, 70, 90)
    with torch.no_grad():
        out = scaled(x)
        small = torch.nn.functional.interpolate(
            x, size=(35, 45), mode="bilinear", align_corners=False, antialias=True
        )
        expected = torch.nn.functional.interpolate(
            plain(small), size=(70, 90), mode="bilinear", align_corners=False
        )
    assert out.shape == (2, 3, 70, 90)
    torch.testing.assert_close(out, expected)


def test_input_scale_applies_to_every_deep_supervision_output_and_is_checked():
    model = create("unetpp", 2, base_channels=4, deep_supervision=True, input_scale=0.5).train()
    outs = model(torch.randn(1, 3, 33, 47))
    assert [tuple(o.shape) for o in outs] == [(1, 2, 33, 47)] * 4
    for bad in (0, -1, "half", 10):
        with pytest.raises(ValueError, match="input_scale"):
            create("unet", 2, input_scale=bad)


def test_training_logits_network_keeps_training_outputs_at_the_network_size():
    model = create("unet", 3, encoder="resnet18", input_scale=0.5, training_logits="network")
    x = torch.randn(2, 3, 64, 96)
    assert model.train()(x).shape == (2, 3, 32, 48)
    assert model.eval()(x).shape == (2, 3, 64, 96)
    deep = create(
        "unetpp",
        2,
        base_channels=4,
        deep_supervision=True,
        input_scale=0.5,
        training_logits="network",
    ).train()
    assert [tuple(o.shape) for o in deep(torch.randn(1, 3, 32, 48))] == [(1, 2, 16, 24)] * 4
    with pytest.raises(ValueError, match="training_logits"):
        create("unet", 2, input_scale=0.5, training_logits="half")
