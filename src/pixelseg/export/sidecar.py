"""The JSON sidecar beside an exported model: what it takes, what it predicts, how it was
checked.

``model.onnx`` is always read with ``model.json`` (same stem): the sidecar carries the task
and the metadata its plug-in needs (for semantic models: classes, colours, normalisation,
input channels), the input-size rules, the opset, the parity or accuracy check the export
passed, the pixelseg version, and the SHA-256 of the model file it belongs to, so that a
sidecar left beside another model is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pixelseg.checkpoints import package_version
from pixelseg.errors import CheckpointError
from pixelseg.tasks import get_plugin

__all__ = [
    "SIDECAR_FORMAT",
    "file_sha256",
    "package_version",
    "read_sidecar",
    "sidecar_path",
    "write_sidecar",
]

#: ``format`` and ``format_version`` of the sidecar; a reader refuses other versions.
SIDECAR_FORMAT = ("pixelseg-onnx-sidecar", 1)

#: Keys every sidecar holds besides its task's plug-in ``checkpoint_keys``.
BASE_KEYS = ("format", "format_version", "task", "model_sha256", "opset", "input", "output")


def sidecar_path(model_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.json``."""
    return Path(model_path).with_suffix(".json")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_sidecar(meta: dict[str, Any], path: str | Path) -> Path:
    """Write ``meta`` as indented JSON atomically (temporary file, then rename)."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(meta, stream, indent=1)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _readable_by_all(path: Path) -> None:
    """The mode a plain ``open`` would give (mkstemp makes owner-only files, which a
    service running as another user could not load)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def publish_model(temporary: str | Path, out: str | Path, meta: dict[str, Any]) -> Path:
    """Move a checked model from ``temporary`` to ``out`` with its sidecar: both land or
    neither does (the sidecar is written before the model moves, and a failure after the
    move takes the model away again). Returns the sidecar's path."""
    temporary, out = Path(temporary), Path(out)
    sidecar = sidecar_path(out)
    if sidecar.is_dir():
        raise OSError(f"the sidecar path {str(sidecar)!r} is a folder")
    handle, side_temp = tempfile.mkstemp(prefix=f".{sidecar.name}.", suffix=".tmp", dir=out.parent)
    moved = False
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(meta, stream, indent=1)
            stream.write("\n")
        for path in (temporary, Path(side_temp)):
            _readable_by_all(path)
        os.replace(temporary, out)
        moved = True
        os.replace(side_temp, sidecar)
    except BaseException:
        Path(side_temp).unlink(missing_ok=True)
        if moved:
            out.unlink(missing_ok=True)
        raise
    return sidecar


def read_sidecar(model_path: str | Path) -> dict[str, Any]:
    """The validated sidecar of ``model_path`` (an ``.onnx`` file).

    Errors name the file: a missing model or sidecar, unreadable JSON, another format
    version, a missing key, or a sidecar written for a different model file.
    """
    model_path = Path(model_path)
    if model_path.suffix.lower() != ".onnx":
        raise CheckpointError(f"{str(model_path)!r} is not an .onnx model")
    if not model_path.is_file():
        raise CheckpointError(f"ONNX model {str(model_path)!r} does not exist")
    path = sidecar_path(model_path)
    if not path.is_file():
        raise CheckpointError(
            f"ONNX model {str(model_path)!r} has no sidecar {str(path)!r} beside it (classes, "
            "normalisation and input rules live there); export with `pixelseg export`, which "
            "writes both, and keep them together"
        )
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"sidecar {str(path)!r} is not readable JSON: {error}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"sidecar {str(path)!r} holds {type(meta).__name__}, not an object")
    found = (meta.get("format"), meta.get("format_version"))
    if found != SIDECAR_FORMAT:
        raise CheckpointError(
            f"sidecar {str(path)!r} has format {found[0]!r} version {found[1]!r}; this pixelseg "
            f"reads {SIDECAR_FORMAT[0]!r} version {SIDECAR_FORMAT[1]}"
        )
    missing = [key for key in BASE_KEYS if key not in meta]
    if not missing:
        missing = [key for key in get_plugin(str(meta["task"])).checkpoint_keys if key not in meta]
    if missing:
        raise CheckpointError(
            f"sidecar {str(path)!r} lacks {', '.join(repr(k) for k in missing)}; re-export "
            "the model with `pixelseg export`"
        )
    if meta["model_sha256"] != file_sha256(model_path):
        raise CheckpointError(
            f"sidecar {str(path)!r} was written for another model file (its model_sha256 does "
            f"not match {str(model_path)!r}); re-export so that the two match"
        )
    return meta
