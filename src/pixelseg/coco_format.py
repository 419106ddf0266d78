"""The COCO annotation format: segmentations to RLE, masks to RLE, box conventions.

Shared by the COCO dataset, the COCO writer (``pixelseg.data``) and the COCO evaluation
(``pixelseg.metrics``), so the three agree on what a polygon, an uncompressed or a compressed
RLE means. It sits at the bottom of the import graph beside ``errors`` so that the metrics do
not import the data package (and its augmentation library). pycocotools is imported inside
:func:`mask_api`, so ``import pixelseg`` does not need it.

Boxes: COCO stores ``[x, y, w, h]``; pixelseg (like torchvision) uses ``[x1, y1, x2, y2]`` in
pixel-edge coordinates (a box covering columns 3..5 is ``x1 = 3, x2 = 6``), which is also what
``pycocotools.mask.toBbox`` gives for a mask.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

import numpy as np

__all__ = [
    "encode_masks",
    "mask_api",
    "polygon_problem",
    "segmentation_to_rle",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
]


def mask_api() -> ModuleType:
    """Return ``pycocotools.mask``, or raise ImportError saying how to install it."""
    try:
        from pycocotools import mask as mask_utils
    except ImportError as exc:
        raise ImportError(
            "COCO instance data and evaluation need pycocotools, which is not installed: "
            "pip install pycocotools (a pixelseg dependency; reinstall pixelseg)"
        ) from exc
    return mask_utils


def polygon_problem(polygon: Any) -> tuple[str | None, list[float] | None]:
    """``(why the polygon is unusable, None)`` or ``(None, its coordinates as floats)`` for a
    flat ``[x1, y1, x2, y2, ...]`` list; checked in numpy, since ground truth holds
    thousands of polygons of tens of coordinates."""
    if not isinstance(polygon, list | tuple):
        return f"polygon is a {type(polygon).__name__}, not a list of coordinates", None
    try:
        raw = np.asarray(polygon)
    except ValueError:  # ragged nesting
        return "polygon has non-numeric or non-finite coordinates", None
    if raw.ndim != 1 or raw.dtype.kind not in "biuf":  # strings, None, nested lists
        return "polygon has non-numeric or non-finite coordinates", None
    coords = raw.astype(np.float64)
    if not np.isfinite(coords).all():
        return "polygon has non-numeric or non-finite coordinates", None
    if len(coords) % 2:
        return f"polygon has an odd number of coordinates ({len(coords)})", None
    if len(coords) < 6:
        return f"polygon has {len(coords) // 2} points (fewer than 3)", None
    return None, coords.tolist()


def segmentation_to_rle(
    segmentation: Any, height: int, width: int
) -> tuple[dict[str, Any] | None, list[str]]:
    """Convert a COCO ``segmentation`` into one compressed RLE, as ``COCO.annToRLE`` does.

    Accepts a list of polygons (merged into one mask), an uncompressed RLE (``counts`` a list
    of run lengths) or a compressed RLE (``counts`` a string). Returns ``(rle, problems)``:
    unusable polygons are left out and described in ``problems``; ``rle`` is None when
    nothing usable remains or the RLE's ``size`` is not ``[height, width]``.
    """
    mask_utils = mask_api()
    if isinstance(segmentation, list):
        problems, valid = [], []
        for polygon in segmentation:
            problem, coords = polygon_problem(polygon)
            if problem:
                problems.append(problem)
            else:
                valid.append(coords)
        if not valid:
            return None, problems or ["segmentation is an empty list of polygons"]
        return mask_utils.merge(mask_utils.frPyObjects(valid, height, width)), problems
    if not isinstance(segmentation, Mapping) or not {"counts", "size"} <= set(segmentation):
        return None, ["segmentation is neither a list of polygons nor an RLE with counts and size"]
    size = list(segmentation["size"]) if isinstance(segmentation["size"], list | tuple) else None
    if size != [height, width]:
        return None, [
            f"RLE size {segmentation['size']!r} differs from the image's {[height, width]}"
        ]
    counts = segmentation["counts"]
    if isinstance(counts, list):
        if sum(counts) != height * width or any(c < 0 for c in counts):
            return None, [f"uncompressed RLE counts sum to {sum(counts)}, not {height * width}"]
        return mask_utils.frPyObjects(dict(segmentation), height, width), []
    if isinstance(counts, str | bytes):
        return {"size": [height, width], "counts": counts}, []
    return None, [f"RLE counts is a {type(counts).__name__}, not a list or a string"]


def encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """Compressed RLEs (``counts`` as str, JSON-ready) of binary masks ``[N, H, W]``."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got shape {masks.shape}")
    # pycocotools wants Fortran-ordered uint8 [H, W, N]; [N, W, H] C-order transposed is that.
    fortran = np.ascontiguousarray((masks != 0).astype(np.uint8).transpose(0, 2, 1)).T
    rles = mask_api().encode(fortran) if len(masks) else []
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return list(rles)


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """``[N, 4]`` ``(x1, y1, x2, y2)`` -> float64 ``(x, y, w, h)`` (COCO's ``bbox``)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``[N, 4]`` COCO ``(x, y, w, h)`` -> float64 ``(x1, y1, x2, y2)``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]], axis=1)
