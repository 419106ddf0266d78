"""2D models on slices: SliceWise equals the 2D model applied slice by slice (2D and 2.5D),
and create_volumetric builds it from a 2D name, refusing what cannot work on slices."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from pixelseg.errors import InvalidInputError
from pixelseg.models import create
from pixelseg.models.slicewise import SliceWise, slice_stack
from pixelseg.models.volumetric import create_volumetric, volumetric_options


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_slice_stack_orders_neighbours_channel_major_and_repeats_the_ends() -> None:
    # Volume n, channel c, slice d holds 100 n + 10 c + d (one value per slice).
    n, c, d = torch.meshgrid(torch.arange(2), torch.arange(2), torch.arange(4), indexing="ij")
    volumes = (100 * n + 10 * c + d).float()[..., None, None].expand(2, 2, 4, 3, 5)
    plain = slice_stack(volumes)
    assert plain.shape == (8, 2, 3, 5)
    assert plain[:, :, 0, 0].tolist() == [[100 * v + s, 100 * v + 10 + s] for v in (0, 1)
                                          for s in range(4)]  # fmt: skip
    stacked = slice_stack(volumes, context_slices=1)
    assert stacked.shape == (8, 6, 3, 5)
    # Slice 0 of volume 1: channel 0 of slices (0, 0, 1), then channel 1 of the same.
    assert stacked[4, :, 0, 0].tolist() == [100, 100, 101, 110, 110, 111]
    # Slice 2 of volume 0: slices 1, 2, 3; slice 3: 2, 3, 3 (the last repeated).
    assert stacked[2, :, 0, 0].tolist() == [1, 2, 3, 11, 12, 13]
    assert stacked[3, :, 0, 0].tolist() == [2, 3, 3, 12, 13, 13]
    wide = slice_stack(volumes[:1, :1], context_slices=2)
    assert wide[0, :, 0, 0].tolist() == [0, 0, 0, 1, 2]


def _volumes() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(2, 2, 5, 20, 24)


def test_slicewise_equals_the_2d_model_slice_by_slice() -> None:
    model = create("unet", 3, in_channels=2, base_channels=4).eval()
    wrapped = SliceWise(model, in_channels=2).eval()
    x = _volumes()
    with torch.no_grad():
        out = wrapped(x)
        expected = torch.stack([model(x[:, :, d]) for d in range(x.shape[2])], dim=2)
    assert out.shape == (2, 3, 5, 20, 24) and out.is_contiguous()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_slicewise_with_context_equals_the_2d_model_on_stacked_neighbours() -> None:
    model = create("unet", 3, in_channels=2 * 3, base_channels=4).eval()
    wrapped = SliceWise(model, in_channels=2, context_slices=1).eval()
    x = _volumes()
    depth = x.shape[2]
    with torch.no_grad():
        out = wrapped(x)
        expected = []
        for d in range(depth):
            near = [min(max(d + j, 0), depth - 1) for j in (-1, 0, 1)]
            # Channel-major: channel 0 of the three slices, then channel 1.
            channels = [x[:, c, s] for c in range(2) for s in near]
            expected.append(model(torch.stack(channels, dim=1)))
    torch.testing.assert_close(out, torch.stack(expected, dim=2), rtol=1e-5, atol=1e-5)


def test_gradients_reach_the_2d_model_and_checks_name_the_problem() -> None:
    wrapped = create_volumetric("unet", 2, base_channels=4, context_slices=2)
    assert isinstance(wrapped, SliceWise) and wrapped.model.in_channels == 5
    wrapped.train()(torch.randn(1, 1, 3, 16, 16)).sum().backward()
    assert all(p.grad is not None for p in wrapped.parameters())
    with pytest.raises(InvalidInputError, match=r"\[B, 1, D, H, W\]"):
        wrapped(torch.randn(3, 1, 16, 16))
    with pytest.raises(InvalidInputError, match="2D model takes 3 channels"):
        SliceWise(create("unet", 2, in_channels=3, base_channels=4), in_channels=1)
    with pytest.raises(InvalidInputError, match="context_slices must be an integer >= 0"):
        create_volumetric("unet", 2, context_slices=-1)


def test_create_volumetric_builds_any_2d_model_with_its_encoder() -> None:
    model = create_volumetric("deeplabv3plus", 3, encoder="resnet18", aspp_channels=16)
    assert isinstance(model, SliceWise) and model.model.size_multiple == 16
    direct = create("deeplabv3plus", 3, in_channels=1, encoder="resnet18", aspp_channels=16)
    shapes = {k: v.shape for k, v in direct.state_dict().items()}
    assert {k: v.shape for k, v in model.model.state_dict().items()} == shapes
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 1, 2, 24, 40)).shape == (1, 3, 2, 24, 40)
    assert volumetric_options("unet")[0] == "context_slices"
    assert "base_channels" in volumetric_options("unet")


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("unet", {"depth": 3, "norm": "batch"}, r"'depth', 'norm' belong to the 3D model"),
        ("unet", {"deep_supervision": True}, r"'deep_supervision' belong to the 3D model"),
        ("unetpp", {"deep_supervision": True}, "'deep_supervision' of 2D model 'unetpp' is not"),
        ("unet", {"training_logits": "network"}, "training_logits='network' is not supported"),
        ("unet", {"base_chanels": 4}, r"'base_chanels' \(did you mean 'base_channels'\?\)"),
    ],
)
def test_options_that_cannot_work_on_slices_are_named(name, options, message) -> None:
    with pytest.raises(InvalidInputError, match=message):
        create_volumetric(name, 2, **options)


def test_a_3d_model_takes_no_encoder() -> None:
    with pytest.raises(InvalidInputError, match=r"'unet3d' has no encoder.*2D models on slices"):
        create_volumetric("unet3d", 2, encoder="resnet18")
