"""What ``POST /v1/segment`` answers: the index PNG, the overlay PNG, or the JSON summary.

The PNGs are the ones ``pixelseg predict`` writes (:func:`pixelseg.tasks.semantic_outputs.
write_mask_and_overlay`): a palette PNG whose pixel values are the class indices, and the
image blended with the class colours (background class 0 drawn too, as predict does).

JSON polygons are OpenCV's ``findContours`` (``RETR_EXTERNAL``: outer boundaries only)
over each class's mask, simplified with Douglas-Peucker (``approxPolyDP``) to within
:data:`POLYGON_TOLERANCE_PX`. Points are ``[x, y]`` = ``[column, row]`` of boundary pixels
(so a polygon runs through pixel centres and a one-pixel region is a single point, a
one-pixel-wide line two points). Holes are not represented: a ring's polygon is its outer
edge and covers the hole, so use ``pixels`` or the mask for exact areas.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from pixelseg.inference.masks_io import index_mask_image, overlay

__all__ = ["POLYGON_TOLERANCE_PX", "class_polygons", "mask_png", "overlay_png", "segment_json"]

#: Largest distance, in pixels, between a simplified polygon and the traced boundary.
POLYGON_TOLERANCE_PX = 1.0


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def mask_png(labels: np.ndarray, colors: Sequence[Sequence[int]], num_classes: int) -> bytes:
    """``labels [H, W]`` as predict's mask PNG: a palette PNG of the class indices (a 16-bit
    grey PNG for models with more than 256 classes, which a palette cannot hold)."""
    if num_classes > 256:
        return _png_bytes(Image.fromarray(labels.astype(np.uint16)))
    return _png_bytes(index_mask_image(labels.astype(np.uint8), colors))


def overlay_png(
    image: np.ndarray, labels: np.ndarray, colors: Sequence[Sequence[int]], alpha: float
) -> bytes:
    """``image uint8 [H, W, C]`` blended with the class colours of ``labels [H, W]`` (RGB PNG)."""
    rgb = image if image.shape[2] == 3 else np.repeat(image[:, :, :1], 3, axis=2)
    return _png_bytes(Image.fromarray(overlay(rgb, labels, colors, alpha=alpha)))


def class_polygons(labels: np.ndarray, index: int) -> list[list[list[int]]]:
    """Outer boundaries of the connected regions of class ``index`` in ``labels [H, W]``:
    a list of polygons, each a list of ``[x, y]`` pixel coordinates (8-connected regions)."""
    import cv2

    region = np.ascontiguousarray(labels == index, dtype=np.uint8)
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        simplified = cv2.approxPolyDP(contour, POLYGON_TOLERANCE_PX, True)
        # Douglas-Peucker may collapse a small region below a polygon: keep the trace then.
        points = simplified if len(simplified) >= 3 else contour
        polygons.append(points.reshape(-1, 2).tolist())
    return polygons


def segment_json(
    labels: np.ndarray,
    class_names: Sequence[str],
    colors: Sequence[Sequence[int]],
    *,
    batch_size: int,
    mask: bytes | None = None,
) -> dict[str, Any]:
    """The JSON answer but its ``latency_ms``: per class present, its pixel count, share of the image and polygons;
    ``mask`` (the index PNG) is added base64-encoded as ``mask_png`` when given."""
    height, width = labels.shape
    counts = np.bincount(labels.ravel(), minlength=len(class_names))
    classes = [
        {
            "index": index,
            "name": class_names[index] if index < len(class_names) else str(index),
            "color": [int(v) for v in colors[index]] if index < len(colors) else None,
            "pixels": int(count),
            "share": float(count) / float(height * width),
            "polygons": class_polygons(labels, index),
        }
        for index, count in enumerate(counts)
        if count > 0
    ]
    body: dict[str, Any] = {
        "width": int(width),
        "height": int(height),
        "batch_size": batch_size,
        "classes": classes,
    }
    if mask is not None:
        body["mask_png"] = base64.b64encode(mask).decode("ascii")
    return body
