"""Behaviour every loss shares: ignore_index, 3D input, binary targets, precision, bad input."""

from __future__ import annotations

import pytest
import torch

from pixelseg.errors import InvalidInputError
from pixelseg.losses import available, create

NAMES = sorted(available())
# per_image variants check the per-image reduction too.
VARIANTS = [(name, {}) for name in NAMES] + [
    ("dice", {"per_image": True}),
    ("generalized_dice", {"per_image": True}),
    ("tversky", {"per_image": True, "alpha": 0.2, "beta": 0.8}),
    ("focal", {"alpha": [0.2, 0.5, 0.3]}),
    ("ce", {"weight": [1.0, 2.0, 3.0], "label_smoothing": 0.1}),
]


def loss_and_grad(loss, logits, target):
    logits = logits.clone().requires_grad_(True)
    value = loss(logits, target)
    (grad,) = torch.autograd.grad(value, logits)
    return value.detach(), grad


@pytest.mark.parametrize(("name", "options"), VARIANTS)
def test_ignored_pixels_change_neither_loss_nor_gradient(name: str, options: dict) -> None:
    torch.manual_seed(0)
    loss = create(name, ignore_index=255, **options)
    logits = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    target = torch.randint(0, 3, (2, 5, 6))
    target[:, :, -2:] = 255  # the last two columns are ignored
    value, grad = loss_and_grad(loss, logits, target)
    changed = logits.clone()
    changed[:, :, :, -2:] = torch.randn(2, 3, 5, 2, dtype=torch.float64) * 10
    value2, grad2 = loss_and_grad(loss, changed, target)
    torch.testing.assert_close(value2, value, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad2, grad, rtol=1e-12, atol=1e-12)
    assert torch.equal(grad[..., -2:], torch.zeros_like(grad[..., -2:]))
    # ...and the loss equals the loss on the cropped, fully valid region
    cropped = create(name, **options)(logits[..., :-2], target[..., :-2])
    torch.testing.assert_close(value, cropped, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("name", "options"), VARIANTS)
def test_fully_ignored_image_does_not_count(name: str, options: dict) -> None:
    # per-image losses average over images that have a valid pixel; the others are
    # pixel-pooled, so both must equal the loss of the remaining images alone.
    torch.manual_seed(4)
    logits = torch.randn(3, 3, 4, 4, dtype=torch.float64)
    target = torch.randint(0, 3, (3, 4, 4))
    target[1] = 255
    value = create(name, ignore_index=255, **options)(logits, target)
    keep = torch.tensor([0, 2])
    torch.testing.assert_close(value, create(name, **options)(logits[keep], target[keep]))


@pytest.mark.parametrize("name", NAMES)
def test_binary_ignore_and_float_target(name: str) -> None:
    torch.manual_seed(1)
    logits = torch.randn(2, 1, 4, 5, dtype=torch.float64)
    target = torch.randint(0, 2, (2, 4, 5))
    long_value = create(name)(logits, target)
    torch.testing.assert_close(create(name)(logits, target.double()), long_value)
    torch.testing.assert_close(create(name)(logits, target.unsqueeze(1).bool()), long_value)
    ignored = target.clone()
    ignored[:, 0] = 255
    value = create(name, ignore_index=255)(logits, ignored.float())
    torch.testing.assert_close(value, create(name)(logits[:, :, 1:], target[:, 1:]))


@pytest.mark.parametrize(("name", "options"), VARIANTS)
def test_3d_input_equals_2d_on_flattened_depth(name: str, options: dict) -> None:
    torch.manual_seed(2)
    logits = torch.randn(2, 3, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 3, (2, 3, 4, 5))
    loss = create(name, **options)
    value = loss(logits, target)
    flat = loss(logits.reshape(2, 3, 12, 5), target.reshape(2, 12, 5))
    torch.testing.assert_close(value, flat)
    value.backward()
    assert logits.grad.shape == logits.shape and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_half_precision_logits_give_float32_loss(name: str) -> None:
    torch.manual_seed(3)
    logits = torch.randn(2, 3, 8, 8).half().requires_grad_(True)
    target = torch.randint(0, 3, (2, 8, 8))
    value = create(name)(logits, target)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, create(name)(logits.float(), target))
    value.backward()
    assert logits.grad.dtype == torch.float16


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise_named_errors(name: str) -> None:
    loss = create(name, ignore_index=255)
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    with pytest.raises(InvalidInputError, match=r"target shape \(3, 4, 4\) does not match logits"):
        loss(logits, torch.zeros(3, 4, 4, dtype=torch.long))
    with pytest.raises(InvalidInputError, match=r"\(2, 4, 5\).*\(2, 3, 4, 4\)"):
        loss(logits, torch.zeros(2, 4, 5, dtype=torch.long))
    bad = target.clone()
    bad[0, 0, 0], bad[1, 1, 1] = 3, -1
    with pytest.raises(InvalidInputError, match=r"values \[-1, 3\].*\[0, 2\]"):
        loss(logits, bad)
    with pytest.raises(InvalidInputError, match=r"binary.*0 or 1"):
        loss(logits[:, :1], target.clamp(max=2) + (target == 0).long() * 2)
    for value in (float("nan"), float("inf")):
        broken = logits.clone()
        broken[1, 2, 3, 3] = value
        with pytest.raises(InvalidInputError, match="non-finite"):
            loss(broken, target)
    with pytest.raises(InvalidInputError, match="whole class indices"):
        loss(logits, target.float() + 0.5)
    with pytest.raises(InvalidInputError, match="float tensor"):
        loss(logits.long(), target)
    with pytest.raises(InvalidInputError, match=r"\[B, C, \*spatial\]"):
        loss(logits[:, :, 0, 0], target[:, 0, 0])
    with pytest.raises(InvalidInputError, match=r"torch\.Tensor"):
        loss(logits, target.numpy())


@pytest.mark.parametrize("name", ["ce", "dice", "tversky", "focal"])
def test_per_class_option_with_wrong_length(name: str) -> None:
    option = "alpha" if name == "focal" else "weight"
    loss = create(name, **{option: [1.0, 2.0]})
    with pytest.raises(InvalidInputError, match=rf"{option} has 2 values.*C = 3"):
        loss(torch.randn(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))


def test_everything_ignored_gives_zero_for_every_loss() -> None:
    for name, options in VARIANTS:
        logits = torch.randn(2, 3, 3, 3, requires_grad=True)
        value = create(name, ignore_index=255, **options)(logits, torch.full((2, 3, 3), 255))
        (grad,) = torch.autograd.grad(value, logits)
        assert value.item() == 0.0, name
        assert torch.equal(grad, torch.zeros_like(grad)), name


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("name", "options"), VARIANTS)
def test_autocast_and_device_follow_the_input(device: str, name: str, options: dict) -> None:
    torch.manual_seed(5)
    conv = torch.nn.Conv2d(2, 3, 1).to(device)
    images = torch.randn(2, 2, 6, 6, device=device)
    target = torch.randint(0, 3, (2, 6, 6), device=device)
    target[0, 0] = 255
    loss = create(name, ignore_index=255, **options).to(device)
    amp_dtype = torch.bfloat16 if device == "cpu" else torch.float16
    with torch.autocast(device, dtype=amp_dtype):
        logits = conv(images)
        value = loss(logits, target)
    value.backward()
    assert logits.dtype == amp_dtype
    assert value.device.type == device and value.dtype == torch.float32
    assert all(torch.isfinite(p.grad).all() for p in conv.parameters())
    reference = create(name, ignore_index=255, **options)(
        logits.detach().float().cpu(), target.cpu()
    )
    torch.testing.assert_close(value.detach().cpu(), reference, rtol=1e-5, atol=1e-6)
