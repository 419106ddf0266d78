"""Memory-bounded sliding window: the path rule, the slab paths' values, the old signature."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn

from pixelseg.errors import InvalidInputError
from pixelseg.inference import flip_tta, sliding_window_predict
from pixelseg.inference.sliding_window import window_starts
from pixelseg.inference.window_blending import (
    FullBlender,
    SlabBlender,
    WindowGrid,
    estimate_bytes,
    plan_buffers,
)

MB = 2**20


def conv_net(dims: int = 3, classes: int = 5, seed: int = 0) -> nn.Module:
    conv = nn.Conv3d if dims == 3 else nn.Conv2d
    torch.manual_seed(seed)
    return nn.Sequential(conv(1, 4, 3, padding=1), nn.Tanh(), conv(4, classes, 3, padding=1)).eval()


def grid_for(spatial, window, overlap=0.5):
    starts = [window_starts(s, w, overlap) for s, w in zip(spatial, window, strict=True)]
    return WindowGrid.build(tuple(spatial), tuple(window), starts)


CASES = [
    # (batch, spatial, window, overlap)
    (2, (40, 33, 29), (16, 16, 16), 0.5),  # two images, snapped last windows
    (1, (20, 50, 45), (16, 12, 16), 0.25),  # slab axis 1 (the window is 12/50 of it)
    (1, (10, 12, 9), (16, 16, 16), 0.5),  # padded: one window
    (1, (37, 20, 20), (16, 16, 16), 0.8),  # shift 3 < keep 13: the shift copies in pieces
    (1, (33, 20, 20), (16, 16, 16), 0.0),  # no overlap: shift == window depth
]


@pytest.mark.parametrize(("batch", "spatial", "window", "overlap"), CASES)
def test_slab_argmax_equals_argmax_of_full_result(batch, spatial, window, overlap):
    image = torch.randn(batch, 1, *spatial, generator=torch.Generator().manual_seed(1))
    net = conv_net()
    full = sliding_window_predict(net, image, window, overlap=overlap)
    labels = sliding_window_predict(net, image, window, overlap=overlap, reduce="argmax")
    assert labels.shape == (batch, *spatial) and labels.dtype == torch.int64
    # Equal except where blended values tie exactly (none in random data).
    assert torch.equal(labels, full.argmax(1))


@pytest.mark.parametrize(("batch", "spatial", "window", "overlap"), CASES)
@pytest.mark.parametrize(("dtype", "relative"), [(torch.float16, 2**-11), (torch.bfloat16, 2**-8)])
def test_reduced_precision_within_stated_tolerance(
    batch, spatial, window, overlap, dtype, relative
):
    image = torch.randn(batch, 1, *spatial, generator=torch.Generator().manual_seed(2))
    net = conv_net()
    full = sliding_window_predict(net, image, window, overlap=overlap)
    reduced = sliding_window_predict(net, image, window, overlap=overlap, output_dtype=dtype)
    assert reduced.dtype == dtype and reduced.shape == full.shape
    tiny = torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps
    error = (reduced.float() - full).abs()
    assert (error <= relative * full.abs() + tiny).all()  # one rounding of the float32 value


def test_2d_slab_paths():
    image = torch.randn(2, 1, 45, 61, generator=torch.Generator().manual_seed(3))
    net = conv_net(dims=2, classes=3)
    full = sliding_window_predict(net, image, (16, 24), overlap=0.5, blend="constant")
    labels = sliding_window_predict(
        net, image, (16, 24), overlap=0.5, blend="constant", reduce="argmax"
    )
    assert torch.equal(labels, full.argmax(1))


def test_plan_follows_the_documented_rule():
    grid = grid_for((128, 128, 128), (32, 32, 32))  # arithmetic only, nothing allocated
    classes, f32 = 8, torch.float32
    full_bytes = estimate_bytes(grid, 1, classes, "full", f32, f32)
    half_bytes = estimate_bytes(grid, 1, classes, "slab", f32, torch.float16)
    argmax_bytes = estimate_bytes(grid, 1, classes, "slab", f32, torch.int64, "argmax")
    # The full path holds K x volume float32 values; the slab paths do not scale with it.
    assert full_bytes > 8 * 128**3 * 4
    assert argmax_bytes < half_bytes < full_bytes

    def plan(**kwargs):
        return plan_buffers(grid, 1, classes, f32, **kwargs)

    assert plan().path == "full"
    assert plan(memory_budget_mb=full_bytes / MB).path == "full"
    over = plan(memory_budget_mb=(full_bytes - 1) / MB)
    assert (over.path, over.output_dtype) == ("slab", torch.float16)
    assert plan(reduce="argmax").path == "slab"
    assert plan(reduce="argmax").output_dtype == torch.int64
    assert plan(output_dtype=torch.bfloat16).output_dtype == torch.bfloat16
    assert plan(output_dtype=torch.float64).path == "full"
    assert plan_buffers(grid, 1, classes, torch.float64).accumulate_dtype == torch.float64
    with pytest.raises(InvalidInputError, match=r"reduce='argmax' needs"):
        plan(memory_budget_mb=(half_bytes - 1) / MB)
    with pytest.raises(InvalidInputError, match="too small"):
        plan(memory_budget_mb=(full_bytes - 1) / MB, output_dtype=torch.float32)
    with pytest.raises(InvalidInputError, match="too small"):
        plan(memory_budget_mb=(argmax_bytes - 1) / MB, reduce="argmax")
    assert plan(memory_budget_mb=argmax_bytes / MB, reduce="argmax").path == "slab"


@pytest.mark.parametrize("reduce", ["none", "argmax"])
def test_estimate_counts_what_the_blender_holds(reduce):
    grid = grid_for((40, 33, 29), (16, 16, 16))
    weights = torch.ones(grid.window)
    classes, f32, cpu = 5, torch.float32, torch.device("cpu")
    if reduce == "none":
        blender = FullBlender(grid, weights, 2, classes, f32, cpu)
        held = [blender.output, blender.span_weights.row_sum]
        expected = estimate_bytes(grid, 2, classes, "full", f32, f32)
        span = grid.largest_span() * math.prod(grid.spatial) // grid.spatial[grid.axis]
        temporaries = span * 4  # one span's weight sum, made when it is normalised
    else:
        blender = SlabBlender(grid, weights, 2, classes, f32, torch.int64, cpu, reduce)
        held = [blender.output, blender.acc, blender.maxima]
        expected = estimate_bytes(grid, 2, classes, "slab", f32, torch.int64, reduce)
        temporaries = 0
    assert sum(t.nbytes for t in held) + temporaries == expected


def test_budget_switches_path_and_logs_it(caplog):
    image = torch.randn(1, 1, 48, 40, 40, generator=torch.Generator().manual_seed(4))
    net = conv_net()
    full = sliding_window_predict(net, image, 16, overlap=0.5)
    full_mb = full.nbytes / MB
    with caplog.at_level(logging.INFO, logger="pixelseg.inference.sliding_window"):
        fits = sliding_window_predict(net, image, 16, overlap=0.5, memory_budget_mb=2 * full_mb)
        assert fits.dtype == torch.float32 and not caplog.records  # full path: DEBUG only
        bounded = sliding_window_predict(net, image, 16, overlap=0.5, memory_budget_mb=full_mb)
    assert bounded.dtype == torch.float16
    assert "slab path (torch.float16 values" in caplog.text
    torch.testing.assert_close(fits, full, atol=0, rtol=0)
    with pytest.raises(InvalidInputError, match=r"memory_budget_mb=0\.01 is too small"):
        sliding_window_predict(net, image, 16, memory_budget_mb=0.01)


def test_old_positional_call_unchanged():
    image = torch.randn(1, 2, 20, 23, generator=torch.Generator().manual_seed(5))
    net = nn.Conv2d(2, 3, 3, padding=1).eval()
    old_args = (net, image, (8, 8), 0.5, "gaussian", 0.125, 3, "constant", 0.0, "cpu", "cpu")
    positional = sliding_window_predict(*old_args)
    keywords = sliding_window_predict(
        predictor=net,
        image=image,
        window=(8, 8),
        overlap=0.5,
        blend="gaussian",
        sigma_scale=0.125,
        batch_size=3,
        pad_mode="constant",
        pad_value=0.0,
        device="cpu",
        out_device="cpu",
    )
    assert positional.dtype == torch.float32 and positional.shape == (1, 3, 20, 23)
    assert not positional.requires_grad and not positional.is_inference()
    torch.testing.assert_close(positional, keywords, atol=0, rtol=0)
    # The new options are keyword-only, so no old positional call can reach them.
    with pytest.raises(TypeError):
        sliding_window_predict(*old_args, 10.0)


def test_float16_output_saturates_instead_of_overflowing():
    image = torch.ones(1, 1, 12, 12)
    out = sliding_window_predict(lambda t: t * 1e6, image, 8, output_dtype=torch.float16)
    assert (out == torch.finfo(torch.float16).max).all()


def test_float64_predictor_gives_float64():
    image = torch.randn(1, 1, 20, 20, dtype=torch.float64)
    net = conv_net(dims=2).double()
    out = sliding_window_predict(net, image, 8, overlap=0.5)
    assert out.dtype == torch.float64
    labels = sliding_window_predict(net, image, 8, overlap=0.5, reduce="argmax")
    assert torch.equal(labels, out.argmax(1))


def test_inference_mode_on_request():
    image = torch.randn(1, 1, 20, 20)
    net = conv_net(dims=2)
    out = sliding_window_predict(net, image, 8, inference_mode=True)
    assert out.is_inference()
    torch.testing.assert_close(out, sliding_window_predict(net, image, 8), atol=0, rtol=0)


def test_flip_tta_composes_with_the_slab_paths():
    image = torch.randn(1, 1, 30, 21, 26, generator=torch.Generator().manual_seed(6))
    tta = flip_tta(conv_net(), dims=("d", "h", "w"), average="softmax")
    full = sliding_window_predict(tta, image, 12, overlap=0.5)
    labels = sliding_window_predict(tta, image, 12, overlap=0.5, reduce="argmax")
    assert torch.equal(labels, full.argmax(1))
    half = sliding_window_predict(tta, image, 12, overlap=0.5, output_dtype=torch.float16)
    assert ((half.float() - full).abs() <= 2**-11 * full.abs() + 1e-7).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reduce": "softmax"}, "argmax"),
        ({"output_dtype": torch.int32}, "output_dtype"),
        ({"reduce": "argmax", "output_dtype": torch.float16}, "int64 labels"),
        ({"memory_budget_mb": 0}, "memory_budget_mb"),
        ({"memory_budget_mb": float("nan")}, "memory_budget_mb"),
    ],
)
def test_bad_memory_options_name_the_value(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        sliding_window_predict(conv_net(dims=2), torch.zeros(1, 1, 10, 10), 8, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_windows_slab_paths_on_cpu():
    image = torch.randn(1, 1, 40, 24, 24, generator=torch.Generator().manual_seed(7))
    net = conv_net().cuda()
    full = sliding_window_predict(net, image, 16, overlap=0.5, device="cuda", out_device="cpu")
    labels = sliding_window_predict(
        net, image, 16, overlap=0.5, device="cuda", out_device="cpu", reduce="argmax"
    )
    assert labels.device.type == "cpu"
    assert torch.equal(labels, full.argmax(1))
