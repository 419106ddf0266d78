"""Checkpoints that survive a killed run and resume a run exactly.

A checkpoint is written to a temporary file in the same directory, flushed to disk, then
renamed over the target: a rename within one filesystem is atomic, so a run killed at any
moment (SIGINT or SIGKILL) leaves either the previous complete file or the new complete
file, never a torn one. It carries everything needed to continue bit for bit (model,
optimiser, scheduler, scaler, counters, every RNG state) and everything ``predict``,
``export`` and ``serve`` need to rebuild the model without the config file.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelseg.errors import CheckpointError

__all__ = [
    "capture_rng_state",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]

FORMAT_VERSION = 1


def capture_rng_state() -> dict[str, Any]:
    """Every random generator a training step may draw from."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back the generators saved by :func:`capture_rng_state`.

    The states must be CPU byte tensors, but a checkpoint loaded with a CUDA
    ``map_location`` (as a resumed GPU run loads it) has moved them to the GPU.
    """
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Atomically write ``payload`` to ``path`` (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format_version": FORMAT_VERSION, **payload}
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        # Interrupted mid-write (including Ctrl-C): drop the partial file, keep the old one.
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable across a power loss; not all platforms allow it.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        # RNG states hold numpy arrays and tuples, so the full unpickler is needed; only load
        # checkpoints you trust (as with any torch.save file).
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # torch raises several types for a damaged zip/pickle
        raise CheckpointError(
            f"checkpoint {str(path)!r} is unreadable or corrupt ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(payload, dict) or "model" not in payload or "model_spec" not in payload:
        raise CheckpointError(
            f"{str(path)!r} is not a pixelseg checkpoint (missing 'model' or 'model_spec')"
        )
    return payload
