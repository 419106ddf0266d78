"""Uploaded bytes -> a checked ``uint8 [H, W, C]`` image, or the reason it is refused.

The checks run cheapest first: the declared content type (415), the byte count (413), the
image header (400 when it is not one of the accepted formats), the pixel count read from
the header before any pixel is decoded (413), then the full decode (400 when truncated or
corrupt). Decoding is :func:`pixelseg.data.read_image`, the reader ``pixelseg predict``
uses, so modes convert the same way (grey repeated to RGB, alpha dropped, 16-bit scaled).

PIL's own decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``) stays as it is: the
settings refuse a ``max_pixels`` above it, so it can only fire on an image the header check
has already refused; if it fires anyway it is reported as the same 413.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from pixelseg.errors import DataError
from pixelseg.serve.errors import ApiError

__all__ = ["PIL_FORMATS", "check_content_type", "check_size", "decode_upload", "size_text"]

#: PIL decoders tried on an upload: the formats of the accepted content types, no others
#: (PIL knows dozens; a service decodes only what it advertises).
PIL_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "BMP", "TIFF", "WEBP")


def check_content_type(content_type: str | None, accepted: tuple[str, ...]) -> None:
    """415 unless the part's media type (parameters ignored, any case) is in ``accepted``."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media not in accepted:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"content type {content_type or '(none)'!r} is not accepted; send one of "
            f"{', '.join(accepted)}",
        )


def size_text(size: int) -> str:
    """``20971520`` -> ``"20971520 bytes (20.0 MiB)"``; small sizes in bytes alone."""
    return f"{size} bytes ({size / 2**20:.1f} MiB)" if size >= 2**20 else f"{size} bytes"


def check_size(size: int, max_bytes: int) -> None:
    """413 when an upload of ``size`` bytes exceeds ``max_bytes``."""
    if size > max_bytes:
        raise ApiError(
            413,
            "upload_too_large",
            f"the uploaded file has {size} bytes; the limit is {size_text(max_bytes)}",
        )


def decode_upload(data: bytes, *, max_pixels: int, in_channels: int = 3) -> np.ndarray:
    """``data`` (an encoded image) -> ``uint8 [H, W, in_channels]``."""
    if not data:
        raise ApiError(400, "not_an_image", "the uploaded file is empty")
    try:
        with Image.open(io.BytesIO(data), formats=PIL_FORMATS) as image:
            width, height = image.size
    except Image.DecompressionBombError as error:
        raise ApiError(
            413, "too_many_pixels", f"the image is too large to decode: {error}"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, KeyError):
        raise ApiError(
            400,
            "not_an_image",
            f"the upload is not a readable image (accepted formats: {', '.join(PIL_FORMATS)})",
        ) from None
    if width * height > max_pixels:
        raise ApiError(
            413,
            "too_many_pixels",
            f"the image has {width}x{height} = {width * height} pixels; the limit is "
            f"{max_pixels} pixels",
        )
    from pixelseg.data import read_image

    stream = io.BytesIO(data)
    try:
        return read_image(stream, in_channels=in_channels)  # type: ignore[arg-type]
    except DataError as error:
        # read_image names its file; here the file is the upload, so say the cause alone.
        reason = error.__cause__ or str(error).replace(repr(str(stream)), "the upload")
        raise ApiError(
            400,
            "corrupt_image",
            f"the {width}x{height} image could not be decoded (truncated or corrupt?): {reason}",
        ) from None
