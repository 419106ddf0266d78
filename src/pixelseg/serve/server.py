"""Running the app: uvicorn, started from Python (what ``pixelseg serve`` calls)."""

from __future__ import annotations

import logging

from pixelseg.serve.settings import ServeSettings

__all__ = ["run_server"]

log = logging.getLogger(__name__)


def run_server(settings: ServeSettings, *, log_level: str = "info") -> None:
    """Load the model, then serve it on ``settings.host:settings.port`` until interrupted.

    One process, one event loop: the micro-batcher needs every request in the same loop, so
    uvicorn runs a single worker; scale out with more processes behind a proxy.
    """
    import uvicorn

    from pixelseg.serve.app import create_app

    app = create_app(settings)
    log.info("serving %s on http://%s:%d", settings.model, settings.host, settings.port)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, workers=1)
