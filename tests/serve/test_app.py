"""The service's answers equal what ``pixelseg predict`` writes for the same image, for the
.pt and the .onnx model, in every format; info, healthz, the page and the metrics."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pixelseg import workflows
from pixelseg.inference import overlay
from pixelseg.serve import ServeSettings, create_app
from pixelseg.serve.model_runner import load_runner


def segment(client, data: bytes, query: str = "", content_type: str = "image/png"):
    return client.post(f"/v1/segment{query}", files={"image": ("x", data, content_type)})


@pytest.fixture(scope="module")
def onnx_runner(served):
    return load_runner(ServeSettings(model=served["model"]))


def runner_for(backend, runner, onnx_runner):
    return runner if backend == "torch" else onnx_runner


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_png_mask_is_predicts_mask(served, runner, onnx_runner, backend):
    chosen = runner_for(backend, runner, onnx_runner)
    predicted = served["predicted" if backend == "torch" else "predicted_onnx"]
    model = served["checkpoint" if backend == "torch" else "model"]
    app = create_app(ServeSettings(model=model), runner=chosen)
    with TestClient(app) as client:
        for path in sorted(served["images"].glob("*.png")):
            response = segment(client, path.read_bytes())
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "image/png"
            assert response.headers["x-batch-size"] == "1"
            assert float(response.headers["x-latency-ms"]) > 0
            reference = predicted / f"{path.stem}_mask.png"
            got, expected = Image.open(io.BytesIO(response.content)), Image.open(reference)
            assert got.mode == "P" and got.getpalette() == expected.getpalette()
            np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
            assert response.content == reference.read_bytes()  # the same file, byte for byte
    assert len(np.unique(np.asarray(expected))) > 1  # the model predicts shapes


def test_overlay_is_predicts_overlay_and_follows_alpha(served, runner):
    path = served["images"] / "shape_0.png"
    image = np.asarray(Image.open(path).convert("RGB"))
    labels = np.asarray(Image.open(served["predicted"] / "shape_0_mask.png"))
    with TestClient(create_app(ServeSettings(model="best.pt"), runner=runner)) as client:
        default = segment(client, path.read_bytes(), "?format=overlay")
        faint = segment(client, path.read_bytes(), "?format=overlay&alpha=0.3")
        none = segment(client, path.read_bytes(), "?format=overlay&alpha=0")
    assert default.status_code == faint.status_code == none.status_code == 200
    reference = np.asarray(Image.open(served["predicted"] / "shape_0_overlay.png"))
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(default.content))), reference)
    by_hand = overlay(image, labels, runner.colors, alpha=0.3)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(faint.content))), by_hand)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(none.content))), image)


def test_json_counts_polygons_and_mask(served, runner):
    path = served["images"] / "shape_1.png"
    labels = np.asarray(Image.open(served["predicted"] / "shape_1_mask.png"))
    with TestClient(create_app(ServeSettings(model="best.pt"), runner=runner)) as client:
        plain = segment(client, path.read_bytes(), "?format=json")
        with_mask = segment(client, path.read_bytes(), "?format=json&include_mask=true")
    assert plain.status_code == with_mask.status_code == 200
    body = plain.json()
    assert "mask_png" not in body
    assert (body["width"], body["height"]) == (labels.shape[1], labels.shape[0])
    assert body["batch_size"] == 1 and plain.headers["x-batch-size"] == "1"
    assert float(plain.headers["x-latency-ms"]) == body["latency_ms"] > 0
    counts = np.bincount(labels.ravel(), minlength=runner.task.num_classes)
    present = [int(i) for i in np.flatnonzero(counts)]
    assert [c["index"] for c in body["classes"]] == present and len(present) > 1
    for entry in body["classes"]:
        index = entry["index"]
        assert entry["name"] == runner.task.class_names[index]
        assert entry["color"] == list(runner.colors[index])
        assert entry["pixels"] == counts[index]
        assert entry["share"] == pytest.approx(counts[index] / labels.size)
        assert entry["polygons"]
        for polygon in entry["polygons"]:
            xs, ys = np.asarray(polygon).T
            assert (labels[ys, xs] == index).all()  # vertices are boundary pixels of the class
    decoded = Image.open(io.BytesIO(base64.b64decode(with_mask.json()["mask_png"])))
    np.testing.assert_array_equal(np.asarray(decoded), labels)


def test_grey_alpha_16bit_and_jpeg_uploads_are_read_as_predict_reads_them(served, runner, tmp_path):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 255, (26, 35, 3), dtype=np.uint8)
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(rgb[:, :, 0]).save(folder / "grey.png")
    Image.fromarray(np.dstack([rgb, rgb[:, :, :1]])).save(folder / "rgba.png")
    Image.fromarray(rgb[:, :, 1].astype(np.uint16) * 257).save(folder / "deep.png")
    Image.fromarray(rgb).save(folder / "photo.jpg", quality=90)
    types = {".png": "image/png", ".jpg": "image/jpeg"}
    workflows.predict_files(served["checkpoint"], [str(folder)], tmp_path / "p")
    with TestClient(create_app(ServeSettings(model="best.pt"), runner=runner)) as client:
        for path in sorted(folder.iterdir()):
            response = segment(client, path.read_bytes(), content_type=types[path.suffix])
            assert response.status_code == 200, (path.name, response.text)
            expected = np.asarray(Image.open(tmp_path / "p" / f"{path.stem}_mask.png"))
            np.testing.assert_array_equal(
                np.asarray(Image.open(io.BytesIO(response.content))), expected
            )


def test_info_describes_model_and_limits(served, runner, onnx_runner):
    settings = ServeSettings(model=served["checkpoint"], max_batch_size=4, max_wait_ms=5.0,
                             timeout_s=12.5, max_upload_bytes=1000, max_pixels=5000)  # fmt: skip
    with TestClient(create_app(settings, runner=runner)) as client:
        info = client.get("/v1/info").json()
    assert info == {
        "task": "semantic",
        "classes": ["background", "circle", "square", "triangle"],
        "colors": [list(c) for c in runner.colors],
        "ignore_index": None,
        "backend": "torch",
        "model": "best.pt",
        "pixelseg_version": info["pixelseg_version"],
        "input_rules": None,
        "formats": ["png", "json", "overlay"],
        "limits": {
            "max_upload_bytes": 1000,
            "max_pixels": 5000,
            "content_types": ["image/png", "image/jpeg", "image/bmp", "image/tiff", "image/webp"],
            "max_queue": 64,
        },
        "batching": {"max_batch_size": 4, "max_wait_ms": 5.0},
        "timeout_s": 12.5,
        "upload_timeout_s": 60.0,
        "api_key_required": False,
    }
    assert isinstance(info["pixelseg_version"], str) and info["pixelseg_version"]
    sidecar = json.loads(served["model"].with_suffix(".json").read_text())
    app = create_app(ServeSettings(model=served["model"]), runner=onnx_runner)
    with TestClient(app) as client:
        info = client.get("/v1/info").json()
    assert info["backend"] == "onnxruntime" and info["model"] == "model.onnx"
    assert info["input_rules"] == sidecar["input_rules"] and info["input_rules"]["min_height"] > 1


def test_healthz_page_and_static_files(runner, tmp_path, monkeypatch):
    import pixelseg.serve.app as app_module

    monkeypatch.setattr(app_module, "STATIC_DIR", tmp_path)
    with TestClient(create_app(ServeSettings(model="best.pt"), runner=runner)) as client:
        health = client.get("/healthz")
        missing = client.get("/")
        (tmp_path / "index.html").write_text("<!doctype html><title>pixelseg</title>")
        (tmp_path / "app.js").write_text("console.log('hi');")
        page = client.get("/")
        script = client.get("/static/app.js")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert health.headers["x-batch-size"] == "0" and float(health.headers["x-latency-ms"]) >= 0
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert "index.html" in missing.json()["error"]["message"]
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text == "<!doctype html><title>pixelseg</title>"
    assert script.status_code == 200 and script.text == "console.log('hi');"


def test_metrics_count_requests_errors_and_batches(served, runner):
    data = (served["images"] / "noise.png").read_bytes()
    app = create_app(ServeSettings(model="best.pt"), runner=runner)
    other = create_app(ServeSettings(model="best.pt"), runner=runner)
    with TestClient(app) as client, TestClient(other) as second:
        for _ in range(2):
            assert segment(client, data).status_code == 200
        assert segment(client, data, "?format=gif").status_code == 422
        assert client.get("/healthz").status_code == 200
        response = client.get("/metrics")
        untouched = second.get("/metrics").text
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for line in (
        'pixelseg_requests_total{endpoint="/v1/segment",status="200"} 2.0',
        'pixelseg_requests_total{endpoint="/v1/segment",status="422"} 1.0',
        'pixelseg_requests_total{endpoint="/healthz",status="200"} 1.0',
        'pixelseg_errors_total{reason="invalid_parameter"} 1.0',
        'pixelseg_request_latency_seconds_count{endpoint="/v1/segment"} 3.0',
        'pixelseg_batch_size_bucket{le="1.0"} 2.0',
        "pixelseg_batch_size_count 2.0",
        "pixelseg_queue_depth 0.0",
    ):
        assert line in text.splitlines(), line
    assert "pixelseg_batch_size_count 0.0" in untouched.splitlines()  # a registry per app
    assert "pixelseg_requests_total{" not in untouched
