"""Checkpoint files: atomic writes, safe reads, a checked format version.

A checkpoint is data: tensors, lists and JSON-able metadata, nothing pickled, so every file
(``last.pt`` with its optimiser, schedule and RNG states, and ``best.pt``) loads with
``torch.load(weights_only=True)``; a checkpoint from elsewhere cannot run code when read,
which a service needs. It is written to a temporary file in the same folder, flushed and
renamed over the target: a rename within one filesystem is atomic, so a run killed at any
moment (SIGINT or SIGKILL) leaves either the previous complete file or the new one.

Inference reads checkpoints through this module and never imports the training engine.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from pixelseg.errors import CheckpointError

__all__ = [
    "FORMAT_VERSION",
    "INFERENCE_KEYS",
    "load_checkpoint",
    "package_version",
    "require_keys",
    "save_checkpoint",
]

#: Version 2: weights-only loadable (version 1 pickled numpy RNG states and the schedule).
FORMAT_VERSION = 2

#: What every checkpoint needs for ``eval``, ``predict`` and ``export``: the weights, the
#: model's constructor arguments and the task whose plug-in reads the rest (a task's own
#: keys are checked by :func:`require_keys` with its plug-in's ``checkpoint_keys``).
INFERENCE_KEYS: tuple[str, ...] = ("model", "model_spec", "task")


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


def load_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    *,
    require: Iterable[str] = INFERENCE_KEYS,
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    Errors name the file: missing, unreadable, not a pixelseg checkpoint, a format version
    this pixelseg does not read, or a missing ``require`` key.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds pickled Python objects, which pixelseg does not "
            "unpickle (it may be a format-1 file from pixelseg 0.1, or come from another "
            f"program): {str(error).splitlines()[0]}"
        ) from None
    except Exception as error:  # torch raises several types for a damaged zip
        raise CheckpointError(
            f"checkpoint {str(path)!r} is unreadable or corrupt ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(payload, dict) or "model" not in payload or "model_spec" not in payload:
        raise CheckpointError(
            f"{str(path)!r} is not a pixelseg checkpoint (missing 'model' or 'model_spec')"
        )
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format version {version!r}; this pixelseg reads "
            f"version {FORMAT_VERSION} (retrain, or use the pixelseg version that wrote it)"
        )
    require_keys(payload, require, path)
    return payload


def require_keys(payload: dict[str, Any], keys: Iterable[str], path: str | Path) -> None:
    """Raise :class:`CheckpointError` naming the file and every key of ``keys`` it lacks."""
    missing = [key for key in keys if key not in payload]
    if missing:
        raise CheckpointError(
            f"checkpoint {str(path)!r} lacks {', '.join(repr(k) for k in missing)}, which "
            "eval and predict need; it was not written by pixelseg's trainer"
        )


def package_version() -> str:
    """The installed pixelseg version that checkpoints and exports record ("unknown" when
    run from a source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pixelseg")
    except PackageNotFoundError:
        return "unknown"
