from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from pixelseg.checkpoints import (
    FORMAT_VERSION,
    INFERENCE_KEYS,
    load_checkpoint,
    require_keys,
    save_checkpoint,
)
from pixelseg.engine.rng import capture_rng_state, restore_rng_state
from pixelseg.errors import CheckpointError
from pixelseg.tasks import TASKS


def _payload():
    return {
        "model": {"w": torch.arange(4.0)},
        "model_spec": {"name": "unet"},
        "task": "semantic",
        "classes": ["a", "b"],
        "normalization": {"mean": [0.5], "std": [0.5]},
        "in_channels": 1,
    }


def test_round_trip_and_no_temp_files_left(tmp_path):
    path = save_checkpoint(_payload(), tmp_path / "last.pt")
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], torch.arange(4.0))
    assert loaded["format_version"] == FORMAT_VERSION == 2
    assert os.listdir(tmp_path) == ["last.pt"]


def test_interrupted_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(_payload(), tmp_path / "last.pt")

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", explode)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_payload(), path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.arange(4.0))
    assert os.listdir(tmp_path) == ["last.pt"]


def test_corrupt_and_foreign_files_name_the_path(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match=r"corrupt\.pt"):
        load_checkpoint(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": 1}, foreign)
    with pytest.raises(CheckpointError, match="not a pixelseg checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_rng_state_round_trip():
    state = capture_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_rng_state_restores_from_a_checkpoint_loaded_onto_the_gpu(tmp_path):
    """A resumed GPU run loads its checkpoint with a CUDA map_location, which moves the
    saved RNG byte tensors to the GPU; torch only accepts CPU ones back."""
    torch.rand(1, device="cuda")  # initialise CUDA, so the CUDA generators are captured
    save_checkpoint({**_payload(), "rng": capture_rng_state()}, tmp_path / "last.pt")
    first = (torch.rand(1).item(), torch.rand(1, device="cuda").item())
    state = load_checkpoint(tmp_path / "last.pt", map_location="cuda")["rng"]
    assert state["torch"].device.type == "cuda" and "cuda" in state
    restore_rng_state(state)
    assert (torch.rand(1).item(), torch.rand(1, device="cuda").item()) == first


def test_rng_states_load_weights_only_and_restore(tmp_path):
    """RNG states are tensors and lists, so a checkpoint holding them needs no unpickler."""
    random.random(), np.random.rand(), np.random.randn()  # leave a cached gaussian
    save_checkpoint({**_payload(), "rng": capture_rng_state()}, tmp_path / "last.pt")
    first = (random.random(), np.random.rand(), np.random.randn(), torch.rand(1).item())
    state = torch.load(tmp_path / "last.pt", weights_only=True)["rng"]
    restore_rng_state(state)
    assert (random.random(), np.random.rand(), np.random.randn(), torch.rand(1).item()) == first


def test_pickled_objects_are_refused_naming_the_file(tmp_path):
    """A format-1 file (numpy RNG state) or any pickled object is not unpickled."""
    path = tmp_path / "old.pt"
    torch.save({**_payload(), "format_version": 1, "rng": {"numpy": np.random.get_state()}}, path)
    with pytest.raises(CheckpointError, match=r"old\.pt.*pickled Python objects"):
        load_checkpoint(path)


def test_unknown_format_version_is_refused(tmp_path):
    path = tmp_path / "future.pt"
    torch.save({**_payload(), "format_version": 99}, path)
    with pytest.raises(CheckpointError, match=r"future\.pt.*format version 99.*reads version 2"):
        load_checkpoint(path)


@pytest.mark.parametrize("key", ["task", "classes", "normalization", "in_channels"])
def test_missing_inference_metadata_is_named(tmp_path, key):
    payload = _payload()
    del payload[key]
    path = save_checkpoint(payload, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=rf"partial\.pt.*lacks '{key}'"):
        loaded = load_checkpoint(path)
        require_keys(loaded, TASKS[loaded["task"]].checkpoint_keys, path)
    assert load_checkpoint(path, require=())["model_spec"] == {"name": "unet"}
    assert set(INFERENCE_KEYS) == {"model", "model_spec", "task"}
