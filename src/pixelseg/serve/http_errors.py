"""Every answer the service gives, refusals included, in one JSON shape and counted.

- :class:`~pixelseg.serve.errors.ApiError` -> its status, ``{"error": {"code", "message"}}``.
- FastAPI's query validation -> 422 ``invalid_parameter`` naming the parameter, the value
  and what it should be (instead of FastAPI's default body); other validation -> 400.
- Starlette's own HTTP errors (unknown path 404, wrong method 405) -> the same shape.
- Anything unexpected -> 500 ``internal_error`` (logged with its traceback), never a bare
  stack trace.

The observing middleware times every request, adds ``X-Latency-Ms`` and ``X-Batch-Size``
(0 when no forward pass was involved) where the endpoint did not, and counts the answer in
the metrics by route template (``/v1/segment``, ``/static``), so unknown paths cannot
grow the label set.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from pixelseg.serve.errors import ApiError, error_body
from pixelseg.serve.metrics import ServiceMetrics

__all__ = ["install_error_handlers"]

log = logging.getLogger(__name__)

#: The status recorded for a request whose client disconnected (nginx's convention).
CLIENT_CLOSED = 499

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def _validation_message(error: dict[str, Any]) -> tuple[int, str, str]:
    where = error.get("loc") or ()
    name = where[-1] if where else "?"
    if where and where[0] == "query":
        value = error.get("input")
        return (
            422,
            "invalid_parameter",
            f"query parameter {name!r} = {value!r} is invalid: {error.get('msg', 'bad value')}",
        )
    return 400, "bad_request", f"{'.'.join(map(str, where))}: {error.get('msg', 'bad value')}"


def install_error_handlers(app: FastAPI, metrics: ServiceMetrics) -> None:
    """Register the handlers above and the observing middleware on ``app``."""

    def respond(status: int, code: str, message: str) -> JSONResponse:
        metrics.observe_error(code)
        return JSONResponse(error_body(code, message), status_code=status)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return respond(error.status, error.code, error.message)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        status, code, message = _validation_message(error.errors()[0])
        return respond(status, code, message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(error.status_code, f"http_{error.status_code}")
        message = f"{request.method} {request.url.path}: {error.detail}"
        response = respond(error.status_code, code, message)
        if error.headers:
            response.headers.update(error.headers)
        return response

    @app.middleware("http")
    async def observe(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        request.state.started = started
        try:
            response = await call_next(request)
        except ClientDisconnect:
            # The client went away mid-upload: nobody reads this answer, and it is not a
            # service failure (nginx logs such requests as 499), so no 5xx alarm and no trace.
            log.info("%s %s: the client disconnected", request.method, request.url.path)
            response = respond(
                CLIENT_CLOSED, "client_closed_request", "the client closed the connection"
            )
        except Exception as error:
            log.exception("%s %s failed", request.method, request.url.path)
            response = respond(
                500, "internal_error", f"the service failed: {type(error).__name__}: {error}"
            )
        seconds = time.perf_counter() - started
        response.headers.setdefault("X-Latency-Ms", f"{seconds * 1000.0:.3f}")
        response.headers.setdefault("X-Batch-Size", "0")
        route = request.scope.get("route")
        metrics.observe_request(getattr(route, "path", "unmatched"), response.status_code, seconds)
        return response
