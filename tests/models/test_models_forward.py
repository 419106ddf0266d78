"""Every model with every encoder it offers: forward and backward, RGB and grey input."""

from __future__ import annotations

import pytest
import torch

from pixelseg.models import available, available_encoders, create

ENCODERS = list(available_encoders())
DEEPLAB_ENCODERS = ["resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v3_large"]
HEAVY = {"resnet101", "vgg16", "vgg16_bn"}

CASES = [(fcn, enc) for fcn in ("fcn32s", "fcn16s", "fcn8s") for enc in ENCODERS]
CASES += [("unet", None)] + [("unet", enc) for enc in ENCODERS]
CASES += [("unetpp", None)] + [("unetpp", enc) for enc in ENCODERS]
CASES += [("deeplabv3plus", enc) for enc in DEEPLAB_ENCODERS]


def _case(name: str, encoder: str | None) -> pytest.param:
    marks = [pytest.mark.slow] if encoder in HEAVY else []
    return pytest.param(name, encoder, marks=marks, id=f"{name}-{encoder}")


def test_every_model_is_covered() -> None:
    assert {name for name, _ in CASES} == set(available())


@pytest.mark.parametrize("in_channels", [3, 1])
@pytest.mark.parametrize(("name", "encoder"), [_case(n, e) for n, e in CASES])
def test_forward_backward(name: str, encoder: str | None, in_channels: int) -> None:
    torch.manual_seed(0)
    # VGG's 4096-wide conv6 is covered at a small size in test_models_fcn.py.
    vgg_fcn = name.startswith("fcn") and encoder in ("vgg16", "vgg16_bn")
    options = {"fc_channels": 256} if vgg_fcn else {}
    model = create(name, num_classes=4, in_channels=in_channels, encoder=encoder, **options)
    model.train()
    x = torch.randn(1, in_channels, 45, 67)  # odd: every model pads and crops back
    out = model(x)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (1, 4, 45, 67)
    assert torch.isfinite(out).all()
    (out.float() ** 2).mean().backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []
    first = next(p for p in model.parameters() if p.ndim == 4)
    assert first.shape[1] == in_channels
    assert first.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", ["unet", "deeplabv3plus", "fcn8s"])
def test_batch_and_eval_mode(name: str) -> None:
    torch.manual_seed(0)
    encoder = "resnet18"
    model = create(name, num_classes=3, encoder=encoder).eval()
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        batch = model(x)
        single = model(x[1:])
    assert batch.shape == (2, 3, 40, 56)
    # Eval mode: each image is processed independently of the others in the batch (batch
    # statistics would differ by far more than the rounding of batch-size-specific kernels).
    torch.testing.assert_close(batch[1:], single, rtol=1e-3, atol=1e-3)
