"""The service's error: an HTTP status, a short code and a message naming what was wrong.

Every refusal becomes the JSON body ``{"error": {"code": ..., "message": ...}}``; the codes
are stable strings a client can switch on (``too_many_pixels``, ``queue_full``, ...), and
the message says which value broke which limit.
"""

from __future__ import annotations

from pixelseg.errors import PixelsegError

__all__ = ["ApiError", "error_body"]


class ApiError(PixelsegError):
    """A request the service refuses: ``status`` (4xx/5xx), ``code`` and ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}
