"""Reading the ``image`` file field of a multipart upload without reading past the limit.

Starlette's ``request.form()`` reads the whole body before the endpoint can look at its
size; here a declared ``Content-Length`` over the limit is refused before any byte is read,
and the body stream is counted while it is parsed, so a chunked upload without a length is
cut off as soon as it passes the limit (413 ``upload_too_large`` either way).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pixelseg.serve.errors import ApiError
from pixelseg.serve.uploads import check_size

__all__ = ["FORM_OVERHEAD_BYTES", "read_file_field"]

#: Room for the multipart boundaries and part headers around the file, in bytes.
FORM_OVERHEAD_BYTES = 64 * 1024


def _too_large(body_bytes: int, max_bytes: int) -> ApiError:
    return ApiError(
        413,
        "upload_too_large",
        f"the request body has {body_bytes} bytes or more; uploads are limited to {max_bytes} "
        f"bytes ({max_bytes / 2**20:.1f} MiB) plus {FORM_OVERHEAD_BYTES} bytes of form overhead",
    )


async def _counted(
    stream: AsyncIterator[bytes], limit: int, max_bytes: int
) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise _too_large(total, max_bytes)
        yield chunk


async def read_file_field(request: object, field: str, max_bytes: int) -> tuple[bytes, str | None]:
    """``(bytes, declared content type)`` of the file field ``field`` of a multipart request
    (a Starlette ``Request``); 400 when the body is not a form holding that file, 413 when it
    is larger than ``max_bytes``."""
    from starlette.formparsers import MultiPartException, MultiPartParser

    headers = request.headers  # type: ignore[attr-defined]
    content_type = headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(
            400,
            "missing_field",
            f"send the image as multipart/form-data with a file field {field!r} (the request "
            f"has content type {content_type or '(none)'!r})",
        )
    limit = max_bytes + FORM_OVERHEAD_BYTES
    length = headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise _too_large(int(length), max_bytes)
    parser = MultiPartParser(
        headers,
        _counted(request.stream(), limit, max_bytes),  # type: ignore[attr-defined]
        max_files=1,
        max_fields=16,
    )
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise ApiError(
            400, "bad_form", f"the multipart form is malformed: {error.message}"
        ) from None
    try:
        upload = form.get(field)
        if upload is None or isinstance(upload, str):
            sent = ", ".join(repr(key) for key in form) or "none"
            raise ApiError(
                400,
                "missing_field",
                f"the form has no file field {field!r} (fields sent: {sent}); send the image as "
                f"-F {field}=@photo.png",
            )
        data = await upload.read()
        content = upload.content_type
    finally:
        await form.close()
    check_size(len(data), max_bytes)
    return data, content
