"""``pixelseg serve``: its arguments and the call that starts the service (wiring only).

Kept beside :mod:`pixelseg.cli` so that the command line stays one short module per
concern; nothing here imports FastAPI until the command runs.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["SERVE_NOTES", "add_serve_command", "run_serve"]

SERVE_NOTES = (
    "serves a semantic model over HTTP: GET / (web page), GET /healthz, GET /v1/info, "
    "POST /v1/segment (multipart field 'image'; ?format=png|json|overlay), GET /metrics "
    "(Prometheus). Requests arriving within --max-wait-ms of each other share one forward "
    "pass, up to --max-batch-size, and only images of the same height and width are batched "
    "together. With --api-key-env NAME the key is read from environment variable NAME and "
    "/v1/* and /metrics need the header X-API-Key. Needs the serve extra: "
    "pip install 'pixelseg[serve]'; see docs/DEPLOYMENT.md."
)


def add_serve_command(command: Any) -> None:
    """Add ``serve`` through ``cli.build_parser``'s ``command`` helper."""
    serve = command("serve", "Serve a semantic model over HTTP (.pt or .onnx).", notes=SERVE_NOTES)
    serve.add_argument(
        "--model", required=True, help="a .pt checkpoint (PyTorch) or an .onnx model with its "
        ".json sidecar (onnxruntime, CPU)",
    )  # fmt: skip
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument(
        "--max-batch-size", type=int, default=8, help="images per forward pass at most (8)"
    )
    serve.add_argument(
        "--max-wait-ms", type=float, default=10.0,
        help="how long the first request of a batch waits for others, in ms (10)",
    )  # fmt: skip
    serve.add_argument(
        "--max-queue", type=int, default=64,
        help="requests waiting for a forward pass at most; more get 503 (64)",
    )  # fmt: skip
    serve.add_argument(
        "--timeout-s", type=float, default=30.0,
        help="a request waiting longer than this for its result gets 504 (30)",
    )  # fmt: skip
    serve.add_argument(
        "--upload-timeout-s", type=float, default=60.0,
        help="an upload whose body takes longer than this to arrive gets 408 (60)",
    )  # fmt: skip
    serve.add_argument(
        "--max-upload-mb", type=float, default=20.0, help="largest upload in MiB; 413 above (20)"
    )
    serve.add_argument(
        "--max-pixels", type=int, default=40_000_000,
        help="largest image in pixels, read from its header; 413 above (40000000)",
    )  # fmt: skip
    serve.add_argument(
        "--api-key-env", metavar="NAME",
        help="require the header X-API-Key equal to environment variable NAME (never pass a "
        "key on the command line)",
    )  # fmt: skip
    serve.add_argument("--threads", type=int, help="CPU threads for the model (default: all)")
    serve.add_argument("--device", default="auto", help="auto, cpu or cuda (.pt models)")
    serve.add_argument(
        "--window", type=int, nargs=2, metavar=("H", "W"),
        help="tile images larger than H x W with a blended sliding window",
    )  # fmt: skip
    serve.add_argument("--overlap", type=float, default=0.25, help="tile overlap fraction")
    serve.add_argument("--tta", action="store_true", help="average with a horizontal flip")


def run_serve(args: argparse.Namespace) -> int:
    from pixelseg._optional import import_optional

    for module in ("fastapi", "uvicorn", "python_multipart", "prometheus_client"):
        import_optional(module, "serve")
    from pixelseg.serve.server import run_server
    from pixelseg.serve.settings import ServeSettings, api_key_from_env

    settings = ServeSettings(
        model=args.model,
        host=args.host,
        port=args.port,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        timeout_s=args.timeout_s,
        upload_timeout_s=args.upload_timeout_s,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_pixels=args.max_pixels,
        api_key=api_key_from_env(args.api_key_env),
        threads=args.threads,
        device=args.device,
        window=tuple(args.window) if args.window else None,
        overlap=args.overlap,
        tta=args.tta,
    )
    run_server(settings)
    return 0
