"""Synthetic shapes: the embedded default dataset (no files, no downloads).

Each image shows 1-4 circles, squares and triangles of equal area (so size does not give the
class away), random colour, size and position (and optionally rotation), on a background
made of two textures (sinusoidal stripes and smooth colour blotches, split by a random line)
with Gaussian noise. Shapes may overlap partially; later ones occlude earlier ones. Colours
are random and always far from the background's, so the class must be read from geometry.
At the defaults a small U-Net reaches validation mIoU >= 0.9 in about 500 steps.

Sample ``i`` depends only on ``(seed, i)``, so any worker order reproduces it. Besides the
semantic mask, :meth:`SyntheticShapes.instance_target` gives per-shape instance masks, boxes
and a panoptic map (things: the shapes; stuff: the two textures) for the instance/panoptic
tasks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pixelseg.data.transforms import to_tensors
from pixelseg.errors import InvalidInputError

__all__ = [
    "PANOPTIC_CATEGORIES",
    "SHAPE_CLASSES",
    "SHAPE_COLORS",
    "SHAPE_MEAN",
    "SHAPE_STD",
    "STUFF_CLASSES",
    "SyntheticShapes",
]

SHAPE_CLASSES: list[str] = ["background", "circle", "square", "triangle"]
#: Display colours per semantic class (not the colours drawn in the images, which are random).
SHAPE_COLORS: list[tuple[int, int, int]] = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200)]
STUFF_CLASSES: list[str] = ["stripes", "blotches"]
#: COCO-panoptic style categories: thing ids equal the semantic class index of the shape.
PANOPTIC_CATEGORIES: list[dict[str, Any]] = [
    {"id": 1, "name": "circle", "isthing": 1},
    {"id": 2, "name": "square", "isthing": 1},
    {"id": 3, "name": "triangle", "isthing": 1},
    {"id": 4, "name": "stripes", "isthing": 0},
    {"id": 5, "name": "blotches", "isthing": 0},
]
#: Per-channel mean/std (0..1 units) of the generated images at the defaults (measured on 1000
#: samples; independent of size), for normalising.
SHAPE_MEAN: tuple[float, ...] = (0.5028, 0.5029, 0.4981)
SHAPE_STD: tuple[float, ...] = (0.2173, 0.2180, 0.2215)

# Half-side of a square and circumradius of a triangle with the area of a circle of radius 1.
_SQUARE_HALF = math.sqrt(math.pi) / 2.0
_TRIANGLE_R = math.sqrt(4.0 * math.pi / (3.0 * math.sqrt(3.0)))
# Farthest point from the centre, per class, for radius 1 (keeps shapes inside the frame).
_EXTENT = {1: 1.0, 2: _SQUARE_HALF * math.sqrt(2.0), 3: _TRIANGLE_R}


@dataclass
class _Scene:
    image: np.ndarray  # uint8 [H, W, 3]
    mask: np.ndarray  # uint8 [H, W] semantic classes
    owner: np.ndarray  # int16 [H, W]: index of the visible shape, -1 for background
    labels: list[int]  # class of each drawn shape, in drawing order
    stuff: np.ndarray  # bool [H, W]: True = blotches, False = stripes


def _shape_inside(
    kind: int, cx: float, cy: float, r: float, angle: float, ys: np.ndarray, xs: np.ndarray
) -> np.ndarray:
    """Boolean mask of a shape of area ``pi r^2`` over pixel-centre grids ``ys [h, 1]``,
    ``xs [1, w]``: 1 circle, 2 square, 3 equilateral triangle, rotated by ``angle`` (rad)."""
    dx, dy = xs - cx, ys - cy
    if kind == 1:
        return dx * dx + dy * dy <= r * r
    c, s = math.cos(angle), math.sin(angle)
    if kind == 2:
        half = _SQUARE_HALF * r
        return (np.abs(c * dx + s * dy) <= half) & (np.abs(c * dy - s * dx) <= half)
    big_r = _TRIANGLE_R * r
    inside = np.ones(np.broadcast_shapes(dx.shape, dy.shape), dtype=bool)
    for k in range(3):
        # The edge opposite vertex k lies at distance R/2 on the far side of the centre.
        a = angle + 2.0 * math.pi * k / 3.0
        inside &= -(dx * math.cos(a) + dy * math.sin(a)) <= big_r / 2.0
    return inside


def _upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of a small ``[gh, gw]`` grid to ``[h, w]`` (corners aligned)."""
    gh, gw = grid.shape
    y = np.linspace(0.0, gh - 1.0, h, dtype=np.float32)
    x = np.linspace(0.0, gw - 1.0, w, dtype=np.float32)
    y0 = np.minimum(y.astype(np.int64), gh - 2)
    x0 = np.minimum(x.astype(np.int64), gw - 2)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    g00 = grid[y0][:, x0]
    g01 = grid[y0][:, x0 + 1]
    g10 = grid[y0 + 1][:, x0]
    g11 = grid[y0 + 1][:, x0 + 1]
    return (g00 * (1 - fx) + g01 * fx) * (1 - fy) + (g10 * (1 - fx) + g11 * fx) * fy


class SyntheticShapes(Dataset):
    """Deterministic images of circles, squares and triangles on textured, noisy backgrounds.

    ``size``: ``H`` or ``(H, W)`` in pixels. ``min_shapes``/``max_shapes``: shapes per image.
    ``min_radius``/``max_radius``: shape size as the radius of the equal-area circle, a
    fraction of ``min(H, W)``. ``noise_std``: Gaussian pixel noise on the 0..255 scale.
    ``rotation``: shapes turn by up to this many degrees (0: axis-aligned squares, upright
    triangles, which a small network learns in a couple of CPU minutes; 180: any orientation).
    ``transform(image uint8 [H, W, 3], mask [H, W])`` returns tensors; without one, images are
    scaled to 0..1. Samples are dicts like :class:`SegmentationFolder`'s (``name``
    ``shape_00042``, ``image_path`` ``""``).
    """

    classes: list[str] = SHAPE_CLASSES
    colors: list[tuple[int, int, int]] = SHAPE_COLORS
    num_classes: int = len(SHAPE_CLASSES)
    ignore_index: int | None = None
    in_channels: int = 3

    def __init__(
        self,
        num_samples: int,
        size: int | tuple[int, int] = 128,
        seed: int = 0,
        transform: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None,
        min_shapes: int = 1,
        max_shapes: int = 4,
        min_radius: float = 0.12,
        max_radius: float = 0.22,
        noise_std: float = 8.0,
        rotation: float = 0.0,
    ) -> None:
        h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if num_samples < 0:
            raise InvalidInputError(f"num_samples must be >= 0, got {num_samples}")
        if min(h, w) < 16:
            raise InvalidInputError(f"size must be at least 16x16 pixels, got {size!r}")
        if not 1 <= min_shapes <= max_shapes:
            raise InvalidInputError(
                f"need 1 <= min_shapes <= max_shapes, got min_shapes={min_shapes}, "
                f"max_shapes={max_shapes}"
            )
        if not 0 < min_radius <= max_radius <= 0.25:
            raise InvalidInputError(
                f"need 0 < min_radius <= max_radius <= 0.25 (fractions of the image side), got "
                f"{min_radius}, {max_radius}"
            )
        if not 0 <= rotation <= 180:
            raise InvalidInputError(f"rotation must be in [0, 180] degrees, got {rotation}")
        if noise_std < 0:
            raise InvalidInputError(f"noise_std must be >= 0, got {noise_std}")
        self.num_samples = int(num_samples)
        self.size = (h, w)
        self.seed = int(seed)
        self.transform = transform
        self.min_shapes, self.max_shapes = int(min_shapes), int(max_shapes)
        self.min_radius, self.max_radius = float(min_radius), float(max_radius)
        self.noise_std = float(noise_std)
        self.rotation = float(rotation)
        # Pixel-centre coordinates, broadcast as [H, 1] and [1, W].
        self._ys = np.arange(h, dtype=np.float32)[:, None] + 0.5
        self._xs = np.arange(w, dtype=np.float32)[None, :] + 0.5

    def __len__(self) -> int:
        return self.num_samples

    # -- drawing ------------------------------------------------------------------------------

    def _background(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Two textures split by a random line: image float32 [3, H, W], stuff map, colours."""
        h, w = self.size
        ys, xs = self._ys, self._xs
        base = rng.uniform(50.0, 205.0, size=(2, 3)).astype(np.float32)
        delta = rng.normal(0.0, 1.0, size=(2, 3)).astype(np.float32)
        delta *= rng.uniform(35.0, 55.0, size=(2, 1)) / np.linalg.norm(delta, axis=1, keepdims=True)
        second = np.clip(base + delta, 0.0, 255.0)

        period = rng.uniform(5.0, 12.0)
        phi = rng.uniform(0.0, math.pi)
        stripes = 0.5 + 0.5 * np.sin(
            2.0 * math.pi / period * (xs * math.cos(phi) + ys * math.sin(phi))
        )
        cells = int(rng.integers(4, 8))
        blotches = _upsample(rng.uniform(0.0, 1.0, size=(cells, cells)).astype(np.float32), h, w)

        theta = rng.uniform(0.0, 2.0 * math.pi)
        offset = rng.uniform(-0.8, 0.8) * 0.5 * math.hypot(h, w)
        stuff = (xs - w / 2) * math.cos(theta) + (ys - h / 2) * math.sin(theta) > offset
        t = np.where(stuff, blotches, stripes)
        # Channel-first [3, H, W]: numpy broadcasts far faster over H, W than over a last axis of 3.
        first = np.where(stuff, base[1][:, None, None], base[0][:, None, None])
        last = np.where(stuff, second[1][:, None, None], second[0][:, None, None])
        image = first + t * (last - first)
        return image.astype(np.float32), stuff, np.concatenate([base, second])

    def _shape_color(self, rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
        """A random colour far (RGB distance >= 100) from every background colour."""
        candidates = rng.uniform(0.0, 255.0, size=(16, 3))
        dist = np.linalg.norm(candidates[:, None, :] - background[None, :, :], axis=2).min(axis=1)
        good = np.flatnonzero(dist >= 100.0)
        return candidates[good[0] if good.size else int(np.argmax(dist))].astype(np.float32)

    def _render(self, index: int) -> _Scene:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        h, w = self.size
        rng = np.random.default_rng([self.seed, index])
        image, stuff, bg_colors = self._background(rng)
        owner = np.full((h, w), -1, dtype=np.int16)
        mask = np.zeros((h, w), dtype=np.uint8)
        side = min(h, w)
        placed: list[tuple[float, float, float]] = []
        labels: list[int] = []
        for _ in range(int(rng.integers(self.min_shapes, self.max_shapes + 1))):
            kind = int(rng.integers(1, 4))
            r = float(rng.uniform(self.min_radius, self.max_radius)) * side
            # Upright by default: triangles point up (vertex at -90 deg), squares axis-aligned.
            tilt = math.radians(float(rng.uniform(-self.rotation, self.rotation)))
            angle = tilt - math.pi / 2.0 if kind == 3 else tilt
            ext = _EXTENT[kind] * r + 1.0
            centres = rng.uniform((ext, ext), (w - ext, h - ext), size=(12, 2))
            ok = np.ones(len(centres), dtype=bool)
            for px, py, pr in placed:
                # Partial overlap only: a shape never hides most of another.
                ok &= np.hypot(centres[:, 0] - px, centres[:, 1] - py) >= 0.8 * (r + pr)
            color = self._shape_color(rng, bg_colors)
            if not ok.any():
                continue
            cx, cy = (float(v) for v in centres[np.argmax(ok)])
            y0, y1 = max(0, int(cy - ext)), min(h, int(cy + ext) + 2)
            x0, x1 = max(0, int(cx - ext)), min(w, int(cx + ext) + 2)
            inside = _shape_inside(kind, cx, cy, r, angle, self._ys[y0:y1], self._xs[:, x0:x1])
            image[:, y0:y1, x0:x1][:, inside] = color[:, None]
            owner[y0:y1, x0:x1][inside] = len(labels)
            mask[y0:y1, x0:x1][inside] = kind
            placed.append((cx, cy, r))
            labels.append(kind)
        if self.noise_std > 0:
            image += rng.standard_normal(image.shape, dtype=np.float32) * self.noise_std
        pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8).transpose(1, 2, 0)
        return _Scene(np.ascontiguousarray(pixels), mask, owner, labels, stuff)

    # -- public API ---------------------------------------------------------------------------

    def generate(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``index`` as ``(image uint8 [H, W, 3], mask uint8 [H, W])``, no transform."""
        scene = self._render(index)
        return scene.image, scene.mask

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask = self.generate(index)
        transform = self.transform or to_tensors
        image_t, mask_t = transform(image, mask)
        return {"image": image_t, "mask": mask_t, "name": f"shape_{index:05d}", "image_path": ""}

    def instance_target(self, index: int) -> dict[str, Any]:
        """Instance and panoptic targets of sample ``index`` (untransformed geometry).

        Returns ``masks`` bool ``[N, H, W]`` (visible part of each shape left after occlusion;
        fully hidden shapes are dropped), ``boxes`` float32 ``[N, 4]`` ``(x1, y1, x2, y2)`` in
        pixel-edge coordinates (``x2`` = last column + 1), ``labels`` int64 ``[N]`` (semantic
        class = panoptic category id), ``semantic`` int64 ``[H, W]``, ``panoptic`` int64
        ``[H, W]`` segment ids (shapes ``1..N``, then the non-empty stuff textures) and
        ``segments_info``: dicts with ``id``, ``category_id`` (see ``PANOPTIC_CATEGORIES``),
        ``isthing``, ``area`` and COCO ``bbox`` ``[x, y, w, h]``.
        """
        return self._targets(self._render(index))

    def _targets(self, scene: _Scene) -> dict[str, Any]:
        """:meth:`instance_target` of a rendered scene (subclasses render once for both)."""
        h, w = self.size
        present = np.unique(scene.owner)
        present = present[present >= 0]
        masks = scene.owner[None, :, :] == present[:, None, None]
        labels = np.asarray(scene.labels, dtype=np.int64)[present]
        panoptic = np.zeros((h, w), dtype=np.int64)
        segments: list[dict[str, Any]] = []
        for seg_id, (m, label) in enumerate(zip(masks, labels, strict=True), start=1):
            panoptic[m] = seg_id
            segments.append(_segment(seg_id, int(label), 1, m))
        background = scene.owner < 0
        for category_id, region in ((4, ~scene.stuff), (5, scene.stuff)):
            region = region & background
            if region.any():
                seg_id = len(segments) + 1
                panoptic[region] = seg_id
                segments.append(_segment(seg_id, category_id, 0, region))
        boxes = np.array([s["bbox"] for s in segments if s["isthing"]], dtype=np.float32)
        boxes = boxes.reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        return {
            "masks": torch.from_numpy(masks),
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(labels),
            "semantic": torch.from_numpy(scene.mask.astype(np.int64)),
            "panoptic": torch.from_numpy(panoptic),
            "segments_info": segments,
        }

    def __repr__(self) -> str:
        return f"SyntheticShapes({self.num_samples} samples, size={self.size}, seed={self.seed})"


def _segment(seg_id: int, category_id: int, isthing: int, region: np.ndarray) -> dict[str, Any]:
    """COCO panoptic segment record; ``bbox`` ``[x, y, w, h]`` tight around ``region``."""
    rows = np.flatnonzero(region.any(axis=1))
    cols = np.flatnonzero(region.any(axis=0))
    x, y = int(cols[0]), int(rows[0])
    return {
        "id": seg_id,
        "category_id": category_id,
        "isthing": isthing,
        "area": int(region.sum()),
        "bbox": [x, y, int(cols[-1]) + 1 - x, int(rows[-1]) + 1 - y],
    }
