"""Sliding-window inference with Gaussian blending, for images larger than a model's input.

Works on any predictor (``Tensor [N, C_in, *window] -> Tensor [N, K, *window]``) and any number
of spatial dimensions: 2D images ``[B, C, H, W]`` and 3D volumes ``[B, C, D, H, W]`` use the same
code. Follows MONAI's ``sliding_window_inference`` (same windows, same importance map, same
results within float32 rounding): windows step by ``int(window * (1 - overlap))``, the last
window is snapped to the far edge so every voxel is covered, overlapping outputs are averaged
with a Gaussian importance map (sigma = ``sigma_scale * window``) so that window borders, where
context is poorest, count least.

With ``memory_budget_mb`` or ``reduce="argmax"`` the windows are blended slab by slab (see
:mod:`pixelseg.inference.window_blending`), so a volume whose float32 logits for every class
would not fit can still be predicted.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from pixelseg.errors import InvalidInputError, unknown_choice
from pixelseg.inference.window_blending import (
    REDUCE_MODES,
    FullBlender,
    SlabBlender,
    WindowGrid,
    plan_buffers,
)

__all__ = [
    "BLEND_MODES",
    "GAUSSIAN_FLOOR",
    "OUTPUT_DTYPES",
    "PAD_MODES",
    "REDUCE_MODES",
    "Predictor",
    "gaussian_importance_map",
    "sliding_window_predict",
    "window_starts",
]

logger = logging.getLogger(__name__)

Predictor = Callable[[Tensor], Tensor]
"""Any callable ``images [N, C_in, *spatial] -> logits [N, K, *spatial]`` (same spatial size)."""

BLEND_MODES = ("constant", "gaussian")
PAD_MODES = ("constant", "reflect", "replicate", "circular")
OUTPUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

GAUSSIAN_FLOOR = 1e-3
"""Smallest importance weight. A Gaussian with sigma = window/8 falls to ~3e-4 at an edge and
~1e-7 in a 2D corner; without a floor the blended average at the image corners would divide
near-zero by near-zero. MONAI clamps its (unnormalised) map at the same absolute value, and so
do we: flooring after scaling the peak to 1 moves the floor relative to the rest of the map for
even windows and changes the blend where floored and unfloored weights meet."""


def _as_tuple(value: float | Sequence[float], ndim: int, name: str) -> tuple[float, ...]:
    if isinstance(value, (int, float)):
        return (value,) * ndim
    values = tuple(value)
    if len(values) != ndim:
        raise InvalidInputError(
            f"{name}={values!r} has {len(values)} entries but the image has {ndim} spatial "
            f"dimensions; give one value per spatial dimension or a single number"
        )
    return values


def gaussian_importance_map(
    window: Sequence[int],
    sigma_scale: float | Sequence[float] = 0.125,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Separable Gaussian weights ``[*window]``, floored at :data:`GAUSSIAN_FLOOR`, as MONAI's
    ``compute_importance_map(mode="gaussian")``.

    Per axis ``g(i) = exp(-(i - c)^2 / (2 sigma^2))`` with ``c = (n - 1) / 2`` (the exact centre,
    so even windows are symmetric) and ``sigma = sigma_scale * n``; the N-d map is the product
    of the axes, clamped below at the floor. It is not rescaled: the peak is 1 for odd windows
    and ``exp(-sum 1 / (8 sigma^2))``, just below 1, for even ones (blending divides by the
    summed weights, so only the floor's level relative to the map matters, and that is MONAI's).
    """
    window = tuple(int(w) for w in window)
    if not window or any(w <= 0 for w in window):
        raise InvalidInputError(f"window must be positive sizes, got {window!r}")
    scales = _as_tuple(sigma_scale, len(window), "sigma_scale")
    if any(not (s > 0 and math.isfinite(s)) for s in scales):
        raise InvalidInputError(f"sigma_scale must be positive and finite, got {scales!r}")
    weights: Tensor | None = None
    for axis, (size, scale) in enumerate(zip(window, scales, strict=True)):
        coords = torch.arange(size, device=device, dtype=torch.float64) - (size - 1) / 2.0
        sigma = scale * size
        g = torch.exp(-(coords**2) / (2.0 * sigma**2))
        shape = [1] * len(window)
        shape[axis] = size
        g = g.reshape(shape)
        weights = g if weights is None else weights * g
    assert weights is not None
    return weights.clamp_min(GAUSSIAN_FLOOR).to(dtype)


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start offsets of windows covering ``[0, size)`` exactly; the last one ends at ``size``.

    Step is ``max(1, int(window * (1 - overlap)))`` (as MONAI). ``size`` must be >= ``window``
    (smaller images are padded by :func:`sliding_window_predict` first).
    """
    if size <= window:
        return [0]
    step = max(1, int(window * (1.0 - overlap)))
    count = math.ceil((size - window) / step) + 1
    return sorted({min(i * step, size - window) for i in range(count)})


def _validate(
    image: Tensor, window: Sequence[int], overlap: float, blend: str, pad_mode: str, batch_size: int
) -> tuple[int, ...]:
    if not isinstance(image, Tensor):
        raise InvalidInputError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if image.ndim < 3:
        raise InvalidInputError(
            f"image must be [B, C, *spatial] (e.g. [B, C, H, W] or [B, C, D, H, W]), "
            f"got shape {tuple(image.shape)}"
        )
    spatial_ndim = image.ndim - 2
    window_t = tuple(window) if isinstance(window, Sequence) else (window,) * spatial_ndim
    if len(window_t) != spatial_ndim:
        raise InvalidInputError(
            f"window={window_t!r} has {len(window_t)} dimensions but image of shape "
            f"{tuple(image.shape)} has {spatial_ndim} spatial dimensions"
        )
    if any(int(w) != w or w <= 0 for w in window_t):
        raise InvalidInputError(f"window sizes must be positive integers, got {window_t!r}")
    if not (0.0 <= overlap < 1.0):
        raise InvalidInputError(f"overlap must be a fraction in [0, 1), got {overlap!r}")
    if blend not in BLEND_MODES:
        raise unknown_choice("blend mode", blend, BLEND_MODES)
    if pad_mode not in PAD_MODES:
        raise unknown_choice("pad mode", pad_mode, PAD_MODES)
    if batch_size < 1:
        raise InvalidInputError(
            f"batch_size (windows per predictor call) must be >= 1, got {batch_size}"
        )
    if image.shape[0] == 0 or any(s == 0 for s in image.shape[2:]):
        raise InvalidInputError(f"image has an empty dimension: shape {tuple(image.shape)}")
    return tuple(int(w) for w in window_t)


def _pad_to_window(
    image: Tensor, window: tuple[int, ...], pad_mode: str, pad_value: float
) -> tuple[Tensor, list[slice]]:
    """Pad spatial dims smaller than the window (half before, half after, as MONAI)."""
    spatial = image.shape[2:]
    befores = [max(w - s, 0) // 2 for s, w in zip(spatial, window, strict=True)]
    afters = [max(w - s, 0) - b for s, w, b in zip(spatial, window, befores, strict=True)]
    crop = [slice(b, b + s) for b, s in zip(befores, spatial, strict=True)]
    if not any(befores) and not any(afters):
        return image, crop
    if pad_mode == "reflect" and any(
        max(b, a) >= s for b, a, s in zip(befores, afters, spatial, strict=True)
    ):
        raise InvalidInputError(
            f"pad_mode='reflect' needs padding smaller than the image, but image spatial size "
            f"{tuple(spatial)} is too small for window {window}; use 'replicate' or 'constant'"
        )
    if pad_mode != "constant" and len(window) > 3:
        raise InvalidInputError(
            f"pad_mode={pad_mode!r} supports at most 3 spatial dims, image has {len(window)}; "
            f"use 'constant'"
        )
    pads: list[int] = []
    for b, a in zip(reversed(befores), reversed(afters), strict=True):  # F.pad wants last dim first
        pads += [b, a]
    if pad_mode == "constant":
        return F.pad(image, pads, mode="constant", value=pad_value), crop
    return F.pad(image, pads, mode=pad_mode), crop


def _validate_memory_options(
    memory_budget_mb: float | None, output_dtype: torch.dtype | None, reduce: str
) -> None:
    if reduce not in REDUCE_MODES:
        raise unknown_choice("reduce mode", reduce, REDUCE_MODES)
    if output_dtype is not None and output_dtype not in OUTPUT_DTYPES:
        raise InvalidInputError(
            f"output_dtype={output_dtype!r} is not supported; choose one of "
            f"{', '.join(str(d) for d in OUTPUT_DTYPES)} or None"
        )
    if reduce == "argmax" and output_dtype is not None:
        raise InvalidInputError(
            f"output_dtype={output_dtype} has no effect with reduce='argmax' (the result is "
            f"int64 labels); leave output_dtype=None"
        )
    if memory_budget_mb is not None and not (
        math.isfinite(memory_budget_mb) and memory_budget_mb > 0
    ):
        raise InvalidInputError(
            f"memory_budget_mb must be a positive number of MiB or None, got {memory_budget_mb!r}"
        )


def sliding_window_predict(
    predictor: Predictor,
    image: Tensor,
    window: Sequence[int] | int,
    overlap: float = 0.25,
    blend: str = "gaussian",
    sigma_scale: float | Sequence[float] = 0.125,
    batch_size: int = 4,
    pad_mode: str = "constant",
    pad_value: float = 0.0,
    device: torch.device | str | None = None,
    out_device: torch.device | str | None = None,
    *,
    memory_budget_mb: float | None = None,
    output_dtype: torch.dtype | None = None,
    reduce: str = "none",
    inference_mode: bool = False,
) -> Tensor:
    """Predict a large image window by window and blend the overlaps.

    Args:
        predictor: ``Tensor [N, C_in, *window] -> Tensor [N, K, *window]``, e.g. a model in eval
            mode, or :func:`pixelseg.inference.flip_tta` around one.
        image: ``[B, C_in, H, W]`` or ``[B, C_in, D, H, W]`` (any number of spatial dims).
        window: window size per spatial dim (``(h, w)`` or ``(d, h, w)``), or one int for all.
        overlap: fraction of a window shared with its neighbour, ``0 <= overlap < 1``.
        blend: ``"gaussian"`` (centre-weighted) or ``"constant"`` (plain mean).
        sigma_scale: Gaussian sigma as a fraction of the window size (0.125 as MONAI/nnU-Net).
        batch_size: windows per predictor call; windows of all images in the batch are mixed.
        pad_mode: how to pad dims smaller than the window (``constant``, ``reflect``,
            ``replicate``, ``circular``); the output is cropped back to the input size.
        pad_value: fill value for ``pad_mode="constant"``.
        device: where windows are sent for the predictor (default: ``image.device``), so a big
            volume can stay on the CPU while windows run on the GPU.
        out_device: where the output and blending buffers live (default: ``image.device``).
        memory_budget_mb: MiB the blending buffers on ``out_device`` may take (output,
            accumulator, one span of summed weights; not the input, nor the predictor's working
            memory and its output for one batch of windows). ``None``: no limit.
        output_dtype: dtype of the returned values. ``None``: float32 (float64 if the predictor
            returns float64). ``torch.float16``/``torch.bfloat16`` take the slab path and round
            each blended value once: ``|error| <= 2**-11 * |x|`` for float16 (``2**-8`` for
            bfloat16) plus the format's smallest subnormal; float16 saturates at +-65504.
        reduce: ``"none"`` returns the blended values; ``"argmax"`` returns int64 labels
            ``[B, *spatial]``, reduced slab by slab so that no ``K x volume`` buffer exists.
        inference_mode: run under ``torch.inference_mode()`` (a little faster; the result is
            then an inference tensor that autograd refuses) instead of ``torch.no_grad()``.

    Which path runs (logged at INFO when it is not the default ``full`` one):

    1. ``reduce="argmax"``: the slab path, whatever the budget.
    2. ``output_dtype`` float16 or bfloat16: the slab path.
    3. Otherwise the full path (one ``[B, K, *spatial]`` buffer, as MONAI; normalised span by
       span, so no full-size weight map), unless its buffers would exceed
       ``memory_budget_mb``: then, when ``output_dtype`` is ``None``, the slab path in float16.

    If the chosen path's buffers still exceed the budget, :class:`InvalidInputError` says what
    each path needs. The slab path visits windows row by row along the spatial axis where the
    window is the smallest fraction of the image (the first on ties) and keeps one window-deep
    float32 accumulator; its values equal the full path's before rounding, and its labels equal
    ``sliding_window_predict(...).argmax(1)`` wherever the blended values do not tie exactly.

    Returns:
        ``[B, K, *spatial]`` on ``out_device``: the importance-weighted mean of whatever the
        predictor returns (logits for a plain model), or int64 labels ``[B, *spatial]`` with
        ``reduce="argmax"``.
    """
    window_t = _validate(image, window, overlap, blend, pad_mode, batch_size)
    _validate_memory_options(memory_budget_mb, output_dtype, reduce)
    device = torch.device(device) if device is not None else image.device
    out_device = torch.device(out_device) if out_device is not None else image.device
    padded, crop = _pad_to_window(image, window_t, pad_mode, pad_value)
    spatial = tuple(padded.shape[2:])
    starts = [window_starts(s, w, overlap) for s, w in zip(spatial, window_t, strict=True)]
    grid = WindowGrid.build(spatial, window_t, starts)
    if blend == "gaussian":
        weights = gaussian_importance_map(window_t, sigma_scale, device=out_device)
    else:
        weights = torch.ones(window_t, device=out_device)

    images = padded.shape[0]
    jobs = [(b, j) for b in range(images) for j in range(len(grid.boxes))]
    blender: FullBlender | SlabBlender | None = None
    with torch.inference_mode() if inference_mode else torch.no_grad():
        for first in range(0, len(jobs), batch_size):
            chunk = jobs[first : first + batch_size]
            tiles = torch.cat(
                [padded[(slice(b, b + 1), slice(None), *grid.boxes[j])] for b, j in chunk]
            )
            pred = predictor(tiles.to(device))
            _check_prediction(pred, len(chunk), window_t)
            pred = pred.to(out_device)
            if blender is None:
                blender = _make_blender(
                    grid, weights, images, pred, out_device, memory_budget_mb, output_dtype, reduce
                )
            for i, (b, j) in enumerate(chunk):
                blender.add(b, j, pred[i])
            del tiles, pred  # not held through the next forward pass
        assert blender is not None
        output = blender.finish()
    keep = (slice(None),) if reduce == "argmax" else (slice(None), slice(None))
    return output[(*keep, *crop)]


def _make_blender(
    grid: WindowGrid,
    weights: Tensor,
    images: int,
    pred: Tensor,
    out_device: torch.device,
    memory_budget_mb: float | None,
    output_dtype: torch.dtype | None,
    reduce: str,
) -> FullBlender | SlabBlender:
    """Plan the buffers once the class count is known (from the first predictions)."""
    classes = pred.shape[1]
    plan = plan_buffers(
        grid,
        images,
        classes,
        pred.dtype,
        memory_budget_mb=memory_budget_mb,
        reduce=reduce,
        output_dtype=output_dtype,
    )
    level = logging.DEBUG if plan.path == "full" else logging.INFO
    logger.log(
        level,
        "sliding window: %d windows of %s per image over %s, %d classes: %s",
        len(grid.boxes),
        grid.window,
        grid.spatial,
        classes,
        plan.describe(),
    )
    if plan.path == "full":
        return FullBlender(grid, weights, images, classes, plan.accumulate_dtype, out_device)
    return SlabBlender(
        grid,
        weights,
        images,
        classes,
        plan.accumulate_dtype,
        plan.output_dtype,
        out_device,
        plan.reduce,
    )


def _check_prediction(pred: object, count: int, window: tuple[int, ...]) -> None:
    if not isinstance(pred, Tensor):
        raise InvalidInputError(
            f"predictor must return a Tensor [N, K, *window], got {type(pred).__name__} "
            f"(wrap models returning dicts, e.g. torchvision's {{'out': ...}}, with as_predictor)"
        )
    expected = (count, window)
    if pred.ndim != len(window) + 2 or pred.shape[0] != count or tuple(pred.shape[2:]) != window:
        raise InvalidInputError(
            f"predictor returned shape {tuple(pred.shape)} for {count} windows of {window}; "
            f"expected [N, K, *window] with (N, window) = {expected} "
            f"(the output must keep the input's spatial size)"
        )
