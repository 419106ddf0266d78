"""The HTTP service: :func:`create_app` builds the FastAPI app around one loaded model.

Routes: ``GET /`` (the web page), ``/static/*``, ``GET /healthz``, ``GET /v1/info``,
``POST /v1/segment``, ``GET /metrics``. With an API key set, ``/v1/*`` and ``/metrics``
need the header ``X-API-Key`` (compared in constant time); ``/healthz``, the page and its
static files stay open (the page holds no data and must load to ask for the key). Every
refusal is JSON ``{"error": {"code", "message"}}`` (:mod:`pixelseg.serve.http_errors`).

This module is the ``serve`` extra's: it imports FastAPI at the top, and nothing from the
training engine.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from pixelseg.checkpoints import package_version
from pixelseg.errors import InvalidInputError
from pixelseg.serve.batcher import BatchResult, MicroBatcher
from pixelseg.serve.errors import ApiError, error_body
from pixelseg.serve.form import read_file_field
from pixelseg.serve.http_errors import install_error_handlers
from pixelseg.serve.metrics import ServiceMetrics
from pixelseg.serve.model_runner import ModelRunner, load_runner
from pixelseg.serve.responses import mask_png, overlay_png, segment_json
from pixelseg.serve.settings import ACCEPTED_CONTENT_TYPES, ServeSettings
from pixelseg.serve.uploads import check_content_type, check_size, decode_upload

__all__ = ["FORMATS", "STATIC_DIR", "create_app"]

log = logging.getLogger(__name__)

#: The web page's files (index.html, app.js, style.css), shipped as package data.
STATIC_DIR = Path(__file__).resolve().parent / "static"

#: ``format`` values of ``POST /v1/segment``.
FORMATS = ("png", "json", "overlay")
OutputFormat = Literal["png", "json", "overlay"]


def create_app(settings: ServeSettings, *, runner: ModelRunner | None = None) -> FastAPI:
    """The app serving ``settings.model`` (loaded here, so a bad model fails at start-up).

    ``runner`` replaces the loaded model (tests pass one wrapping a slow predictor).
    """
    runner = runner if runner is not None else load_runner(settings)
    metrics = ServiceMetrics()
    batcher = MicroBatcher(
        runner.run,
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
        max_queue=settings.max_queue,
        on_batch=metrics.observe_batch,
        on_depth=metrics.set_queue_depth,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    # No Swagger UI or ReDoc: FastAPI loads them from a CDN, and the service serves only
    # its own files. The schema stays at /openapi.json (no data; open like the page).
    app = FastAPI(
        title="pixelseg",
        version=package_version(),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings, app.state.runner = settings, runner
    app.state.batcher, app.state.metrics = batcher, metrics
    install_error_handlers(app, metrics)

    def require_key(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("x-api-key")
        if given is None:
            raise ApiError(401, "missing_api_key", "this service needs the header X-API-Key")
        if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise ApiError(401, "invalid_api_key", "the X-API-Key header holds a wrong key")

    protected = [Depends(require_key)]

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        index = STATIC_DIR / "index.html"
        if not index.is_file():
            return JSONResponse(
                error_body("not_found", f"the web page is not installed: {index} is missing"),
                status_code=404,
            )
        return FileResponse(index)

    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/info", dependencies=protected)
    async def info() -> dict[str, Any]:
        return service_info(settings, runner)

    @app.get("/metrics", dependencies=protected)
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.render()
        return Response(body, headers={"Content-Type": content_type})

    # Requests past admission hold an upload, a decoded image or a place in a batch: bounded
    # so that a burst is refused (503) before its bodies are read, not by the OOM killer.
    admission = {"held": 0, "limit": settings.max_queue + settings.max_batch_size}

    @app.post("/v1/segment", dependencies=protected)
    async def segment(
        request: Request,
        output_format: Annotated[OutputFormat, Query(alias="format")] = "png",
        alpha: Annotated[float, Query(ge=0.0, le=1.0)] = 0.5,
        include_mask: bool = False,
    ) -> Response:
        if admission["held"] >= admission["limit"]:
            raise ApiError(
                503,
                "queue_full",
                f"{admission['held']} requests are already being read or served (max_queue "
                f"{settings.max_queue} + max_batch_size {settings.max_batch_size}); retry later",
            )
        admission["held"] += 1
        try:
            return await answer(request, output_format, alpha, include_mask)
        finally:
            admission["held"] -= 1

    async def answer(
        request: Request, output_format: OutputFormat, alpha: float, include_mask: bool
    ) -> Response:
        started = request.state.started
        data, content_type = await read_upload(request)
        check_content_type(content_type, ACCEPTED_CONTENT_TYPES)
        check_size(len(data), settings.max_upload_bytes)
        image = await asyncio.to_thread(
            decode_upload, data, max_pixels=settings.max_pixels,
            in_channels=runner.task.in_channels,
        )  # fmt: skip
        check_min_size(image.shape[0], image.shape[1], runner)
        result = await infer(await asyncio.to_thread(runner.prepare, image))

        def render() -> Response:
            # Latency runs to the moment the body is ready, so JSON carries its own.
            if output_format == "json":
                mask = (
                    mask_png(result.labels, runner.colors, runner.task.num_classes)
                    if include_mask
                    else None
                )
                summary = segment_json(
                    result.labels, runner.task.class_names, runner.colors,
                    batch_size=result.batch_size, mask=mask,
                )  # fmt: skip
                latency_ms = elapsed_ms(started)
                return JSONResponse(
                    {"latency_ms": latency_ms, **summary},
                    headers=timing_headers(latency_ms, result.batch_size),
                )
            if output_format == "overlay":
                body = overlay_png(image, result.labels, runner.colors, alpha)
            else:
                body = mask_png(result.labels, runner.colors, runner.task.num_classes)
            return Response(
                body,
                media_type="image/png",
                headers=timing_headers(elapsed_ms(started), result.batch_size),
            )

        return await asyncio.to_thread(render)

    async def read_upload(request: Request) -> tuple[bytes, str | None]:
        # uvicorn has no timeout for a request body: without this, a client that sends
        # headers and then stalls holds an admission place for ever.
        try:
            return await asyncio.wait_for(
                read_file_field(request, "image", settings.max_upload_bytes),
                settings.upload_timeout_s,
            )
        except TimeoutError:
            raise ApiError(
                408,
                "upload_timeout",
                f"the upload did not arrive within upload_timeout_s = "
                f"{settings.upload_timeout_s:g} s; send the whole body without pausing",
            ) from None

    async def infer(tensor: Any) -> BatchResult:
        try:
            return await asyncio.wait_for(batcher.submit(tensor), settings.timeout_s)
        except TimeoutError:
            raise ApiError(
                504,
                "timeout",
                f"no result within timeout_s = {settings.timeout_s:g} s ({batcher.waiting} "
                "requests still waiting); retry later",
            ) from None
        except ApiError:
            raise
        except InvalidInputError as error:
            raise ApiError(400, "invalid_image", str(error)) from None
        except Exception as error:
            raise ApiError(
                500, "inference_failed", f"the forward pass failed: {type(error).__name__}: {error}"
            ) from None

    return app


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (a ``time.perf_counter()`` value), to the microsecond."""
    return round((time.perf_counter() - started) * 1000.0, 3)


def timing_headers(latency_ms: float, batch_size: int) -> dict[str, str]:
    return {"X-Latency-Ms": f"{latency_ms:.3f}", "X-Batch-Size": str(batch_size)}


def check_min_size(height: int, width: int, runner: ModelRunner) -> None:
    """400 for an image below the model's smallest input (an ONNX graph's input rules)."""
    min_height, min_width = runner.min_size
    if height < min_height or width < min_width:
        raise ApiError(
            400,
            "image_too_small",
            f"the image is {width}x{height} pixels (width x height); this {runner.backend} "
            f"model takes at least {min_width}x{min_height}",
        )


def service_info(settings: ServeSettings, runner: ModelRunner) -> dict[str, Any]:
    """The body of ``GET /v1/info``: the model, its classes and the service's limits."""
    return {
        "task": runner.task.name,
        "classes": list(runner.task.class_names),
        "colors": [list(color) for color in runner.colors],
        "ignore_index": runner.task.ignore_index,
        "backend": runner.backend,
        "model": runner.model_name,
        "pixelseg_version": package_version(),
        "input_rules": runner.input_rules,
        "formats": list(FORMATS),
        "limits": {
            "max_upload_bytes": settings.max_upload_bytes,
            "max_pixels": settings.max_pixels,
            "content_types": list(ACCEPTED_CONTENT_TYPES),
            "max_queue": settings.max_queue,
        },
        "batching": {
            "max_batch_size": settings.max_batch_size,
            "max_wait_ms": settings.max_wait_ms,
        },
        "timeout_s": settings.timeout_s,
        "upload_timeout_s": settings.upload_timeout_s,
        "api_key_required": settings.api_key is not None,
    }
