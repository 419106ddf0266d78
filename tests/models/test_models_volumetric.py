"""The volumetric model registry, and a contract every registered model meets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from pixelseg.errors import InvalidInputError
from pixelseg.models import available
from pixelseg.models.volumetric import (
    SLICE_MODEL_NAMES,
    VOLUMETRIC_MODEL_NAMES,
    available_volumetric,
    create_volumetric,
    volumetric_options,
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Run these small 3D convs on one thread: with the cores busy, two threads measured
    10x slower (40 training steps on 16^3: 14 s against 1.3 s), and the results are the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_listing_names_every_model_with_a_description() -> None:
    listing = available_volumetric()
    assert tuple(available()) == SLICE_MODEL_NAMES
    assert tuple(listing) == VOLUMETRIC_MODEL_NAMES == ("unet3d", *SLICE_MODEL_NAMES)
    assert all(description for description in listing.values())
    assert listing["unet"].startswith("2D on axial slices") and "U-Net" in listing["unet"]


def test_options_are_the_constructor_keywords() -> None:
    options = volumetric_options("unet3d")
    assert options[:3] == ["depth", "width", "max_width"]
    assert "num_classes" not in options and "deep_supervision" in options


def test_unknown_name_and_option_get_hints() -> None:
    with pytest.raises(InvalidInputError, match=r"'unet3'\. Did you mean 'unet3d'"):
        create_volumetric("unet3", 2)
    with pytest.raises(InvalidInputError, match=r"'detph' \(did you mean 'depth'\?\)"):
        create_volumetric("unet3d", 2, detph=3)
    with pytest.raises(InvalidInputError, match="unknown norm 'bn'"):
        create_volumetric("unet3d", 2, norm="bn")


# Small settings keep every model quick; the 2D models run on slices (their defaults are
# ImageNet-sized encoders).
SMALL = {"unet": {"base_channels": 4}, "unetpp": {"base_channels": 4},
         "deeplabv3plus": {"encoder": "mobilenet_v3_large", "aspp_channels": 8},
         **{f"fcn{n}s": {"encoder": "resnet18", "fc_channels": 8} for n in (8, 16, 32)}}  # fmt: skip


@pytest.mark.parametrize("name", VOLUMETRIC_MODEL_NAMES)
def test_contract(name: str) -> None:
    """Any size in, logits of that size out, in train and eval mode, with gradients."""
    model = create_volumetric(name, 3, in_channels=2, **SMALL.get(name, {}))
    x = torch.randn(2, 2, 9, 10, 11)
    out = model.train()(x)
    assert out.shape == (2, 3, 9, 10, 11)
    out.sum().backward()
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 3, 9, 10, 11)
