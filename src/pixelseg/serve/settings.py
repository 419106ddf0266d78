"""What a running service is allowed to do: the model, the batching and the request limits.

One frozen dataclass, checked when it is made, so that a bad value stops the service at
start-up with its name instead of failing on the first request. The API key is never taken
on the command line: :meth:`ServeSettings.api_key_from_env` reads it from a named
environment variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from pixelseg.errors import InvalidInputError

__all__ = ["ACCEPTED_CONTENT_TYPES", "ServeSettings", "api_key_from_env"]

#: Upload content types the service decodes (the multipart part's ``Content-Type``).
ACCEPTED_CONTENT_TYPES: tuple[str, ...] = (
    "image/png",
    "image/jpeg",
    "image/bmp",
    "image/tiff",
    "image/webp",
)


@dataclass(frozen=True)
class ServeSettings:
    """Settings of ``pixelseg serve``; times in seconds or milliseconds as named.

    ``max_queue`` bounds the requests waiting for a forward pass (503 beyond it);
    ``timeout_s`` bounds the wait for a forward pass and ``upload_timeout_s`` the time the
    upload's body takes to arrive, so a client that stops sending cannot hold a place;
    ``max_pixels`` is checked from the image header before decoding and may not exceed
    PIL's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``), which would refuse such
    images first with a less useful message.
    """

    model: Path
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_size: int = 8
    max_wait_ms: float = 10.0
    max_queue: int = 64
    timeout_s: float = 30.0
    upload_timeout_s: float = 60.0
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    api_key: str | None = field(default=None, repr=False)
    threads: int | None = None
    device: str = "auto"
    window: tuple[int, int] | None = None
    overlap: float = 0.25
    tta: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", Path(self.model))
        for name in ("max_batch_size", "max_queue", "max_upload_bytes", "max_pixels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InvalidInputError(
                    f"serve setting {name} must be an integer >= 1, got {value!r}"
                )
        if not self.max_wait_ms >= 0:  # also refuses NaN
            raise InvalidInputError(
                f"serve setting max_wait_ms must be >= 0, got {self.max_wait_ms!r}"
            )
        for name in ("timeout_s", "upload_timeout_s"):
            if not getattr(self, name) > 0:  # also refuses NaN
                raise InvalidInputError(
                    f"serve setting {name} must be > 0, got {getattr(self, name)!r}"
                )
        if not 0 < self.port < 65536:
            raise InvalidInputError(f"serve setting port must be in 1..65535, got {self.port!r}")
        if Image.MAX_IMAGE_PIXELS is not None and self.max_pixels > Image.MAX_IMAGE_PIXELS:
            raise InvalidInputError(
                f"serve setting max_pixels {self.max_pixels} exceeds PIL's decompression-bomb "
                f"limit Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}; choose at most that"
            )
        if self.threads is not None and self.threads < 1:
            raise InvalidInputError(f"serve setting threads must be >= 1, got {self.threads!r}")
        if self.window is not None and (
            len(self.window) != 2 or any(int(v) < 1 for v in self.window)
        ):
            raise InvalidInputError(
                f"serve setting window must be two sizes H W >= 1, got {self.window!r}"
            )
        if self.api_key is not None and not self.api_key:
            raise InvalidInputError("serve setting api_key is empty; leave it out for no key")
        if self.api_key is not None and not (self.api_key.isascii() and self.api_key.isprintable()):
            # Header values travel as latin-1 bytes and browsers' fetch refuses anything
            # beyond it, so such a key could never be sent: refuse it here, not per request.
            raise InvalidInputError(
                "serve setting api_key must be printable ASCII (it travels in the X-API-Key "
                "header); generate one with: python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'"
            )


def api_key_from_env(name: str | None) -> str | None:
    """The API key held in environment variable ``name`` (None when no name is given).

    A named variable that is unset or empty is an error: a service meant to be protected
    must not start open.
    """
    if not name:
        return None
    value = os.environ.get(name)
    if not value:
        raise InvalidInputError(
            f"--api-key-env {name}: the environment variable {name} is "
            f"{'empty' if value == '' else 'not set'}; export the key first "
            f"(export {name}=...)"
        )
    return value
