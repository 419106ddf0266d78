"""Export a checkpoint's model to ONNX, verified against eager PyTorch, with its sidecar.

Each task that exports has one function in :data:`GRAPH_EXPORTERS` that writes the graph
and runs the task's own parity check: semantic and volumetric models compare logits
(:mod:`.onnx_semantic`, :mod:`.onnx_volumetric`: dynamo exporter, opset 18, dynamic batch
and spatial axes), Mask R-CNN compares paired detections (:mod:`.onnx_detection`:
torchvision's TorchScript path, opset 16, one image per run). This module does what every
task shares: it checks the arguments, writes the graph to a temporary file beside ``out``,
renames it only after the check passed, and writes the sidecar.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixelseg.checkpoints import load_checkpoint, require_keys
from pixelseg.errors import CheckpointError, InvalidInputError
from pixelseg.export.graph_check import DEFAULT_TOLERANCE, GraphCheck
from pixelseg.export.onnx_detection import export_detection
from pixelseg.export.onnx_logits import LogitsModule
from pixelseg.export.onnx_semantic import (
    INPUT_NAME,
    OPSET,
    OUTPUT_NAME,
    export_module,
    export_semantic,
    input_size_rules,
    parity_shapes,
)
from pixelseg.export.onnx_volumetric import export_volumetric
from pixelseg.export.sidecar import (
    SIDECAR_FORMAT,
    file_sha256,
    package_version,
    publish_model,
)
from pixelseg.tasks import get_plugin

__all__ = [
    "DEFAULT_TOLERANCE",
    "GRAPH_EXPORTERS",
    "INPUT_NAME",
    "OPSET",
    "OUTPUT_NAME",
    "ExportResult",
    "LogitsModule",
    "export_checkpoint",
    "export_module",
    "exportable_tasks",
    "input_size_rules",
    "parity_shapes",
    "sidecar_meta",
]

#: Task name -> ``(payload, where, path, *, tolerance, opset) -> GraphCheck``: writes the
#: checkpoint's graph to ``path`` and verifies it, raising ExportError when it disagrees.
GRAPH_EXPORTERS: dict[str, Callable[..., GraphCheck]] = {
    "semantic": export_semantic,
    "volumetric": export_volumetric,
    "instance": export_detection,
}


def exportable_tasks() -> list[str]:
    """Tasks whose checkpoints export: an exporter here and sidecar keys in the plug-in."""
    return [name for name in GRAPH_EXPORTERS if get_plugin(name).export_keys]


@dataclass
class ExportResult:
    """What an export wrote and how it was checked: ``max_abs_diff`` is the largest
    difference held against ``tolerance`` (logits, or paired detection scores) over the
    inputs ``shapes``; ``summary`` the parity line."""

    model_path: Path
    sidecar_path: Path
    max_abs_diff: float
    tolerance: float
    shapes: list[list[int]]
    seconds: float
    sidecar: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    dynamic: str = ""

    def lines(self) -> list[str]:
        """What the CLI prints."""
        return [
            f"wrote {self.model_path} and {self.sidecar_path} (opset {self.sidecar['opset']}, "
            f"{self.dynamic}) in {self.seconds:.1f} s",
            self.summary,
        ]


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int | None = None,
) -> ExportResult:
    """Export ``checkpoint`` to ``out`` (``.onnx``) and its sidecar (``.json``), verified.

    ``opset`` defaults to the task's (18 for semantic and volumetric models, 16 for Mask
    R-CNN). Nothing is written unless the parity check passes: the graph goes to a
    temporary file beside ``out``, is compared with PyTorch, and only then renamed over
    ``out``. A failed check raises :class:`ExportError` with the differences, the tolerances
    and the input.
    """
    started = time.perf_counter()
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise InvalidInputError(f"--out {str(out)!r} must end in .onnx")
    if out.is_dir():
        raise InvalidInputError(f"--out {str(out)!r} is a folder; give the .onnx file to write")
    if not tolerance > 0:
        raise InvalidInputError(f"tolerance must be > 0, got {tolerance!r}")
    payload = load_checkpoint(checkpoint)
    where = f"checkpoint {str(checkpoint)!r}"
    task = str(payload["task"])
    plugin = get_plugin(task)
    require_keys(payload, plugin.checkpoint_keys, checkpoint)
    if not plugin.export_keys or task not in GRAPH_EXPORTERS:
        raise CheckpointError(
            f"{where} is a {task!r} model, which has no ONNX export yet; exportable tasks: "
            f"{', '.join(exportable_tasks()) or 'none'}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".onnx", dir=out.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        check = GRAPH_EXPORTERS[task](payload, where, temporary, tolerance=tolerance, opset=opset)
        meta = sidecar_meta(payload, plugin.export_keys, check)
        meta["model_sha256"] = file_sha256(temporary)
        sidecar = publish_model(temporary, out, meta)
    finally:
        temporary.unlink(missing_ok=True)
    return ExportResult(
        out,
        sidecar,
        check.max_abs_diff,
        tolerance,
        check.shapes,
        time.perf_counter() - started,
        meta,
        check.summary,
        check.dynamic,
    )


def sidecar_meta(
    payload: dict[str, Any], keys: tuple[str, ...], check: GraphCheck
) -> dict[str, Any]:
    """The sidecar of a model exported from ``payload`` (without its file hash): format,
    task, versions, opset, the task's entries from ``check`` and the checkpoint's ``keys``."""
    meta: dict[str, Any] = {
        "format": SIDECAR_FORMAT[0],
        "format_version": SIDECAR_FORMAT[1],
        "task": payload["task"],
        "pixelseg_version": package_version(),
        "trained_with_pixelseg": payload.get("pixelseg_version"),
        "opset": check.opset,
        "precision": "fp32",
        **check.sidecar,
    }
    meta.update({key: payload.get(key) for key in keys})
    return meta
