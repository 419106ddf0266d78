"""The panoptic picture: segments of a panoptic id map blended over the image.

Stuff takes its category's colour, so the same stuff class looks the same in every picture;
each thing instance gets its own colour near its category's, as panopticapi's
``IdGenerator`` and detectron2's visualiser do, so two people side by side stay two people
yet both read as "person". 1-pixel boundaries separate touching segments; VOID (id 0) is
left as the image. Blending goes through :func:`pixelseg.inference.masks_io.overlay`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pixelseg.colormap import Color, label_colormap
from pixelseg.errors import InvalidInputError
from pixelseg.inference.masks_io import overlay

__all__ = ["panoptic_colors", "render_panoptic", "segment_boundaries"]

JITTER = 64
"""Largest per-channel step of an instance colour from its category colour."""
MIN_DISTANCE = 32
"""Smallest per-channel (L-infinity) distance between two colours in one picture."""


def _category_colors(categories: Sequence[Mapping[str, Any]]) -> dict[int, tuple[Color, bool]]:
    """``{category id: (colour, isthing)}``; ``color`` if given, else the VOC map at the id."""
    if not categories:
        raise InvalidInputError("categories is empty: give the COCO panoptic categories")
    ids = []
    for cat in categories:
        if "id" not in cat or "isthing" not in cat:
            raise InvalidInputError(f"a category needs 'id' and 'isthing', got {dict(cat)!r}")
        ids.append(int(cat["id"]))
    if min(ids) < 0:
        raise InvalidInputError(f"category ids must be >= 0, got {min(ids)}")
    palette = label_colormap(max(ids) + 1)
    out: dict[int, tuple[Color, bool]] = {}
    for cid, cat in zip(ids, categories, strict=True):
        color = cat.get("color")
        if color is None:
            color = palette[cid]
        elif len(color) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in color):
            raise InvalidInputError(f"category {cid} has color {color!r}; use [r, g, b] in 0..255")
        out[cid] = ((int(color[0]), int(color[1]), int(color[2])), bool(cat["isthing"]))
    return out


def _instance_color(base: np.ndarray, used: np.ndarray, seed: int) -> np.ndarray:
    """``base`` if far enough from every colour in ``used`` ``[U, 3]``; else the first of
    1000 seeded jitters of it that is, or failing that the one farthest from them."""
    if not len(used) or np.abs(used - base).max(axis=1).min() >= MIN_DISTANCE:
        return base
    rng = np.random.default_rng(seed)
    candidates = np.clip(base + rng.integers(-JITTER, JITTER + 1, (1000, 3)), 0, 255)
    distance = np.abs(candidates[:, None, :] - used[None]).max(axis=2).min(axis=1)
    far = distance >= MIN_DISTANCE
    return candidates[int(np.argmax(far)) if far.any() else int(np.argmax(distance))]


def panoptic_colors(
    segments_info: Sequence[Mapping[str, Any]], categories: Sequence[Mapping[str, Any]]
) -> dict[int, Color]:
    """``{segment id: colour}``: stuff in its category colour, things in distinct colours.

    A thing instance keeps its category colour when that is at least ``MIN_DISTANCE`` from
    every colour in use (so the first instance of a category usually does); otherwise it
    steps away from it by a seeded pseudo-random offset, so pictures are reproducible.
    """
    by_category = _category_colors(categories)
    segments = list(segments_info)
    for seg in segments:
        if int(seg["category_id"]) not in by_category:
            raise InvalidInputError(
                f"segment {seg['id']} has category_id {seg['category_id']}, not in categories "
                f"({sorted(by_category)})"
            )
    colors: dict[int, Color] = {}
    used = np.zeros((0, 3), dtype=np.int64)
    # Stuff first: its colours are fixed, the things' are chosen around them.
    for seg in sorted(segments, key=lambda s: by_category[int(s["category_id"])][1]):
        base, isthing = by_category[int(seg["category_id"])]
        color = np.asarray(base, dtype=np.int64)
        if isthing:
            color = _instance_color(color, used, int(seg["category_id"]) + len(used))
        used = np.vstack([used, color])
        colors[int(seg["id"])] = (int(color[0]), int(color[1]), int(color[2]))
    return colors


def segment_boundaries(ids: np.ndarray) -> np.ndarray:
    """Bool ``[H, W]``: 1-pixel lines where the id changes, on segment pixels only.

    Between two segments the line takes the upper / left pixel; between a segment and VOID
    it takes the segment's pixel, so VOID is never drawn on.
    """
    ids = np.asarray(ids)
    edge = np.zeros(ids.shape, dtype=bool)
    right = ids[:, :-1] != ids[:, 1:]
    down = ids[:-1, :] != ids[1:, :]
    edge[:, :-1] |= right
    edge[:-1, :] |= down
    edge[:, 1:] |= right & (ids[:, :-1] == 0)
    edge[1:, :] |= down & (ids[:-1, :] == 0)
    return edge & (ids != 0)


def render_panoptic(
    image: np.ndarray,
    ids: np.ndarray,
    segments_info: Sequence[Mapping[str, Any]],
    categories: Sequence[Mapping[str, Any]],
    alpha: float = 0.5,
    *,
    boundary_color: Color = (255, 255, 255),
) -> np.ndarray:
    """``image`` uint8 ``[H, W, 3]`` with the segments of ``ids`` int ``[H, W]`` (0 = VOID)
    blended in (``alpha`` in [0, 1]) and their boundaries drawn: uint8 ``[H, W, 3]``.

    ``segments_info``: dicts with ``id`` and ``category_id`` (COCO panoptic); every non-zero
    id in ``ids`` must have one. ``categories``: COCO panoptic categories (``id``,
    ``isthing``, optional ``color``); see :func:`panoptic_colors` for the colours.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidInputError(
            f"image must be [H, W, 3] uint8, got shape {image.shape} dtype {image.dtype}"
        )
    ids = np.asarray(ids)
    if ids.shape != image.shape[:2] or not np.issubdtype(ids.dtype, np.integer):
        raise InvalidInputError(
            f"ids must be an integer [H, W] map matching the image {image.shape[:2]}, "
            f"got {ids.dtype} {ids.shape}"
        )
    if ids.size == 0:
        return image.copy()
    segment_ids = [int(seg["id"]) for seg in segments_info]
    if len(set(segment_ids)) != len(segment_ids) or 0 in segment_ids:
        raise InvalidInputError(f"segment ids must be unique and non-zero, got {segment_ids}")
    colors = panoptic_colors(segments_info, categories)
    present = np.unique(ids)
    missing = sorted(set(present.tolist()) - set(colors) - {0})
    if missing:
        raise InvalidInputError(f"ids {missing[:10]} are in the id map but not in segments_info")
    # Compact labels (0 = VOID) so ids up to 256**3 need no giant palette.
    labels = np.searchsorted(present, ids) + (0 if present[0] == 0 else 1)
    palette = [(0, 0, 0)] + [colors[int(i)] for i in present if i != 0]
    out = overlay(image, labels, palette, alpha, background=0)
    out[segment_boundaries(ids)] = np.asarray(boundary_color, dtype=np.uint8)
    return out
