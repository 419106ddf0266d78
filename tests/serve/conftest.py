"""A tiny trained U-Net, its ONNX export, test images and what ``pixelseg predict`` wrote
for them: the references every served answer is compared with (made once per session)."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(scope="session")
def served(tiny_unet, tmp_path_factory) -> dict[str, Path]:
    """``checkpoint`` (.pt), ``model`` (.onnx + sidecar) of the shared tiny U-Net
    (tests/conftest.py), ``images`` (a folder of shapes and noise of several sizes) and
    ``predicted`` / ``predicted_onnx`` (what ``pixelseg predict`` wrote for them with each
    model)."""
    from pixelseg import workflows
    from pixelseg.data import SyntheticShapes

    checkpoint, model = tiny_unet["checkpoint"], tiny_unet["model"]
    root = tmp_path_factory.mktemp("served")
    images = root / "images"
    images.mkdir()
    shapes = SyntheticShapes(3, size=48, seed=5)
    for index in range(3):
        image, _ = shapes.generate(index)
        Image.fromarray(image[: 48 - 2 * index, : 44 + index]).save(images / f"shape_{index}.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 41, 3), dtype=np.uint8)).save(images / "noise.png")
    predicted = root / "predicted"
    workflows.predict_files(checkpoint, [str(images)], predicted)
    predicted_onnx = root / "predicted_onnx"
    workflows.predict_files(model, [str(images)], predicted_onnx)
    return {
        "checkpoint": checkpoint,
        "model": model,
        "images": images,
        "predicted": predicted,
        "predicted_onnx": predicted_onnx,
    }


@pytest.fixture(scope="session")
def runner(served):
    """The .pt model loaded as the service loads it (shared: loading takes a while)."""
    from pixelseg.serve.model_runner import load_runner
    from pixelseg.serve.settings import ServeSettings

    return load_runner(ServeSettings(model=served["checkpoint"]))


class GatedPredictor:
    """Wraps a predictor: records each batch's shape, sleeps ``delay`` seconds per pass, and
    (when ``gate`` is given) blocks the first pass until the gate opens."""

    def __init__(self, predictor, delay: float = 0.0, gate: threading.Event | None = None):
        self.predictor = predictor
        self.delay = delay
        self.gate = gate
        self.shapes: list[tuple[int, ...]] = []
        self.running = threading.Event()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(images.shape))
        self.running.set()
        if self.gate is not None and len(self.shapes) == 1:
            assert self.gate.wait(10), "the test never opened the gate"
        time.sleep(self.delay)
        return self.predictor(images)


@pytest.fixture
def gated_runner(runner):
    """``make(delay=0, gate=None) -> (runner, GatedPredictor)``: the .pt model behind a
    :class:`GatedPredictor`, for tests of batching, queueing and timeouts."""

    def make(delay: float = 0.0, gate: threading.Event | None = None):
        predictor = GatedPredictor(runner.predictor, delay, gate)
        return dataclasses.replace(runner, predictor=predictor), predictor

    return make
