"""Where sliding-window predictions are summed: one full-size buffer, or slabs finalised as the
windows pass.

:func:`pixelseg.inference.sliding_window_predict` lays its windows on a :class:`WindowGrid`
and hands every window's prediction to a blender:

- :class:`FullBlender` adds ``prediction * importance`` into a ``[B, K, *spatial]`` buffer and
  divides by the summed importance at the end, one span of the slab axis at a time
  (:class:`SpanWeights`), so the normalisation map is never a full-size tensor (MONAI keeps a
  full ``[1, 1, *spatial]`` count map).
- :class:`SlabBlender` is the memory-bounded path. Windows are visited in order of their start
  along one spatial axis (the slab axis); a float32 accumulator one window deep along that axis
  holds the current row of windows. When the next row starts at ``s``, no later window touches
  anything before ``s``, so that part is normalised and written out (rounded to float16, or
  reduced to its argmax) and the accumulator shifts. Only ``K x window_axis x (other dims)``
  float32 values are live, never ``K x volume``.

Both sum the same windows in the same order with the same operations, so the slab path's
values equal the full path's before its one rounding to float16/bfloat16, and its argmax
labels equal the full result's argmax except where two classes tie exactly.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from pixelseg.errors import InvalidInputError

__all__ = [
    "REDUCE_MODES",
    "BufferPlan",
    "FullBlender",
    "SlabBlender",
    "SpanWeights",
    "WindowGrid",
    "estimate_bytes",
    "plan_buffers",
]

REDUCE_MODES = ("none", "argmax")
REDUCED_DTYPES = (torch.float16, torch.bfloat16)
_MB = 2**20
_FLOAT16_MAX = torch.finfo(torch.float16).max


def _along(axis: int, ndim: int, lo: int, hi: int) -> tuple[slice, ...]:
    """Spatial index selecting ``[lo, hi)`` on ``axis`` and everything on the other dims."""
    index = [slice(None)] * ndim
    index[axis] = slice(lo, hi)
    return tuple(index)


@dataclass(frozen=True)
class WindowGrid:
    """Window boxes over a (padded) ``spatial`` size, ordered by start along ``axis``.

    ``rows`` are the distinct starts along ``axis``; ``row_of[i]`` is the row of ``boxes[i]``;
    ``cuts`` are every window start and end along ``axis``, so a span between two cuts lies
    entirely inside or outside each window.
    """

    spatial: tuple[int, ...]
    window: tuple[int, ...]
    axis: int
    boxes: tuple[tuple[slice, ...], ...]
    rows: tuple[int, ...]
    row_of: tuple[int, ...]
    cuts: tuple[int, ...]

    @classmethod
    def build(
        cls, spatial: tuple[int, ...], window: tuple[int, ...], starts: list[list[int]]
    ) -> WindowGrid:
        """Grid from per-axis start offsets; the slab axis is the one whose window covers the
        smallest fraction of the image (the thinnest accumulator), the first on ties."""
        axis = min(range(len(spatial)), key=lambda a: (window[a] / spatial[a], a))
        origins = sorted(itertools.product(*starts), key=lambda o: o[axis])  # stable
        boxes = tuple(
            tuple(slice(o, o + w) for o, w in zip(origin, window, strict=True))
            for origin in origins
        )
        rows = tuple(starts[axis])
        row_index = {start: i for i, start in enumerate(rows)}
        cuts = sorted({*rows, *(s + window[axis] for s in rows)})
        return cls(
            spatial=spatial,
            window=window,
            axis=axis,
            boxes=boxes,
            rows=rows,
            row_of=tuple(row_index[o[axis]] for o in origins),
            cuts=tuple(cuts),
        )

    def spans(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """Consecutive ``(start, stop)`` spans between cuts covering ``[lo, hi)`` on the axis."""
        inner = [c for c in self.cuts if lo < c < hi]
        edges = [lo, *inner, hi]
        return list(itertools.pairwise(edges))

    def plane_voxels(self) -> int:
        """Voxels in one index of the slab axis (the product of the other spatial sizes)."""
        return math.prod(self.spatial) // self.spatial[self.axis]

    def largest_span(self) -> int:
        return max(b - a for a, b in itertools.pairwise(self.cuts))


class SpanWeights:
    """Summed importance over spans of the slab axis, without a full-size weight map.

    Every row of windows has the same layout across the other axes, so the in-plane sum of one
    row, ``row_sum [*spatial]`` with the slab axis cut to the window depth, is computed once;
    a span's total is the sum of the rows covering it, each row's slice of ``row_sum``.
    """

    def __init__(self, grid: WindowGrid, weights: Tensor) -> None:
        self.grid = grid
        shape = list(grid.spatial)
        shape[grid.axis] = grid.window[grid.axis]
        self.row_sum = torch.zeros(shape, dtype=weights.dtype, device=weights.device)
        for box, row in zip(grid.boxes, grid.row_of, strict=True):
            if row == 0:
                in_plane = list(box)
                in_plane[grid.axis] = slice(None)
                self.row_sum[tuple(in_plane)] += weights

    def __call__(self, lo: int, hi: int) -> Tensor:
        """``[*spatial]`` with the slab axis cut to ``[lo, hi)``, a span between two cuts."""
        grid = self.grid
        total: Tensor | None = None
        for start in grid.rows:
            if start <= lo and hi <= start + grid.window[grid.axis]:
                part = self.row_sum[_along(grid.axis, len(grid.spatial), lo - start, hi - start)]
                total = part.clone() if total is None else total.add_(part)
        assert total is not None, "every span lies inside some window"
        return total


@dataclass(frozen=True)
class BufferPlan:
    """Which blender runs, in which dtypes, and the bytes its buffers take on ``out_device``."""

    path: str  # "full" or "slab"
    reduce: str  # "none" or "argmax"
    accumulate_dtype: torch.dtype
    output_dtype: torch.dtype
    estimated_bytes: int

    def describe(self) -> str:
        what = "argmax labels" if self.reduce == "argmax" else f"{self.output_dtype} values"
        return (
            f"{self.path} path ({what}, accumulated in {self.accumulate_dtype}), "
            f"buffers ~{self.estimated_bytes / _MB:.1f} MB"
        )


def estimate_bytes(
    grid: WindowGrid,
    batch: int,
    classes: int,
    path: str,
    accumulate_dtype: torch.dtype,
    output_dtype: torch.dtype,
    reduce: str = "none",
) -> int:
    """Bytes of the buffers a blender allocates: output, accumulator, weight sums or maxima.

    Not counted: the input, the predictor's working memory and its output for one batch of
    windows (``batch_size x K x window``), which every path holds alike.
    """
    voxels = math.prod(grid.spatial)
    acc_size = torch.empty((), dtype=accumulate_dtype).element_size()
    out_size = torch.empty((), dtype=output_dtype).element_size()
    span = grid.largest_span() * grid.plane_voxels() * acc_size
    # SpanWeights: one row's in-plane sum plus one span's total.
    weights = grid.window[grid.axis] * grid.plane_voxels() * acc_size + span
    if path == "full":
        return batch * classes * voxels * acc_size + weights
    accumulator = classes * grid.window[grid.axis] * grid.plane_voxels() * acc_size
    if reduce == "argmax":  # labels, and one span of maxima instead of weights
        return batch * voxels * out_size + accumulator + span
    return batch * classes * voxels * out_size + accumulator + weights


def plan_buffers(
    grid: WindowGrid,
    batch: int,
    classes: int,
    prediction_dtype: torch.dtype,
    *,
    memory_budget_mb: float | None = None,
    reduce: str = "none",
    output_dtype: torch.dtype | None = None,
) -> BufferPlan:
    """Choose the blender (the rule :func:`~pixelseg.inference.sliding_window_predict` documents).

    1. ``reduce="argmax"``: the slab path, int64 labels.
    2. ``output_dtype`` float16 or bfloat16: the slab path, values rounded once to it.
    3. Otherwise the full path in ``output_dtype`` (default: the prediction's dtype promoted to
       at least float32), unless its buffers exceed ``memory_budget_mb``: then, if no
       ``output_dtype`` was asked for, the slab path with float16 values.

    Raises :class:`InvalidInputError` when the chosen path's buffers still exceed the budget,
    naming what each path would need.
    """
    accumulate = torch.promote_types(prediction_dtype, torch.float32)
    budget = None if memory_budget_mb is None else memory_budget_mb * _MB

    def slab(dtype: torch.dtype, reduce_to: str) -> BufferPlan:
        size = estimate_bytes(grid, batch, classes, "slab", accumulate, dtype, reduce_to)
        return BufferPlan("slab", reduce_to, accumulate, dtype, size)

    if reduce == "argmax":
        plan = slab(torch.int64, "argmax")
    elif output_dtype in REDUCED_DTYPES:
        plan = slab(output_dtype, "none")
    else:
        dtype = output_dtype or accumulate
        full = BufferPlan(
            "full", "none", dtype, dtype, estimate_bytes(grid, batch, classes, "full", dtype, dtype)
        )
        plan = full
        if budget is not None and full.estimated_bytes > budget and output_dtype is None:
            plan = slab(torch.float16, "none")
    if budget is not None and plan.estimated_bytes > budget:
        argmax = slab(torch.int64, "argmax")
        raise InvalidInputError(
            f"memory_budget_mb={memory_budget_mb:g} is too small for {classes} classes over "
            f"{batch} x {grid.spatial}: the {plan.describe()}; reduce='argmax' needs "
            f"~{argmax.estimated_bytes / _MB:.1f} MB. Raise the budget, pass reduce='argmax', "
            f"or predict fewer images at once"
        )
    return plan


class FullBlender:
    """``output [B, K, *spatial]`` accumulated in place, normalised span by span at the end."""

    path = "full"

    def __init__(
        self,
        grid: WindowGrid,
        weights: Tensor,
        batch: int,
        classes: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.grid = grid
        self.weights = weights.to(device=device, dtype=dtype)
        self.output = torch.zeros((batch, classes, *grid.spatial), dtype=dtype, device=device)
        self.span_weights = SpanWeights(grid, self.weights)

    def add(self, image: int, box: int, pred: Tensor) -> None:
        """Add one window's ``pred [K, *window]`` times the importance map (one fused pass)."""
        self.output[(image, slice(None), *self.grid.boxes[box])].addcmul_(pred, self.weights)

    def finish(self) -> Tensor:
        grid = self.grid
        ndim = len(grid.spatial)
        for lo, hi in grid.spans(0, grid.spatial[grid.axis]):
            span = (slice(None), slice(None), *_along(grid.axis, ndim, lo, hi))
            self.output[span].div_(self.span_weights(lo, hi))
        return self.output


class SlabBlender:
    """Memory-bounded blending: one row of windows in a float32 accumulator at a time.

    ``reduce="none"`` writes the normalised values, rounded once to ``output_dtype``, into
    ``[B, K, *spatial]``. ``reduce="argmax"`` writes int64 labels ``[B, *spatial]``, the argmax
    of the importance-weighted sums: dividing by the summed weights (positive, the same for
    every class) cannot change which class is largest, so it is skipped, and with it the
    weight maps; only where two classes' blended values are exactly equal may the first
    maximum differ. Windows must arrive image by image, each image's in
    :attr:`WindowGrid.boxes` order.
    """

    path = "slab"

    def __init__(
        self,
        grid: WindowGrid,
        weights: Tensor,
        batch: int,
        classes: int,
        accumulate_dtype: torch.dtype,
        output_dtype: torch.dtype,
        device: torch.device,
        reduce: str,
    ) -> None:
        self.grid = grid
        self.weights = weights.to(device=device, dtype=accumulate_dtype)
        self.reduce = reduce
        depth = list(grid.spatial)
        depth[grid.axis] = grid.window[grid.axis]
        self.acc = torch.zeros((classes, *depth), dtype=accumulate_dtype, device=device)
        shape = (batch, *grid.spatial) if reduce == "argmax" else (batch, classes, *grid.spatial)
        self.output = torch.empty(shape, dtype=output_dtype, device=device)
        span = list(grid.spatial)
        span[grid.axis] = grid.largest_span()
        if reduce == "argmax":  # the running maxima of one span, reused
            self.maxima = torch.empty(span, dtype=accumulate_dtype, device=device)
        else:
            self.span_weights = SpanWeights(grid, self.weights)
        self.image: int | None = None
        self.row = 0

    def _acc_span(self, lo: int, hi: int) -> Tensor:
        """The accumulator over absolute ``[lo, hi)`` on the slab axis of the current row."""
        origin = self.grid.rows[self.row]
        return self.acc[
            (slice(None), *_along(self.grid.axis, self.acc.ndim - 1, lo - origin, hi - origin))
        ]

    def add(self, image: int, box: int, pred: Tensor) -> None:
        grid = self.grid
        row = grid.row_of[box]
        if image != self.image:
            if self.image is not None:
                self._finalise(grid.spatial[grid.axis])
                self.acc.zero_()
            self.image, self.row = image, row
        elif row != self.row:
            self._advance(row)
        index = list(grid.boxes[box])
        origin = grid.rows[self.row]
        index[grid.axis] = slice(index[grid.axis].start - origin, index[grid.axis].stop - origin)
        self.acc[(slice(None), *index)].addcmul_(pred, self.weights)

    def _finalise(self, hi: int) -> None:
        """Normalise and write out ``[row start, hi)``: no window still to come touches it."""
        grid = self.grid
        assert self.image is not None
        ndim = len(grid.spatial)
        for a, b in grid.spans(grid.rows[self.row], hi):
            part = self._acc_span(a, b)
            where = _along(grid.axis, ndim, a, b)
            if self.reduce == "argmax":
                # max's indices are argmax's (first maximum, NaN wins), ~4x faster on CPU, and
                # written straight into the labels
                maxima = self.maxima[_along(grid.axis, ndim, 0, b - a)]
                torch.max(part, 0, out=(maxima, self.output[(self.image, *where)]))
                continue
            part.div_(self.span_weights(a, b))
            if self.output.dtype == torch.float16:  # saturate, rather than overflow to inf
                part.clamp_(-_FLOAT16_MAX, _FLOAT16_MAX)
            self.output[(self.image, slice(None), *where)].copy_(part)

    def _advance(self, row: int) -> None:
        """Finalise up to the new row's start and shift the rest to the accumulator's front."""
        grid = self.grid
        assert row == self.row + 1, "windows must arrive row by row"
        shift = grid.rows[row] - grid.rows[self.row]
        self._finalise(grid.rows[row])
        depth = grid.window[grid.axis]
        keep = depth - shift
        ndim = len(grid.spatial)
        # Copy in pieces no longer than the shift, front first, so source and destination of
        # one copy never overlap (torch refuses overlapping in-place copies).
        for start in range(0, keep, shift):
            n = min(shift, keep - start)
            dst = (slice(None), *_along(grid.axis, ndim, start, start + n))
            src = (slice(None), *_along(grid.axis, ndim, start + shift, start + shift + n))
            self.acc[dst].copy_(self.acc[src])
        self.acc[(slice(None), *_along(grid.axis, ndim, keep, depth))].zero_()
        self.row = row

    def finish(self) -> Tensor:
        if self.image is not None:
            self._finalise(self.grid.spatial[self.grid.axis])
        return self.output
