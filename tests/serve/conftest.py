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
import yaml
from PIL import Image

from pixelseg.cli import main
from pixelseg.config import parse_config


def tiny_config(root: Path) -> dict:
    """tests/export/conftest.py's trained model: a U-Net (base_channels 4) on 32x32 shapes."""
    return {
        "seed": 0,
        "output_dir": str(root / "run"),
        "data": {
            "synthetic": {"num_train": 48, "num_val": 8, "size": 32},
            "batch_size": 8,
            "normalize": "imagenet",
        },
        "model": {"name": "unet", "options": {"base_channels": 4}},
        "train": {
            "epochs": 4,
            "progress": False,
            "tensorboard": False,
            "threads": 2,
            "optimizer": {"name": "adamw", "lr": 0.01},
        },
    }


@pytest.fixture(scope="session")
def served(tmp_path_factory) -> dict[str, Path]:
    """``checkpoint`` (.pt), ``model`` (.onnx + sidecar), ``images`` (a folder of shapes and
    noise of several sizes) and ``predicted`` / ``predicted_onnx`` (what ``pixelseg predict``
    wrote for them with each model)."""
    from pixelseg import workflows
    from pixelseg.data import SyntheticShapes

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("served")
    raw = tiny_config(root)
    (root / "tiny.yaml").write_text(yaml.safe_dump(raw))
    workflows.train(parse_config(raw))
    checkpoint = root / "run" / "best.pt"
    model = root / "model.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(model)]) == 0
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
