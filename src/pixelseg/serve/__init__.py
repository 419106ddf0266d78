"""The HTTP prediction service behind ``pixelseg serve``: FastAPI, micro-batching,
upload limits, Prometheus metrics.

Needs the ``serve`` extra (``pip install 'pixelseg[serve]'``); ``import pixelseg`` does
not import this package. Semantic models only (a ``.pt`` checkpoint or an ``.onnx`` export
with its sidecar).
"""

from __future__ import annotations

from pixelseg.serve.app import create_app
from pixelseg.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
