"""Suite-wide settings for parallel runs.

``make test`` runs the suite in two pytest-xdist workers on the 2-core machine (559-577 s on the
slowest machine seen, an AVX2-only EPYC where importing pixelseg.workflows takes ~9 s; the
contract is 10 minutes). In a worker:

- idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``, set before
  torch loads its OpenMP runtime, and inherited by the subprocesses tests start): a
  spinning pool in one worker took the core the other worker was computing on, and slowed
  some tests tenfold;
- torch starts with one thread: two workers of two threads each would oversubscribe the
  cores, and most tests run small tensors. Tests and fixtures that need another thread
  count set it and restore it.

Tests are handed out one at a time (``--dist worksteal``: a worker that runs dry takes
tests queued for the other), so fixtures of any scope may be needed on both workers; those
that take long to build and are only read (a trained model, an export, a DDP run) are
built once per run, not once per worker (:func:`built_once`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch  # after the OpenMP setting above

    torch.set_num_threads(1)


def built_once(
    tmp_path_factory: pytest.TempPathFactory, worker_id: str, name: str, build: Callable
) -> dict[str, Path]:
    """``build(root) -> {key: path}`` run once for the whole test run, not once per xdist
    worker: the first worker builds under a file lock, the others read what it wrote
    (pytest-xdist's recipe for session fixtures). Without xdist it simply builds."""
    if worker_id == "master":
        return build(tmp_path_factory.mktemp(name))
    from filelock import FileLock  # a dependency of torch

    shared = tmp_path_factory.getbasetemp().parent  # one per run, beside the workers' dirs
    root, done = shared / name, shared / f"{name}.json"
    with FileLock(str(shared / f"{name}.lock")):
        if done.is_file():
            return {key: Path(value) for key, value in json.loads(done.read_text()).items()}
        shutil.rmtree(root, ignore_errors=True)  # a worker whose build failed left it
        root.mkdir()
        paths = build(root)
        done.write_text(json.dumps({key: str(value) for key, value in paths.items()}))
        return paths


def tiny_unet_config(root: Path) -> dict:
    """A U-Net (base_channels 4) trained for a few seconds on 32x32 shapes."""
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


def _train_and_export_tiny_unet(root: Path) -> dict[str, Path]:
    import torch
    import yaml

    from pixelseg import workflows
    from pixelseg.cli import main
    from pixelseg.config import parse_config

    threads = torch.get_num_threads()
    try:
        raw = tiny_unet_config(root)
        config_path = root / "tiny.yaml"
        config_path.write_text(yaml.safe_dump(raw))
        workflows.train(parse_config(raw))
        checkpoint = root / "run" / "best.pt"
        model = root / "model.onnx"
        assert main(["export", "--checkpoint", str(checkpoint), "--out", str(model)]) == 0
    finally:
        torch.set_num_threads(threads)
    return {"config": config_path, "checkpoint": checkpoint, "model": model}


@pytest.fixture(scope="session")
def build_once(tmp_path_factory, worker_id) -> Callable[[str, Callable], dict[str, Path]]:
    """``build_once(name, build)``: :func:`built_once` for fixtures in test modules."""
    return lambda name, build: built_once(tmp_path_factory, worker_id, name, build)


@pytest.fixture(scope="session")
def tiny_unet(tmp_path_factory, worker_id) -> dict[str, Path]:
    """``config`` (YAML), ``checkpoint`` (best.pt) and ``model`` (its fp32 ONNX export made
    by ``pixelseg export``, with its sidecar) of the tiny trained U-Net that the export and
    service tests share. Read-only: copy a file before changing it."""
    return built_once(tmp_path_factory, worker_id, "tiny_unet", _train_and_export_tiny_unet)
