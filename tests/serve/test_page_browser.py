"""The service's web page in a real headless Chromium, against the real app and a tiny model.

A U-Net (base_channels 4) trained for a few seconds on synthetic shapes is served by uvicorn
in a background thread; Playwright drives Debian's Chromium (never a downloaded browser)
through upload, overlay, legend, opacity slider and error display, and every value the
page shows is checked against a direct request of the same image.

Skips, with the reason, only when the playwright client or a Chromium executable is
missing (CI installs Debian's ``chromium`` in ``.ci/run``).
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    pytest.skip(
        "playwright is not installed (pip install 'pixelseg[dev]'); the browser test needs it",
        allow_module_level=True,
    )

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:  # pragma: no cover - depends on the machine
    pytest.skip(
        "no Chromium executable (chromium, chromium-browser) on PATH; "
        "install Debian's: apt-get install chromium",
        allow_module_level=True,
    )

import httpx  # noqa: E402
import uvicorn  # noqa: E402

from pixelseg.data import SyntheticShapes  # noqa: E402
from pixelseg.serve import ServeSettings, create_app  # noqa: E402

pytestmark = pytest.mark.slow

# The network is closed: without the background-networking flags Chromium waits on refused
# connections (component updates, sync, QUIC probes) and hangs.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000
REPO_ROOT = Path(__file__).resolve().parents[2]

# Reads the whole canvas as a flat RGBA list (small images only).
READ_CANVAS = """() => {
  const canvas = document.getElementById("overlay");
  const ctx = canvas.getContext("2d");
  return [canvas.width, canvas.height, Array.from(ctx.getImageData(0, 0, canvas.width, canvas.height).data)];
}"""


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("PIXELSEG_ARTIFACTS") or REPO_ROOT / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def checkpoint(served) -> Path:
    """The serve tests' U-Net (base_channels 4) trained a few seconds on 32x32 shapes
    (conftest's session fixture: trained once for all the serve tests)."""
    return served["checkpoint"]


class RunningService:
    """The real app under uvicorn in a daemon thread, on a free 127.0.0.1 port."""

    def __init__(self, settings: ServeSettings) -> None:
        app = create_app(settings)
        # Binding port 0 ourselves and handing uvicorn the socket leaves no window in which
        # another process could take the port.
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    def __enter__(self) -> RunningService:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start serving on {self.url}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.socket.close()


@pytest.fixture(scope="module")
def service(checkpoint) -> Iterator[RunningService]:
    with RunningService(ServeSettings(model=checkpoint)) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        # Playwright gives each launch a fresh temporary profile (user-data dir).
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.errors = []  # uncaught exceptions in the page's scripts
    page.on("pageerror", lambda error: page.errors.append(error))
    yield page
    context.close()


def segment_directly(url: str, name: str, data: bytes, content_type: str, **headers) -> dict:
    response = httpx.post(
        f"{url}/v1/segment",
        params={"format": "json", "include_mask": "true"},
        files={"image": (name, data, content_type)},
        headers=headers,
        timeout=60,
    )
    return {"status": response.status_code, "body": response.json()}


def shapes_image(service: RunningService, folder: Path) -> tuple[Path, dict, np.ndarray]:
    """A synthetic shapes image on which the model predicts at least two classes, the
    service's direct answer for it and its decoded index mask ``[H, W]``."""
    shapes = SyntheticShapes(8, size=72, seed=5)
    for index in range(len(shapes)):
        image, _ = shapes.generate(index)
        path = folder / f"shapes_{index}.png"
        Image.fromarray(image).save(path)
        answer = segment_directly(service.url, path.name, path.read_bytes(), "image/png")
        assert answer["status"] == 200, answer
        mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["body"]["mask_png"]))))
        if len(np.unique(mask)) >= 2:
            return path, answer["body"], mask
    raise AssertionError("the trained model predicts a single class on every shapes image")


def test_page_segments_an_image_and_blends_the_mask_locally(service, page, tmp_path):
    info = httpx.get(f"{service.url}/v1/info", timeout=30).json()
    colors = np.asarray(info["colors"], dtype=np.uint8)
    image_path, expected, mask = shapes_image(service, tmp_path)
    segment_requests = []
    page.on("request", lambda r: "/v1/segment" in r.url and segment_requests.append(r.url))

    page.goto(service.url)
    page.wait_for_selector("#model-info[data-ready='true']")
    assert page.inner_text("#model-name") == "best.pt"
    assert page.inner_text("#model-backend") == info["backend"] == "torch"
    assert page.inner_text("#model-classes") == str(len(info["classes"]))

    page.set_input_files("#file-input", image_path)
    page.wait_for_selector("#overlay[data-ready='true']")
    page.screenshot(path=str(artifacts_dir() / "serve_page.png"), full_page=True)

    # The legend: the classes present in the mask, sorted by share, in their colours.
    items = page.eval_on_selector_all(
        ".legend-item",
        """items => items.map(item => ({
             name: item.dataset.class,
             share: Number(item.dataset.share),
             pixels: Number(item.dataset.pixels),
             text: item.querySelector('.legend-share').textContent,
             swatch: getComputedStyle(item.querySelector('.swatch')).backgroundColor,
           }))""",
    )
    present = [info["classes"][index] for index in np.unique(mask)]
    by_share = sorted(expected["classes"], key=lambda c: (-c["share"], c["index"]))
    assert [item["name"] for item in items] == [c["name"] for c in by_share]
    assert sorted(item["name"] for item in items) == sorted(present)
    for item, cls in zip(items, by_share, strict=True):
        assert item["pixels"] == int((mask == cls["index"]).sum()) == cls["pixels"]
        assert item["text"] == f"{100 * cls['share']:.1f}%"
        r, g, b = info["colors"][cls["index"]]
        assert item["swatch"] == f"rgb({r}, {g}, {b})"
    assert sum(item["share"] for item in items) == pytest.approx(1.0, abs=1e-9)
    shown = [float(item["text"].rstrip("%")) for item in items]
    assert sum(shown) == pytest.approx(100.0, abs=0.05 * len(shown) + 1e-9)

    # Latency: the server's figure, and the page's round trip, which encloses it.
    server_ms = float(page.get_attribute("#latency-server", "data-ms"))
    round_trip_ms = float(page.get_attribute("#latency-roundtrip", "data-ms"))
    assert server_ms > 0 and round_trip_ms >= server_ms
    assert re.fullmatch(r"\d+(\.\d)? ms", page.inner_text("#latency-roundtrip"))

    # The canvas: at 60% (the default) a blend, at 100% the class colours, at 0% the image.
    original = np.asarray(Image.open(image_path).convert("RGB")).astype(np.float64)
    painted = colors[mask].astype(np.float64)
    height, width = mask.shape

    def canvas() -> np.ndarray:
        w, h, data = page.evaluate(READ_CANVAS)
        assert (w, h) == (width, height)
        return np.asarray(data, dtype=np.uint8).reshape(h, w, 4)

    blended = canvas()
    assert np.abs(blended[..., :3] - (0.6 * painted + 0.4 * original)).max() <= 1.5
    page.focus("#opacity")
    page.keyboard.press("End")
    page.wait_for_selector("#overlay[data-opacity='100']")
    assert page.inner_text("#opacity-value") == "100%"
    full = canvas()
    np.testing.assert_array_equal(full[..., :3], painted)
    page.keyboard.press("Home")
    page.wait_for_selector("#overlay[data-opacity='0']")
    np.testing.assert_array_equal(canvas()[..., :3], original)
    assert not np.array_equal(full, blended)
    assert len(segment_requests) == 1  # the slider never re-requests
    assert page.errors == []


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_header(data: bytes) -> tuple[int, int]:
    """(bit depth, colour type) from a PNG's IHDR chunk."""
    return data[24], data[25]


def png_with_every_filter(labels: np.ndarray) -> bytes:
    """An 8-bit grey PNG of ``labels [H, W]`` whose row ``y`` uses filter type ``y % 5``
    (None, Sub, Up, Average, Paeth), following the PNG specification. PIL never writes the
    Average filter, so this reference encoder is the only way to check the page undoes it."""
    raw = labels.astype(np.int16)
    rows = []
    for y, row in enumerate(raw):
        left = np.concatenate([[0], row[:-1]])
        up = raw[y - 1] if y else np.zeros_like(row)
        up_left = np.concatenate([[0], up[:-1]])
        p = left + up - up_left
        pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - up_left)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
        predictor = [np.zeros_like(row), left, up, (left + up) // 2, paeth][y % 5]
        rows.append(bytes([y % 5]) + ((row - predictor) % 256).astype(np.uint8).tobytes())

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    height, width = labels.shape
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


def test_page_decodes_mask_pngs_of_every_depth_and_filter(service, page):
    """The page reads class indices from the PNG file itself (an <img> would give a palette
    PNG's colours): palette PNGs of 1, 2, 4 and 8 bits (odd widths, so rows end mid-byte),
    the service's 16-bit grey PNG for models over 256 classes, and all five row filters."""
    rng = np.random.default_rng(1)
    cases = {}
    for colours, bits in [(2, 1), (4, 2), (16, 4), (256, 8)]:
        labels = rng.integers(0, colours, (9, 13), dtype=np.uint8)
        image = Image.fromarray(labels)
        image.putpalette([v for index in range(colours) for v in (index, 255 - index, 7)])
        data = png_bytes(image)
        assert png_header(data) == (bits, 3)  # the encoder wrote the depth under test
        cases[f"palette {bits} bit"] = (data, labels)
    wide = rng.integers(0, 300, (7, 11)).astype(np.uint16)
    data = png_bytes(Image.fromarray(wide))
    assert png_header(data) == (16, 0)
    cases["grey 16 bit"] = (data, wide)
    smooth = (np.add.outer(np.arange(10), 3 * np.arange(12)) % 251).astype(np.uint8)
    cases["every filter"] = (png_with_every_filter(smooth), smooth)
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(cases["every filter"][0]))), smooth
    )

    page.goto(service.url)
    decode = """async (b64) => {
      const { decodeIndexPng } = await import("/static/mask.js");
      const mask = await decodeIndexPng(b64);
      return [mask.width, mask.height, Array.from(mask.indices)];
    }"""
    for name, (data, labels) in cases.items():
        width, height, indices = page.evaluate(decode, base64.b64encode(data).decode())
        assert (height, width) == labels.shape, name
        np.testing.assert_array_equal(np.asarray(indices).reshape(labels.shape), labels, name)
    assert page.errors == []


def test_page_shows_a_rotated_jpeg_as_stored_like_the_service(service, page, tmp_path):
    """The service ignores EXIF orientation; a browser applies it. The page resets the tag,
    so a phone photo (orientation 6: turn 90 degrees) stays on the mask's pixel grid."""
    stored = np.full((24, 40, 3), 230, dtype=np.uint8)
    stored[:, :20] = 20  # dark left half, as stored
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    image.save(path, format="JPEG", quality=95, exif=exif)
    expected = segment_directly(service.url, path.name, path.read_bytes(), "image/jpeg")
    assert (expected["body"]["width"], expected["body"]["height"]) == (40, 24)

    page.goto(service.url)
    page.set_input_files("#file-input", path)
    page.wait_for_selector("#overlay[data-ready='true']")
    assert "mask only" not in page.inner_text("#image-info")
    page.focus("#opacity")
    page.keyboard.press("Home")
    page.wait_for_selector("#overlay[data-opacity='0']")
    width, height, data = page.evaluate(READ_CANVAS)
    assert (width, height) == (40, 24)
    shown = np.asarray(data, dtype=np.int16).reshape(height, width, 4)[..., :3]
    decoded = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
    assert np.abs(shown - decoded).max() <= 8  # two JPEG decoders, same orientation
    assert page.errors == []


def test_page_shows_the_services_errors(service, page, tmp_path):
    page.goto(service.url)
    page.wait_for_selector("#model-info[data-ready='true']")
    cases = [
        ("notes.txt", b"not an image at all", "text/plain"),  # refused by content type
        ("fake.png", b"not an image at all", "image/png"),  # refused when decoded
    ]
    for name, data, content_type in cases:
        expected = segment_directly(service.url, name, data, content_type)
        assert expected["status"] in (400, 415), expected
        path = tmp_path / name
        path.write_bytes(data)
        page.set_input_files("#file-input", path)
        page.wait_for_selector(f"#error[data-status='{expected['status']}']")
        error = expected["body"]["error"]
        assert page.inner_text("#error-title") == f"Error {expected['status']}: {error['code']}"
        assert page.inner_text("#error-message") == error["message"]
        assert page.is_hidden("#result")
        assert page.get_attribute("#overlay", "data-ready") == "false"
    page.screenshot(path=str(artifacts_dir() / "serve_page_error.png"), full_page=True)
    assert page.errors == []


def test_page_asks_for_the_api_key_and_shows_oversize_uploads(checkpoint, page, tmp_path):
    """With a key required the page shows the 401 and the key field; with the key it loads
    the model and reports an upload over the size limit (413) in the service's words."""
    settings = ServeSettings(model=checkpoint, api_key="s3cret", max_upload_bytes=4096)
    rng = np.random.default_rng(0)
    big = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > 4096
    with RunningService(settings) as keyed:
        page.goto(keyed.url)
        page.wait_for_selector("#error[data-status='401']")
        assert page.is_visible("#api-key")
        page.fill("#api-key", "s3cret")
        page.press("#api-key", "Enter")  # commits the field ("change"), the form does not submit
        page.wait_for_selector("#model-info[data-ready='true']")
        assert page.is_hidden("#error")

        expected = segment_directly(
            keyed.url, big.name, big.read_bytes(), "image/png", **{"X-API-Key": "s3cret"}
        )
        assert expected["status"] == 413, expected
        page.set_input_files("#file-input", big)
        page.wait_for_selector("#error[data-status='413']")
        assert page.inner_text("#error-message") == expected["body"]["error"]["message"]
    assert page.errors == []
