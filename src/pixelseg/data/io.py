"""Reading images and masks from disk, and expanding prediction inputs into image files.

Everything here returns plain numpy arrays (``uint8`` images ``[H, W, C]``, integer masks
``[H, W]``) so datasets and the inference code share one reader and one set of error messages.
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pixelseg.errors import DataError, InvalidInputError

__all__ = [
    "IMAGE_EXTENSIONS",
    "is_image_file",
    "list_images",
    "probe_image",
    "read_image",
    "read_mask",
]

logger = logging.getLogger(__name__)

#: File extensions (lower case) recognised as images, for both images and masks.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

# PIL raises these for unreadable, truncated or corrupt files (EOFError and KeyError from
# TIFF: a header without an image directory, an unknown compression code).
_DECODE_ERRORS = (
    OSError,
    EOFError,
    KeyError,
    UnidentifiedImageError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
)


def is_image_file(path: str | Path) -> bool:
    """True when ``path`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def probe_image(path: str | Path) -> tuple[int, int]:
    """Read only the header of an image file and return its size ``(height, width)``.

    Cheap (no pixel decoding), so datasets can check every file once at construction.
    Raises :class:`DataError` naming the file when it is not a readable image.
    """
    try:
        with Image.open(path) as im:
            width, height = im.size
    except _DECODE_ERRORS as exc:
        raise DataError(f"cannot read image header of {str(path)!r}: {exc}") from exc
    return height, width


def _to_uint8(im: Image.Image, path: str | Path) -> np.ndarray:
    """Decode a PIL image whose mode is not 8-bit into an 8-bit ``[H, W]`` or ``[H, W, 3]``."""
    if im.mode.startswith("I;16") or im.mode == "I":
        # 16-bit grey (microscopy, medical TIFF): keep the full range by scaling 0..65535 -> 0..255.
        arr = np.asarray(im, dtype=np.float64)
        return np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8)
    if im.mode == "F":
        raise DataError(
            f"image {str(path)!r} has floating-point mode 'F'; convert it to 8- or 16-bit first"
        )
    if im.mode in ("1", "L", "LA"):
        return np.asarray(im.convert("L"))
    # P, RGB, RGBA, CMYK, YCbCr, LAB, HSV: PIL knows how to get RGB (alpha is dropped).
    return np.asarray(im.convert("RGB"))


def read_image(path: str | Path, in_channels: int = 3) -> np.ndarray:
    """Decode an image file into ``uint8 [H, W, in_channels]``.

    Grey images are repeated to 3 channels when ``in_channels=3``; colour images become grey
    by ITU-R 601 luminance (PIL's ``convert("L")``) when ``in_channels=1``. 16-bit images are
    scaled to 8 bit. Raises :class:`DataError` naming the file when decoding fails.
    """
    if in_channels not in (1, 3):
        raise InvalidInputError(f"in_channels must be 1 or 3, got {in_channels!r}")
    try:
        with Image.open(path) as im:
            im.load()
            arr = _to_uint8(im, path)
    except DataError:
        raise
    except _DECODE_ERRORS as exc:
        raise DataError(
            f"cannot decode image {str(path)!r} (corrupt or truncated?): {exc}"
        ) from exc
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if in_channels == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif in_channels == 1 and arr.shape[2] == 3:
        arr = np.asarray(Image.fromarray(arr).convert("L"))[:, :, None]
    return np.ascontiguousarray(arr)


def read_mask(path: str | Path, mask_format: str = "index") -> np.ndarray:
    """Decode a mask file without any colour conversion.

    ``index``: L, P (the palette indices, not colours), I/I;16 or 1 mode -> integer ``[H, W]``;
    an RGB file whose three channels are equal is accepted as grey. ``palette``: the file must
    be P mode; returns its indices ``[H, W]``. ``rgb``: returns ``uint8 [H, W, 3]`` colours.
    Raises :class:`DataError` naming the file for unreadable files or an unexpected mode.
    """
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mask_format == "rgb":
                return np.asarray(im.convert("RGB"))
            if mask_format == "palette" and mode != "P":
                raise DataError(
                    f"mask {str(path)!r} has mode {mode!r} but mask_format='palette' needs a "
                    "palette (P mode) PNG; use mask_format='index' for grey index masks"
                )
            if mode in ("L", "P"):
                return np.asarray(im)
            if mode == "1":
                return np.asarray(im, dtype=np.uint8)
            if mode.startswith("I"):
                return np.asarray(im).astype(np.int64)
            if mode in ("RGB", "RGBA"):
                rgb = np.asarray(im.convert("RGB"))
                if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all():
                    return np.ascontiguousarray(rgb[..., 0])
                raise DataError(
                    f"mask {str(path)!r} is a colour ({mode}) image but mask_format='index'; "
                    "use mask_format='rgb' with a color_map for colour-coded masks"
                )
            raise DataError(f"mask {str(path)!r} has unsupported mode {mode!r}")
    except DataError:
        raise
    except _DECODE_ERRORS as exc:
        raise DataError(f"cannot decode mask {str(path)!r} (corrupt or truncated?): {exc}") from exc


def _images_in_dir(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and is_image_file(p))


def list_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files, folders and glob patterns into a list of image files.

    Each input expands in order (a folder or glob to its image files, sorted; a folder is not
    searched recursively, use ``dir/**/*.png`` for that); duplicates are dropped. Raises
    :class:`DataError` naming every input that matched no image and the extensions looked for.
    """
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    found: list[Path] = []
    empty: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            if not is_image_file(path):
                raise DataError(
                    f"{str(item)!r} is not an image file; supported extensions: "
                    f"{', '.join(IMAGE_EXTENSIONS)}"
                )
            matches = [path]
        elif path.is_dir():
            matches = _images_in_dir(path)
        else:
            matches = sorted(
                Path(p) for p in glob.glob(str(item), recursive=True) if is_image_file(p)
            )
            matches = [p for p in matches if p.is_file()]
        if not matches:
            empty.append(str(item))
        found.extend(matches)
    if empty:
        raise DataError(
            f"no images found for {', '.join(repr(e) for e in empty)} (looked for files, "
            f"folders and glob patterns with extensions {', '.join(IMAGE_EXTENSIONS)})"
        )
    unique = list(dict.fromkeys(found))
    logger.debug("list_images: %d inputs -> %d images", len(inputs), len(unique))
    return unique
