"""3D U-Net: shapes at any size, variants, deep supervision and its loss, errors, training."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from pixelseg.errors import InvalidInputError, NonFiniteError
from pixelseg.models.unet3d import (
    UNet3D,
    deep_supervision_loss,
    deep_supervision_weights,
    pad_volume_to_multiple,
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Run these small 3D convs on one thread: with the cores busy, two threads measured
    10x slower (40 training steps on 16^3: 14 s against 1.3 s), and the results are the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _ceil_div(n: int, s: int) -> int:
    return -(-n // s)


@pytest.mark.parametrize("size", [(17, 23, 30), (8, 8, 8), (1, 9, 5), (33, 2, 16)])
def test_logits_have_the_input_size_for_odd_sizes(size: tuple[int, int, int]) -> None:
    model = UNet3D(3, in_channels=2, depth=3, width=4, norm="group").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 2, *size))
    assert out.shape == (2, 3, *size)
    assert out.is_contiguous()


@pytest.mark.parametrize(
    ("depth", "width", "norm"),
    [(1, 4, "instance"), (2, 8, "batch"), (4, 4, "group"), (5, 2, "instance")],
)
def test_depth_width_norm_variants(depth: int, width: int, norm: str) -> None:
    model = UNet3D(2, depth=depth, width=width, norm=norm)
    assert model.size_multiple == (2 ** (depth - 1),) * 3
    assert model.channels == [width * 2**level for level in range(depth)]
    out = model(torch.randn(2, 1, 17, 18, 19))
    assert out.shape == (2, 2, 17, 18, 19)
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_width_is_capped_by_max_width() -> None:
    model = UNet3D(2, depth=6, width=16, max_width=64)
    assert model.channels == [16, 32, 64, 64, 64, 64]


def test_anisotropic_levels_downsample_in_plane_first() -> None:
    model = UNet3D(2, depth=5, width=2, anisotropic_levels=2)
    assert model.size_multiple == (4, 16, 16)
    assert model.level_strides()[2] == (1, 4, 4)
    assert model.encoder[0][0].conv.kernel_size == (1, 3, 3)
    assert model.encoder[2][0].conv.kernel_size == (3, 3, 3)
    assert model(torch.randn(1, 1, 5, 33, 20)).shape == (1, 2, 5, 33, 20)


def test_pad_volume_reflects_at_the_far_end() -> None:
    x = torch.arange(3.0).view(1, 1, 3, 1, 1).expand(1, 1, 3, 2, 2)
    padded = pad_volume_to_multiple(x, (4, 2, 2))
    assert padded.shape == (1, 1, 4, 2, 2)
    assert padded[0, 0, :, 0, 0].tolist() == [0.0, 1.0, 2.0, 1.0]
    assert pad_volume_to_multiple(x, (1, 1, 1)) is x


def test_deep_supervision_lists_full_resolution_first_in_training_only() -> None:
    torch.manual_seed(0)
    model = UNet3D(3, depth=4, width=4, deep_supervision=True)
    x = torch.randn(1, 1, 17, 23, 30)
    outs = model.train()(x)
    assert isinstance(outs, list) and len(outs) == 3
    for level, out in enumerate(outs):
        expected = tuple(_ceil_div(n, 2**level) for n in (17, 23, 30))
        assert out.shape == (1, 3, *expected)
    with torch.no_grad():
        single = model.eval()(x)
    assert isinstance(single, torch.Tensor) and single.shape == (1, 3, 17, 23, 30)
    # Instance norm and no dropout: eval-mode logits are the training full-resolution ones.
    torch.testing.assert_close(single, outs[0].detach())


def test_deep_supervision_weights_are_nnunets() -> None:
    assert deep_supervision_weights(1) == [1.0]
    assert deep_supervision_weights(2) == [1.0, 0.0]
    assert deep_supervision_weights(3) == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert deep_supervision_weights(4) == pytest.approx([4 / 7, 2 / 7, 1 / 7, 0.0])


def test_deep_supervision_loss_by_hand() -> None:
    # Target 5x5x5 of ones with one marked voxel at (2, 2, 2): the outputs of a network on a
    # 5^3 volume have 5, 3 and 2 voxels per side, whose grids sit on every 1st, 2nd and 4th
    # voxel; the loss here is the sum of the target each output sees.
    target = torch.ones(1, 5, 5, 5, dtype=torch.int64)
    target[0, 2, 2, 2] = 255
    outputs = [torch.zeros(1, 2, n, n, n) for n in (5, 3, 2)]
    seen: list[torch.Tensor] = []

    def loss_fn(logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.shape[1:] == logits.shape[2:] and t.dtype == torch.int64
        seen.append(t)
        return t.sum().float()

    total = deep_supervision_loss(outputs, target, loss_fn)
    sums = [124 + 255, 26 + 255, 8]  # 5^3, 3^3 (holds (2,2,2)) and 2^3 (does not) voxels
    assert [int(t.sum()) for t in seen] == sums
    assert float(total) == pytest.approx(2 / 3 * sums[0] + 1 / 3 * sums[1])
    custom = deep_supervision_loss(outputs, target, loss_fn, weights=[0.0, 1.0, 2.0])
    assert float(custom) == pytest.approx(sums[1] + 2 * sums[2])
    assert float(deep_supervision_loss(outputs[0], target, loss_fn)) == sums[0]


def test_deep_supervision_loss_other_sizes_use_nearest_labels() -> None:
    target = torch.randint(0, 3, (2, 7, 7, 7))
    seen: list[torch.Tensor] = []
    outputs = [torch.zeros(2, 3, 7, 7, 7), torch.zeros(2, 3, 3, 3, 3)]
    deep_supervision_loss(outputs, target, lambda _, t: seen.append(t) or t.sum().float())
    assert seen[1].shape == (2, 3, 3, 3)
    expected = F.interpolate(target[:, None].float(), size=(3, 3, 3), mode="nearest-exact")
    assert torch.equal(seen[1], expected[:, 0].long())


def test_deep_supervision_loss_reaches_every_head() -> None:
    torch.manual_seed(0)
    model = UNet3D(2, depth=4, width=2, deep_supervision=True)
    target = torch.randint(0, 2, (1, 16, 16, 16))
    loss = deep_supervision_loss(model(torch.randn(1, 1, 16, 16, 16)), target, F.cross_entropy)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert torch.count_nonzero(model.side_heads[-1].weight.grad) == 0  # weight 0, still used


def test_deep_supervision_loss_rejects_bad_weights() -> None:
    outputs = [torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 2, 2, 2, 2)]
    target = torch.zeros(1, 4, 4, 4, dtype=torch.int64)
    with pytest.raises(InvalidInputError, match=r"2 finite values >= 0.*\[1\.0\]"):
        deep_supervision_loss(outputs, target, F.cross_entropy, weights=[1.0])
    with pytest.raises(InvalidInputError, match=r"-1\.0"):
        deep_supervision_loss(outputs, target, F.cross_entropy, weights=[1.0, -1.0])


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.randn(1, 1, 16, 16), r"5 dims\), got 4 dims: \(1, 1, 16, 16\)"),
        (torch.randn(1, 3, 8, 8, 8), "expected 1 input channels.*got 3"),
        (torch.zeros(1, 1, 8, 8, 8, dtype=torch.int64), "torch.int64"),
        (torch.zeros(0, 1, 8, 8, 8), "non-empty"),
        ([[1.0]], "got list"),
    ],
)
def test_bad_inputs_are_named(x: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        UNet3D(2, depth=2, width=2)(x)


def test_non_finite_input_is_refused() -> None:
    x = torch.zeros(1, 1, 8, 8, 8)
    x[0, 0, 1, 2, 3] = float("nan")
    with pytest.raises(NonFiniteError, match="1 NaN"):
        UNet3D(2, depth=2, width=2)(x)


def test_too_small_input_for_instance_norm_is_named() -> None:
    with pytest.raises(InvalidInputError, match=r"8x8x8 voxels is too small.*depth=4"):
        UNet3D(2, depth=4, width=2)(torch.randn(1, 1, 8, 8, 8))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"depth": 0}, "depth must be an integer >= 1, got 0"),
        ({"width": 2.5}, "width must be an integer >= 1, got 2.5"),
        ({"norm": "layer"}, "unknown norm 'layer'.*'instance'"),
        ({"dropout": 1.0}, r"dropout must be a probability in \[0, 1\), got 1.0"),
        ({"anisotropic_levels": 4}, "anisotropic_levels .* 0..3, got 4"),
    ],
)
def test_bad_options_are_named(options: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        UNet3D(2, **options)


def test_parameter_count_by_hand() -> None:
    model = UNet3D(2, in_channels=1, depth=2, width=4)
    conv = 27  # 3x3x3, no bias (a norm follows); norms have weight and bias
    level0 = conv * 1 * 4 + 8 + conv * 4 * 4 + 8
    level1 = conv * 4 * 8 + 16 + conv * 8 * 8 + 16
    up = 8 * 4 * 8  # 2x2x2 transposed conv, 8 -> 4 channels
    decoder0 = conv * 8 * 4 + 8 + conv * 4 * 4 + 8
    head = 4 * 2 + 2
    assert sum(p.numel() for p in model.parameters()) == level0 + level1 + up + decoder0 + head
    default = sum(p.numel() for p in UNet3D(2).parameters())
    assert 1e6 < default < 2e6  # depth 4, width 16: about 1.4 M


def _sphere(size: int, radius: float) -> torch.Tensor:
    grid = torch.stack(torch.meshgrid(*[torch.arange(size)] * 3, indexing="ij")).float()
    center = torch.tensor([size / 2 - 0.3, size / 2 + 0.6, size / 2]).view(3, 1, 1, 1)
    return ((grid - center).norm(dim=0) < radius).long()


def test_overfits_a_sphere() -> None:
    torch.manual_seed(0)
    label = _sphere(16, 5.0)[None]
    image = label[:, None].float() + 0.3 * torch.randn(1, 1, 16, 16, 16)
    model = UNet3D(2, depth=3, width=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        optimizer.zero_grad()
        F.cross_entropy(model(image), label).backward()
        optimizer.step()
    with torch.no_grad():
        pred = model.eval()(image).argmax(1)
    dice = 2 * ((pred == 1) & (label == 1)).sum() / ((pred == 1).sum() + (label == 1).sum())
    assert float(dice) > 0.8


def test_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    model = UNet3D(3, in_channels=2, depth=3, width=4, norm="batch", deep_supervision=True)
    model(torch.randn(2, 2, 8, 8, 8))  # move the batch-norm running statistics
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    copy = UNet3D(3, in_channels=2, depth=3, width=4, norm="batch", deep_supervision=True)
    copy.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(1, 2, 9, 10, 11)
    with torch.no_grad():
        torch.testing.assert_close(copy.eval()(x), model.eval()(x), rtol=0, atol=0)
        assert math.isfinite(float(copy(x).sum()))
