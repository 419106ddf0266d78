"""Label maps to pictures: palettes, colourised masks, overlays and palette ('P' mode) PNGs.

A palette PNG stores the class index of each pixel as its raw value and a colour table beside
it, so the same file re-reads as class indices (``np.asarray(Image.open(p))``) and looks
coloured in any image viewer, the format Pascal VOC uses for its masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from pixelseg.colormap import Color, label_colormap
from pixelseg.errors import DataError, InvalidInputError

__all__ = [
    "IGNORE_COLOR",
    "colorize",
    "default_palette",
    "index_mask_image",
    "load_index_mask",
    "overlay",
    "save_index_mask",
]

IGNORE_COLOR: Color = (128, 128, 128)
"""Colour of ignored pixels (e.g. void, 255) in :func:`colorize`."""

#: The palette of masks and overlays when none is given: the Pascal VOC colour map, the same
#: function as ``pixelseg.data.label_colormap`` (one implementation, in ``pixelseg.colormap``).
default_palette = label_colormap


def _palette_array(palette: Sequence[Sequence[int]] | None, needed: int) -> np.ndarray:
    """Validate a palette as a ``[P, 3]`` uint8 array; None means :func:`default_palette`."""
    if palette is None:
        return np.asarray(label_colormap(max(needed, 1)), dtype=np.uint8)
    arr = np.asarray(palette)
    if arr.ndim != 2 or arr.shape[1] != 3 or arr.shape[0] == 0:
        raise InvalidInputError(
            f"palette must be a list of (r, g, b) triples, got array of shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.number) or arr.min() < 0 or arr.max() > 255:
        raise InvalidInputError(f"palette colours must be integers in 0..255, got {palette!r}")
    return arr.astype(np.uint8)


def _check_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InvalidInputError(f"{name} must be a 2-D [H, W] array, got shape {labels.shape}")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise InvalidInputError(f"{name} must hold integer class indices, got dtype {labels.dtype}")
    return labels.astype(np.int64)


def colorize(
    labels: np.ndarray,
    palette: Sequence[Sequence[int]] | None = None,
    *,
    ignore_index: int | None = None,
    ignore_color: Color = IGNORE_COLOR,
) -> np.ndarray:
    """Colour a label map ``[H, W]`` (class indices) through ``palette``: ``[H, W, 3]`` uint8.

    Pixels equal to ``ignore_index`` get ``ignore_color``; any other index must have a palette
    entry (an out-of-range index is an error, never a wrapped or clipped colour).
    """
    labels = _check_labels(labels)
    ignored = labels == ignore_index if ignore_index is not None else None
    valid = labels[~ignored] if ignored is not None else labels
    top = int(valid.max()) if valid.size else 0
    lut = _palette_array(palette, top + 1)
    if valid.size and (valid.min() < 0 or top >= len(lut)):
        bad = int(valid.min()) if valid.min() < 0 else top
        raise InvalidInputError(
            f"label {bad} has no colour: palette has {len(lut)} entries (classes 0..{len(lut) - 1})"
            + (f", ignore_index={ignore_index}" if ignore_index is not None else "")
        )
    safe = np.where(ignored, 0, labels) if ignored is not None else labels
    rgb = lut[safe]
    if ignored is not None:
        rgb[ignored] = np.asarray(ignore_color, dtype=np.uint8)
    return rgb


def overlay(
    image: np.ndarray,
    labels: np.ndarray,
    palette: Sequence[Sequence[int]] | None = None,
    alpha: float = 0.5,
    *,
    ignore_index: int | None = None,
    background: int | None = None,
) -> np.ndarray:
    """Blend class colours over an image: ``[H, W, 3]`` uint8.

    Each labelled pixel becomes ``round((1 - alpha) * image + alpha * colour)``. Pixels equal to
    ``ignore_index`` or ``background`` (e.g. 0) are left as the image, so the scene stays
    visible where there is nothing to show. A grey ``[H, W]`` image is repeated to RGB.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidInputError(
            f"image must be [H, W, 3] uint8, got shape {image.shape} dtype {image.dtype}"
        )
    labels = _check_labels(labels)
    if labels.shape != image.shape[:2]:
        raise InvalidInputError(
            f"labels shape {labels.shape} does not match image size {image.shape[:2]}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise InvalidInputError(f"alpha must be in [0, 1], got {alpha}")
    colors = colorize(labels, palette, ignore_index=ignore_index).astype(np.float64)
    blended = np.rint((1.0 - alpha) * image.astype(np.float64) + alpha * colors)
    keep = np.zeros(labels.shape, dtype=bool)
    for skip in (ignore_index, background):
        if skip is not None:
            keep |= labels == skip
    out = blended.clip(0, 255).astype(np.uint8)
    out[keep] = image[keep]
    return out


def index_mask_image(
    labels: np.ndarray, palette: Sequence[Sequence[int]] | None = None
) -> Image.Image:
    """``labels [H, W]`` (values 0..255) as a palette ('P') image, ready to save as PNG.

    The raw pixel values are the class indices; ``palette`` (default :func:`default_palette`
    over all 256 indices, so 255/void gets a colour too) supplies the display colours. Kept
    apart from :func:`save_index_mask` so that a service can encode the same PNG in memory.
    """
    labels = _check_labels(labels)
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
        raise InvalidInputError(
            f"label {bad} cannot be stored in a palette PNG (indices 0..255); "
            f"save it as a 16-bit PNG or .npy instead"
        )
    lut = _palette_array(palette if palette is not None else label_colormap(256), 256)
    if len(lut) > 256:
        raise InvalidInputError(f"a PNG palette holds at most 256 colours, got {len(lut)}")
    if labels.size and labels.max() >= len(lut):
        raise InvalidInputError(
            f"label {int(labels.max())} has no colour: palette has {len(lut)} entries"
        )
    img = Image.fromarray(labels.astype(np.uint8))  # "L"; putpalette turns it into "P"
    full = np.zeros((256, 3), dtype=np.uint8)
    full[: len(lut)] = lut
    img.putpalette(full.reshape(-1).tolist())
    return img


def save_index_mask(
    path: str | Path,
    labels: np.ndarray,
    palette: Sequence[Sequence[int]] | None = None,
) -> Path:
    """Write ``labels [H, W]`` (values 0..255) as a palette PNG (:func:`index_mask_image`);
    returns the path. Parent folders are created."""
    image = index_mask_image(labels, palette)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def load_index_mask(path: str | Path) -> np.ndarray:
    """Read a mask PNG back as class indices ``[H, W]`` uint8 (palette or grey 'L' images)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"mask file {str(path)!r} does not exist")
    with Image.open(path) as img:
        if img.mode not in ("P", "L"):
            raise DataError(
                f"mask {str(path)!r} has mode {img.mode!r}; expected a palette ('P') or grey "
                f"('L') PNG whose pixel values are class indices"
            )
        return np.asarray(img).copy()
