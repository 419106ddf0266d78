"""The real thing: uvicorn on a free port answering over a socket, ``pixelseg serve`` as a
subprocess, and a service process that never imports the training engine."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

from pixelseg.serve import ServeSettings, create_app

SRC = str(Path(__file__).resolve().parents[2] / "src")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def uvicorn_serving(app) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread on a free port; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        listener.close()
    assert not thread.is_alive()


def test_uvicorn_serves_healthz_and_a_mask_over_a_socket(served, runner):
    app = create_app(ServeSettings(model=served["checkpoint"]), runner=runner)
    with uvicorn_serving(app) as base:
        assert httpx.get(f"{base}/healthz", timeout=10).json() == {"status": "ok"}
        data = (served["images"] / "noise.png").read_bytes()
        response = httpx.post(
            f"{base}/v1/segment", files={"image": ("noise.png", data, "image/png")}, timeout=30
        )
        assert response.status_code == 200 and response.headers["x-batch-size"] == "1"
        expected = np.asarray(Image.open(served["predicted"] / "noise_mask.png"))
        np.testing.assert_array_equal(
            np.asarray(Image.open(io.BytesIO(response.content))), expected
        )
        # No Swagger UI or ReDoc: FastAPI would load them from a CDN.
        assert httpx.get(f"{base}/docs", timeout=10).status_code == 404
        assert httpx.get(f"{base}/redoc", timeout=10).status_code == 404


def read_response(connection: socket.socket) -> str:
    """One HTTP/1.1 response with a Content-Length, read off a raw socket."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = connection.recv(65536)
        assert chunk, received  # closed before the headers were complete
        received += chunk
    head, body = received.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))  # fmt: skip
    while len(body) < length:
        chunk = connection.recv(65536)
        assert chunk, (head, body)
        body += chunk
    return (head + b"\r\n\r\n" + body).decode("latin-1")


def test_a_stalled_upload_gets_408_and_frees_its_place(served, runner):
    settings = ServeSettings(
        model=served["checkpoint"], upload_timeout_s=0.5, max_queue=1, max_batch_size=1
    )
    app = create_app(settings, runner=runner)
    data = (served["images"] / "noise.png").read_bytes()
    with uvicorn_serving(app) as base:
        port = int(base.rsplit(":", 1)[1])
        head = (
            b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + data[:100]
        )
        request = (
            b"POST /v1/segment HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n"
            + f"Content-Length: {len(head) + 10_000}\r\n\r\n".encode()
            + head
        )
        # Two stalled clients fill both admission places (max_queue + max_batch_size).
        stalled = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(2)]
        try:
            for connection in stalled:
                connection.sendall(request)
            started = time.monotonic()
            answers = [read_response(connection) for connection in stalled]
            waited = time.monotonic() - started
        finally:
            for connection in stalled:
                connection.close()
        for answer in answers:
            assert answer.startswith("HTTP/1.1 408"), answer
            assert '"code":"upload_timeout"' in answer and "upload_timeout_s = 0.5 s" in answer
        assert waited < 10
        response = httpx.post(
            f"{base}/v1/segment", files={"image": ("noise.png", data, "image/png")}, timeout=30
        )
        assert response.status_code == 200
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        assert 'reason="upload_timeout"' in metrics and 'status="408"' in metrics


@pytest.mark.slow
def test_pixelseg_serve_command_answers(served):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": SRC, "PIXELSEG_TEST_KEY": "key-42"}
    command = [sys.executable, "-m", "pixelseg", "serve", "--model", str(served["model"]),
               "--port", str(port), "--api-key-env", "PIXELSEG_TEST_KEY", "--threads", "1"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, process.stdout.read().decode()
            assert time.monotonic() < deadline, "pixelseg serve did not start"
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        assert httpx.get(f"{base}/v1/info", timeout=10).status_code == 401
        info = httpx.get(f"{base}/v1/info", headers={"X-API-Key": "key-42"}, timeout=10).json()
        assert info["backend"] == "onnxruntime" and info["api_key_required"] is True
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode()
    assert "key-42" not in output  # the key is never logged


def test_the_service_does_not_import_the_training_engine(served):
    script = (
        "import sys\n"
        "from pixelseg.serve import ServeSettings, create_app\n"
        f"create_app(ServeSettings(model={str(served['checkpoint'])!r}))\n"
        # albumentations (augmentation only) is deferred: see pixelseg._optional.
        "loaded = sorted(m for m in sys.modules if m.startswith(('pixelseg.engine', "
        "'pixelseg.workflows', 'albumentations')))\n"
        "print(loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
