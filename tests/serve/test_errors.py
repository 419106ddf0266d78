"""Every refusal: its status, its JSON code and a message naming the value and the limit;
never a 500 for bad input, never a hang."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pixelseg.serve import ServeSettings, create_app


def png_bytes(array: np.ndarray, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=format)
    return buffer.getvalue()


IMAGE = np.random.default_rng(1).integers(0, 255, (20, 30, 3), dtype=np.uint8)


def post(client, data=None, query="", content_type="image/png", field="image", **kwargs):
    files = {field: ("photo.png", data if data is not None else png_bytes(IMAGE), content_type)}
    return client.post(f"/v1/segment{query}", files=files, **kwargs)


def error_of(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return body["error"]["message"]


def wait_until_queued(app, count: int = 1) -> None:
    """Block until ``count`` requests wait in the app's queue (at most 10 s)."""
    deadline = time.monotonic() + 10
    while app.state.batcher.waiting < count:
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.fixture
def client(served, runner):
    settings = ServeSettings(model=served["checkpoint"], max_upload_bytes=1500, max_pixels=700)
    with TestClient(create_app(settings, runner=runner)) as client:
        yield client


def test_bad_images_are_400(client):
    message = error_of(post(client, b"this is not an image"), 400, "not_an_image")
    assert "PNG, JPEG, BMP, TIFF, WEBP" in message
    assert "empty" in error_of(post(client, b""), 400, "not_an_image")
    gif = png_bytes(IMAGE[:5, :5], format="GIF")
    error_of(post(client, gif), 400, "not_an_image")  # decoders are limited to the accepted types
    # TIFF headers whose reading raises EOFError (no image directory) or KeyError (an
    # unknown compression code) inside PIL
    error_of(
        post(client, b"II*\x00\x00\x00\x00\x00", content_type="image/tiff"), 400, "not_an_image"
    )
    tiff = io.BytesIO()
    Image.fromarray(IMAGE[:5, :5]).save(tiff, format="TIFF")
    data = tiff.getvalue()
    tag = data.index(b"\x03\x01\x03\x00\x01\x00\x00\x00")  # Compression, SHORT, 1 value
    bad = data[: tag + 8] + (999).to_bytes(2, "little") + data[tag + 10 :]
    assert post(client, bad, content_type="image/tiff").status_code == 400
    truncated = png_bytes(IMAGE[:20, :30])[:300]
    assert "30x20" in error_of(post(client, truncated), 400, "corrupt_image")


def test_missing_field_or_form_is_400(client):
    message = error_of(post(client, field="picture"), 400, "missing_field")
    assert "'image'" in message and "'picture'" in message
    message = error_of(client.post("/v1/segment", json={"image": "x"}), 400, "missing_field")
    assert "application/json" in message
    error_of(client.post("/v1/segment"), 400, "missing_field")
    broken = client.post(
        "/v1/segment",
        content=b"--xyz\r\nContent-Disposition: form-data; name=",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert broken.status_code == 400 and broken.json()["error"]["code"] in (
        "bad_form",
        "missing_field",
    )


def test_content_type_outside_the_accepted_set_is_415(client):
    for content_type in ("image/gif", "application/octet-stream", "text/plain"):
        message = error_of(post(client, content_type=content_type), 415, "unsupported_media_type")
        assert repr(content_type) in message and "image/webp" in message
    small = png_bytes(IMAGE[:10, :10])
    assert post(client, small, content_type="IMAGE/PNG; q=1").status_code == 200  # any case


def test_too_many_bytes_or_pixels_is_413(client):
    small = png_bytes(IMAGE[:10, :10])  # 100 px, under 1500 bytes
    assert post(client, small).status_code == 200
    noisy = png_bytes(IMAGE)  # 600 px, but incompressible noise: over 1500 bytes
    assert len(noisy) > 1500
    message = error_of(post(client, noisy), 413, "upload_too_large")
    assert f"{len(noisy)} bytes" in message and "1500" in message
    huge = b"\0" * 200_000  # over the limit plus the form overhead: refused before parsing
    assert "1500" in error_of(post(client, huge), 413, "upload_too_large")
    flat = png_bytes(np.zeros((30, 40, 3), dtype=np.uint8))  # tiny file, 1200 px
    assert len(flat) < 1500
    message = error_of(post(client, flat), 413, "too_many_pixels")
    assert "40x30 = 1200 pixels" in message and "700" in message


def test_chunked_upload_is_cut_off_at_the_limit(client):
    boundary = "pixelsegboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()

    def body():  # no Content-Length: the server counts while it reads
        yield head
        for _ in range(100):
            yield b"\0" * 10_000

    response = client.post(
        "/v1/segment", content=body(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )  # fmt: skip
    assert "content-length" not in response.request.headers
    error_of(response, 413, "upload_too_large")


def test_bad_query_parameters_are_422_in_the_error_shape(client):
    cases = {
        "?format=gif": ("format", "'png', 'json' or 'overlay'"),
        "?format=overlay&alpha=2": ("alpha", "less than or equal to 1"),
        "?format=overlay&alpha=-0.1": ("alpha", "greater than or equal to 0"),
        "?format=overlay&alpha=half": ("alpha", "valid number"),
        "?format=json&include_mask=perhaps": ("include_mask", "valid boolean"),
    }
    for query, (name, hint) in cases.items():
        message = error_of(
            post(client, png_bytes(IMAGE[:10, :10]), query), 422, "invalid_parameter"
        )
        assert repr(name) in message and hint in message, message


def test_api_key(served, runner):
    settings = ServeSettings(model=served["checkpoint"], api_key="s3cret-key")
    with TestClient(create_app(settings, runner=runner)) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/").status_code != 401  # the page loads, then asks for the key
        error_of(client.get("/v1/info"), 401, "missing_api_key")
        error_of(client.get("/metrics"), 401, "missing_api_key")
        wrong = {"X-API-Key": "s3cret-kez"}
        error_of(client.get("/v1/info", headers=wrong), 401, "invalid_api_key")
        error_of(post(client, headers=wrong), 401, "invalid_api_key")
        error_of(post(client, query="?format=gif"), 401, "missing_api_key")  # key first
        right = {"X-API-Key": "s3cret-key"}
        assert client.get("/v1/info", headers=right).json()["api_key_required"] is True
        assert post(client, png_bytes(IMAGE[:10, :10]), headers=right).status_code == 200
        assert client.get("/metrics", headers=right).status_code == 200


def test_full_queue_is_503(served, gated_runner):
    gate = threading.Event()
    runner, predictor = gated_runner(gate=gate)
    settings = ServeSettings(model=served["checkpoint"], max_queue=1, max_wait_ms=0.0)
    app = create_app(settings, runner=runner)
    answers = {}

    def send(key):
        answers[key] = post(client, png_bytes(IMAGE[:10, :10]))

    with TestClient(app) as client:
        running = threading.Thread(target=send, args=("running",))
        running.start()
        assert predictor.running.wait(10)
        waiting = threading.Thread(target=send, args=("waiting",))
        waiting.start()
        wait_until_queued(app)
        message = error_of(post(client, png_bytes(IMAGE[:10, :10])), 503, "queue_full")
        assert "max_queue 1" in message
        gate.set()
        running.join(30)
        waiting.join(30)
    assert answers["running"].status_code == answers["waiting"].status_code == 200


def test_timed_out_requests_leave_the_queue_while_the_forward_pass_runs(served, gated_runner):
    gate = threading.Event()
    runner, predictor = gated_runner(gate=gate)
    settings = ServeSettings(
        model=served["checkpoint"], max_queue=1, max_wait_ms=0.0, timeout_s=1.0
    )
    app = create_app(settings, runner=runner)
    answers = {}

    def send(key):
        answers[key] = post(client, png_bytes(IMAGE[:10, :10]))

    with TestClient(app) as client:
        threads = {key: threading.Thread(target=send, args=(key,)) for key in ("a", "b", "c")}
        threads["a"].start()
        assert predictor.running.wait(10)  # a's forward pass holds the worker
        threads["b"].start()
        threads["b"].join(10)  # b waited in the queue and timed out
        error_of(answers["b"], 504, "timeout")
        threads["c"].start()  # b's place is free again: c is queued, not refused
        wait_until_queued(app)
        gate.set()
        for key in ("a", "c"):
            threads[key].join(30)
    assert answers["c"].status_code == 200


def test_timeout_is_504_and_the_service_recovers(served, gated_runner):
    gate = threading.Event()
    runner, _ = gated_runner(gate=gate)
    settings = ServeSettings(model=served["checkpoint"], timeout_s=0.3)
    with TestClient(create_app(settings, runner=runner)) as client:
        started = time.monotonic()
        message = error_of(post(client, png_bytes(IMAGE[:10, :10])), 504, "timeout")
        assert time.monotonic() - started < 5 and "timeout_s = 0.3 s" in message
        gate.set()
        assert post(client, png_bytes(IMAGE[:10, :10])).status_code == 200


def test_a_failing_model_is_a_json_500_not_a_crash(served, runner):
    import dataclasses

    def broken(images):
        raise RuntimeError("CUDA error: device-side assert triggered")

    app = create_app(
        ServeSettings(model="x.pt"), runner=dataclasses.replace(runner, predictor=broken)
    )
    with TestClient(app) as client:
        message = error_of(post(client, png_bytes(IMAGE[:10, :10])), 500, "inference_failed")
        assert "RuntimeError: CUDA error" in message
        assert client.get("/healthz").status_code == 200


def test_image_below_the_onnx_minimum_is_400(served):
    with TestClient(create_app(ServeSettings(model=served["model"]))) as client:
        message = error_of(post(client, png_bytes(IMAGE[:4, :5])), 400, "image_too_small")
    assert "5x4" in message and "onnxruntime" in message


def test_unknown_paths_and_methods_are_json(client):
    error_of(client.get("/v2/segment"), 404, "not_found")
    error_of(client.get("/v1/segment"), 405, "method_not_allowed")


def test_a_client_that_disconnects_is_not_a_server_error(client):
    from starlette.requests import ClientDisconnect

    async def gone():
        raise ClientDisconnect()

    client.app.add_api_route("/v1/gone", gone, methods=["POST"])
    error_of(client.post("/v1/gone"), 499, "client_closed_request")
    text = client.get("/metrics").text
    assert 'endpoint="/v1/gone",status="499"' in text and 'status="500"' not in text


def test_a_burst_is_refused_before_its_uploads_are_read(served, gated_runner):
    gate = threading.Event()
    runner, predictor = gated_runner(gate=gate)
    settings = ServeSettings(
        model=served["checkpoint"], max_queue=1, max_batch_size=1, max_wait_ms=0.0
    )
    app = create_app(settings, runner=runner)
    answers = {}

    def send(key):
        answers[key] = post(client, png_bytes(IMAGE[:10, :10]))

    with TestClient(app) as client:
        threads = {key: threading.Thread(target=send, args=(key,)) for key in ("a", "b")}
        threads["a"].start()
        assert predictor.running.wait(10)
        threads["b"].start()
        wait_until_queued(app)
        # Two requests hold every place: a third is refused before its body is read, so
        # even a body that is no image gets the 503, not a 400.
        message = error_of(post(client, b"not an image"), 503, "queue_full")
        assert "max_queue 1 + max_batch_size 1" in message
        gate.set()
        for thread in threads.values():
            thread.join(30)
    assert answers["a"].status_code == answers["b"].status_code == 200
