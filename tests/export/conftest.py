"""Tiny checkpoints and exports shared by the export tests (each export takes seconds, so
the fp32 export of the trained U-Net is made once per session)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixelseg.build import build_datasets, build_model, checkpoint_meta
from pixelseg.checkpoints import save_checkpoint
from pixelseg.config import parse_config


def tiny_config(options: dict | None = None, **data) -> dict:
    return {
        "seed": 0,
        "data": {
            "synthetic": {"num_train": 48, "num_val": 8, "size": 32, **data},
            "batch_size": 8,
            "normalize": "imagenet",
        },
        "model": {"name": "unet", "options": {"base_channels": 4, **(options or {})}},
        "train": {"epochs": 4, "progress": False, "tensorboard": False, "threads": 2},
    }


def untrained_checkpoint(
    path: Path, model: str = "unet", encoder: str | None = None, **options
) -> Path:
    """A checkpoint of a freshly initialised model (export does not need training)."""
    raw = tiny_config()
    raw["model"] = {"name": model, "encoder": encoder, "options": options}
    config = parse_config(raw)
    bundle = build_datasets(config)
    torch.manual_seed(0)
    net = build_model(config, bundle)
    return save_checkpoint({"model": net.state_dict(), **checkpoint_meta(config, bundle)}, path)


@pytest.fixture(scope="session")
def trained(tiny_unet, tmp_path_factory) -> dict[str, Path]:
    """The shared tiny U-Net (tests/conftest.py: its config, checkpoint and fp32 export
    through the CLI) and test images of several sizes."""
    root = tmp_path_factory.mktemp("trained")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    from pixelseg.data import SyntheticShapes

    shapes = SyntheticShapes(3, size=72, seed=5)
    for index in range(3):
        image, _ = shapes.generate(index)
        Image.fromarray(image[: 72 - 3 * index, : 70 + index]).save(images / f"shape_{index}.png")
    Image.fromarray(rng.integers(0, 255, (45, 61, 3), dtype=np.uint8)).save(images / "noise.png")
    return {**tiny_unet, "images": images}


@pytest.fixture
def copied_trace(trained, monkeypatch):
    """torch.onnx.export replaced by a copy of the shared export of ``trained``'s checkpoint,
    for tests of what follows the trace (the files left, quantisation): a real trace takes
    ~15 s, and test_onnx_export.py and test_export_contract.py check the trace itself."""
    import shutil

    def copy(module, args, path, **options):
        shutil.copyfile(trained["model"], path)

    monkeypatch.setattr(torch.onnx, "export", copy)
