"""Sliding-window inference: exact for pointwise predictors, blending checked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from pixelseg.errors import InvalidInputError
from pixelseg.inference import gaussian_importance_map, sliding_window_predict, window_starts
from pixelseg.inference.sliding_window import GAUSSIAN_FLOOR


def pointwise_predictor(in_channels: int, classes: int = 3, seed: int = 0):
    """A fixed 1x1 conv + tanh: translation-equivariant and local, so tiling cannot change it."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(classes, in_channels, generator=g)
    bias = torch.randn(classes, generator=g)

    def predict(x: torch.Tensor) -> torch.Tensor:
        out = torch.einsum("kc,nc...->nk...", weight.to(x), x)
        out = out + bias.to(x).reshape(1, -1, *([1] * (x.ndim - 2)))
        return torch.tanh(out) * 3.0

    return predict


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
@pytest.mark.parametrize(
    ("size", "window"),
    [
        ((37, 53), (16, 16)),  # odd sizes, last window snapped to the edge
        ((5, 7), (16, 16)),  # image smaller than the window: padded and cropped back
        ((9, 40), (16, 12)),  # one dim smaller, one larger
        ((16, 16), (16, 16)),  # exactly one window
    ],
)
def test_pointwise_predictor_equals_direct_2d(size, window, overlap, blend):
    image = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    predictor = pointwise_predictor(3)
    out = sliding_window_predict(predictor, image, window, overlap=overlap, blend=blend)
    expected = predictor(image)
    assert out.shape == (2, 3, *size)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize(("size", "window"), [((9, 13, 11), (4, 8, 8)), ((3, 5, 6), (4, 8, 8))])
def test_pointwise_predictor_equals_direct_3d(size, window, blend):
    image = torch.randn(1, 2, *size, generator=torch.Generator().manual_seed(2))
    predictor = pointwise_predictor(2, classes=4)
    out = sliding_window_predict(predictor, image, window, overlap=0.5, blend=blend, batch_size=3)
    torch.testing.assert_close(out, predictor(image), atol=1e-5, rtol=0)


@pytest.mark.parametrize("pad_mode", ["constant", "reflect", "replicate", "circular"])
def test_pad_modes_crop_back_exactly(pad_mode):
    image = torch.randn(1, 1, 6, 7, generator=torch.Generator().manual_seed(3))
    predictor = pointwise_predictor(1, classes=2)
    out = sliding_window_predict(predictor, image, (10, 10), pad_mode=pad_mode)
    torch.testing.assert_close(out, predictor(image), atol=1e-5, rtol=0)


def test_window_starts_cover_exactly():
    assert window_starts(10, 4, 0.5) == [0, 2, 4, 6]
    assert window_starts(11, 4, 0.5) == [0, 2, 4, 6, 7]  # last snapped to 11 - 4
    assert window_starts(10, 4, 0.0) == [0, 4, 6]
    assert window_starts(10, 4, 0.25) == [0, 3, 6]
    assert window_starts(5, 8, 0.5) == [0]
    assert window_starts(8, 8, 0.9) == [0]
    assert window_starts(4, 3, 0.99) == [0, 1]  # step never drops below 1


def test_gaussian_map_matches_formula():
    size, scale = 9, 0.125
    weights = gaussian_importance_map((size,), scale)
    sigma = scale * size
    expected = [math.exp(-((i - 4) ** 2) / (2 * sigma**2)) for i in range(size)]
    assert weights[4].item() == pytest.approx(1.0)
    assert weights[0].item() == pytest.approx(expected[0], rel=1e-6)  # exp(-16 / 2.53125)
    assert weights[0].item() == pytest.approx(0.0017982, rel=1e-4)
    torch.testing.assert_close(weights, torch.tensor(expected, dtype=torch.float32))

    # 2D is the product of the axes; the corner product (~3e-6) is lifted to the floor.
    w2 = gaussian_importance_map((9, 9), scale)
    assert w2[4, 4].item() == pytest.approx(1.0)
    assert w2[0, 4].item() == pytest.approx(expected[0], rel=1e-6)
    assert w2[0, 0].item() == pytest.approx(GAUSSIAN_FLOOR)
    assert (w2 >= GAUSSIAN_FLOOR).all()


def test_gaussian_map_even_window_symmetric_unscaled_like_monai():
    # Not rescaled to peak 1 (MONAI's map is not either; the floor is absolute): for an even
    # window the peak is at distance 0.5 from the centre.
    weights = gaussian_importance_map((8,), 0.25)
    assert weights.max().item() == pytest.approx(math.exp(-(0.5**2) / 8), rel=1e-6)
    torch.testing.assert_close(weights, weights.flip(0))
    # Centre is 3.5, sigma 2: weight at index 0 relative to index 3 (distance 3.5 vs 0.5).
    expected = math.exp(-(3.5**2) / 8) / math.exp(-(0.5**2) / 8)
    assert weights[0].item() / weights[3].item() == pytest.approx(expected, rel=1e-6)


def test_gaussian_floor_is_absolute():
    # 64^3, sigma 8: the corner product (~8e-11) and the unfloored peak (0.994) keep MONAI's
    # ratio; flooring after rescaling the peak to 1 would shift it by 0.6%.
    weights = gaussian_importance_map((64, 64, 64))
    assert weights.min().item() == pytest.approx(GAUSSIAN_FLOOR)
    assert weights.max().item() == pytest.approx(math.exp(-3 * 0.25 / 128), rel=1e-6)


def window_mean_predictor(x: torch.Tensor) -> torch.Tensor:
    """Not pointwise: every output pixel is the mean of its window (so blending shows)."""
    return x.mean(dim=(2, 3), keepdim=True).expand(-1, 1, *x.shape[2:]).clone()


@pytest.mark.parametrize("blend", ["constant", "gaussian"])
def test_blending_by_hand(blend):
    # Row image 0..9, windows of width 4 with overlap 0.5 start at 0, 2, 4, 6.
    image = torch.arange(10, dtype=torch.float32).reshape(1, 1, 1, 10)
    out = sliding_window_predict(window_mean_predictor, image, (1, 4), overlap=0.5, blend=blend)
    means = {0: 1.5, 2: 3.5, 4: 5.5, 6: 7.5}
    if blend == "constant":
        edge = inner = 1.0
    else:  # centre 1.5, sigma 0.5: offsets 0 and 3 weigh exp(-2.25/0.5) / exp(-0.25/0.5)
        edge, inner = math.exp(-4.5) / math.exp(-0.5), 1.0
    # Pixel 3 is offset 3 (edge) of window 0 and offset 1 (inner) of window 2.
    expected3 = (edge * means[0] + inner * means[2]) / (edge + inner)
    assert out[0, 0, 0, 3].item() == pytest.approx(expected3, rel=1e-5)
    # Pixel 0 is only in window 0.
    assert out[0, 0, 0, 0].item() == pytest.approx(means[0], rel=1e-6)
    # Pixel 6 is offset 2 (inner) of window 4 and offset 0 (edge) of window 6.
    expected6 = (inner * means[4] + edge * means[6]) / (edge + inner)
    assert out[0, 0, 0, 6].item() == pytest.approx(expected6, rel=1e-5)


def test_batch_size_and_devices_do_not_change_result():
    image = torch.randn(3, 1, 20, 23, generator=torch.Generator().manual_seed(4))
    ref = sliding_window_predict(window_mean_predictor, image, (8, 8), batch_size=1)
    for batch_size in (2, 5, 100):
        out = sliding_window_predict(
            window_mean_predictor, image, 8, batch_size=batch_size, device="cpu", out_device="cpu"
        )
        torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    # Each image is blended from its own windows only.
    alone = sliding_window_predict(window_mean_predictor, image[1:2], (8, 8))
    torch.testing.assert_close(ref[1:2], alone, atol=1e-6, rtol=0)


def test_half_precision_predictor_accumulates_in_float32():
    image = torch.randn(1, 2, 12, 12, generator=torch.Generator().manual_seed(5))
    base = pointwise_predictor(2)
    out = sliding_window_predict(lambda x: base(x).half(), image, (8, 8), overlap=0.5)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, base(image).half().float(), atol=2e-3, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_windows_with_cpu_output():
    image = torch.randn(1, 3, 40, 33, generator=torch.Generator().manual_seed(6))
    predictor = pointwise_predictor(3)
    out = sliding_window_predict(predictor, image, (16, 16), device="cuda", out_device="cpu")
    assert out.device.type == "cpu"
    torch.testing.assert_close(out, predictor(image), atol=1e-5, rtol=0)
    on_gpu = sliding_window_predict(predictor, image.cuda(), (16, 16))
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), out, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"overlap": 1.0}, "overlap"),
        ({"overlap": -0.1}, "overlap"),
        ({"window": (0, 8)}, "positive"),
        ({"window": (8, 8, 8)}, "3 dimensions"),
        ({"blend": "gauss"}, "gaussian"),
        ({"pad_mode": "mirror"}, "reflect"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, message):
    image = torch.zeros(1, 1, 10, 10)
    args = {"window": (8, 8), **kwargs}
    with pytest.raises(InvalidInputError, match=message):
        sliding_window_predict(pointwise_predictor(1), image, **args)


def test_bad_image_and_predictor_outputs():
    with pytest.raises(InvalidInputError, match=r"\[B, C"):
        sliding_window_predict(pointwise_predictor(1), torch.zeros(10, 10), (4, 4))
    with pytest.raises(InvalidInputError, match="reflect"):
        sliding_window_predict(
            pointwise_predictor(1), torch.zeros(1, 1, 3, 3), (16, 16), pad_mode="reflect"
        )
    shrinking = lambda x: x[..., ::2, ::2]  # noqa: E731
    with pytest.raises(InvalidInputError, match="spatial size"):
        sliding_window_predict(shrinking, torch.zeros(1, 1, 10, 10), (4, 4))
    with pytest.raises(InvalidInputError, match="dict"):
        sliding_window_predict(lambda x: {"out": x}, torch.zeros(1, 1, 10, 10), (4, 4))
