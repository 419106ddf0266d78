"""Export a checkpoint's model to ONNX and verify it against eager PyTorch.

The graph is captured by torch's dynamo exporter (``torch.onnx.export(..., dynamo=True)``,
opset :data:`OPSET`), which translates the antialiased resize of ``input_scale`` models
(``aten::_upsample_bilinear2d_aa``) through onnxscript; the TorchScript exporter rejects
it. Batch, height and width are dynamic: the model pads to its size multiple and crops
inside the graph, so any size at or above the sidecar's minimum runs.

The export verifies itself: onnxruntime and PyTorch run the same seeded inputs at several
shapes (the training size, an odd size with batch 3, the smallest size allowed), and if the
largest absolute logit difference exceeds the tolerance the export fails and leaves no file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pixelseg.checkpoints import load_checkpoint, require_keys
from pixelseg.errors import CheckpointError, ExportError, InvalidInputError
from pixelseg.export.deps import import_deploy
from pixelseg.export.sidecar import (
    SIDECAR_FORMAT,
    file_sha256,
    package_version,
    sidecar_path,
    write_sidecar,
)
from pixelseg.inference import extract_logits, model_from_checkpoint
from pixelseg.models.base import scaled_length
from pixelseg.tasks import get_plugin

__all__ = [
    "DEFAULT_TOLERANCE",
    "INPUT_NAME",
    "OPSET",
    "OUTPUT_NAME",
    "ExportResult",
    "LogitsModule",
    "export_checkpoint",
    "export_module",
    "input_size_rules",
    "parity_shapes",
]

log = logging.getLogger(__name__)

#: ONNX opset of every export: 18 is the first with an antialiased ``Resize``.
OPSET = 18
#: Default limit on the largest absolute logit difference, onnxruntime against PyTorch (fp32).
#: Measured differences are 1e-6 to 5e-4 (docs/DEPLOYMENT.md); 1e-3 leaves a margin without
#: letting a wrong graph (differences of 1e-1 and more) through.
DEFAULT_TOLERANCE = 1e-3
INPUT_NAME, OUTPUT_NAME = "images", "logits"


class LogitsModule(nn.Module):
    """``images [B, C, H, W] -> logits [B, K, H, W]``: the model with its output reduced to
    the logits tensor (deep-supervision lists and dicts have one graph output)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return extract_logits(self.model(images))


@dataclass
class ExportResult:
    """What an export wrote and how it was checked (``max_abs_diff`` over ``shapes``)."""

    model_path: Path
    sidecar_path: Path
    max_abs_diff: float
    tolerance: float
    shapes: list[list[int]]
    seconds: float
    sidecar: dict[str, Any] = field(default_factory=dict)


def input_size_rules(model: nn.Module) -> dict[str, Any]:
    """The sizes the exported graph takes: ``{"min_height", "min_width", "size_multiple",
    "input_scale"}`` in pixels.

    The graph always reflect-pads the network's input to ``size_multiple``, which needs the
    padding to be smaller than the side (eager PyTorch switches to replicate padding for
    smaller inputs); every side of at least ``size_multiple // 2 + 1`` pixels at the
    network (after ``input_scale``) satisfies it.
    """
    multiple = int(getattr(model, "size_multiple", 1))
    scale = float(getattr(model, "input_scale", 1.0))
    network_min = multiple // 2 + 1
    smallest = 1
    while scaled_length(smallest, scale) < network_min:
        smallest += 1
    return {
        "min_height": smallest,
        "min_width": smallest,
        "size_multiple": multiple,
        "input_scale": scale,
    }


def _sample_size(rules: dict[str, Any], start: int) -> int:
    # A side whose network size is not a multiple: the padding branch is then captured as
    # a general pad (of possibly zero) rather than specialised away.
    multiple, scale = rules["size_multiple"], rules["input_scale"]
    side = max(start, rules["min_height"], 8)
    while multiple > 1 and scaled_length(side, scale) % multiple == 0:
        side += 1
    return side


def parity_shapes(rules: dict[str, Any], in_channels: int, trained: list[int] | None):
    """Input shapes of the parity check: the training size (batch 1), an odd size
    (batch 3, height != width) and the smallest size the graph takes (batch 1)."""
    multiple = rules["size_multiple"]
    height, width = (list(trained) if trained else [64, 64])[-2:]
    odd_h = _sample_size(rules, multiple + 5)
    odd_w = _sample_size(rules, 2 * multiple + 3)
    return [
        [1, in_channels, max(height, rules["min_height"]), max(width, rules["min_width"])],
        [3, in_channels, odd_h, odd_w],
        [1, in_channels, rules["min_height"], rules["min_width"]],
    ]


def export_module(
    module: nn.Module, path: Path, in_channels: int, rules: dict[str, Any], opset: int = OPSET
) -> None:
    """Write ``module`` (``images -> logits``) as an ONNX file with dynamic batch, height and
    width (weights inside the file, no external data)."""
    import_deploy("onnxscript")
    import_deploy("onnx")
    height = _sample_size(rules, rules["size_multiple"] + 1)
    width = _sample_size(rules, height + 1)
    # Batch 2 and height != width: sizes 0, 1 and repeated sizes would be specialised.
    sample = torch.randn(2, in_channels, height, width)
    dynamic = torch.export.Dim.DYNAMIC
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), torch.no_grad():
            torch.onnx.export(
                module,
                (sample,),
                str(path),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"images": {0: dynamic, 2: dynamic, 3: dynamic}},
                opset_version=opset,
                external_data=False,
                verbose=False,
            )
    except InvalidInputError:
        raise
    except Exception as error:
        first = next((line for line in str(error).splitlines() if line.strip()), "")
        raise ExportError(f"torch.onnx.export failed: {type(error).__name__}: {first}") from None
    finally:
        log.debug("torch.onnx.export said: %s", chatter.getvalue())


def _parity(module: nn.Module, session: Any, shapes: list[list[int]], seed: int = 0) -> list[float]:
    """Max absolute logit difference per shape, onnxruntime against ``module``."""
    generator = torch.Generator().manual_seed(seed)
    diffs = []
    for shape in shapes:
        images = torch.randn(*shape, generator=generator)
        with torch.no_grad():
            expected = module(images).float()
        got = torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0])
        if got.shape != expected.shape:
            raise ExportError(
                f"parity check: the ONNX model returned logits {list(got.shape)} for input "
                f"{shape}; PyTorch returned {list(expected.shape)}"
            )
        diffs.append(float((got - expected).abs().max()))
    return diffs


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int = OPSET,
) -> ExportResult:
    """Export ``checkpoint`` to ``out`` (``.onnx``) and its sidecar (``.json``), verified.

    Nothing is written unless the parity check passes: the graph goes to a temporary file
    beside ``out``, is compared with PyTorch, and only then renamed over ``out``. A failed
    check raises :class:`ExportError` with the difference, the tolerance and the shape.
    """
    from pixelseg.export.runtime import onnx_session

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
    plugin = get_plugin(str(payload["task"]))
    require_keys(payload, plugin.checkpoint_keys, checkpoint)
    if not plugin.export_keys:
        raise CheckpointError(
            f"{where} is a {payload['task']!r} model, which has no ONNX export yet"
        )
    model = model_from_checkpoint(payload, where=where)
    module = LogitsModule(model).eval()
    in_channels = int(payload["model_spec"]["in_channels"])
    rules = input_size_rules(model)
    shapes = parity_shapes(rules, in_channels, payload.get("input_size"))
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".onnx", dir=out.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        export_module(module, temporary, in_channels, rules, opset)
        diffs = _parity(module, onnx_session(temporary), shapes)
        worst = max(range(len(diffs)), key=lambda i: diffs[i])
        if not diffs[worst] <= tolerance:
            raise ExportError(
                f"export of {where} failed its parity check: max |logit difference| "
                f"{diffs[worst]:.3g} (onnxruntime vs PyTorch, input {shapes[worst]}) exceeds "
                f"the tolerance {tolerance:g}; nothing was written"
            )
        meta = sidecar_meta(payload, plugin.export_keys, rules, opset)
        meta["model_sha256"] = file_sha256(temporary)
        meta["parity"] = {
            "tolerance": tolerance,
            "max_abs_diff": max(diffs),
            "shapes": shapes,
            "max_abs_diff_per_shape": diffs,
        }
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    sidecar = write_sidecar(meta, sidecar_path(out))
    return ExportResult(
        out, sidecar, max(diffs), tolerance, shapes, time.perf_counter() - started, meta
    )


def sidecar_meta(
    payload: dict[str, Any], keys: tuple[str, ...], rules: dict[str, Any], opset: int
) -> dict[str, Any]:
    """The sidecar of a model exported from ``payload`` (without its file hash)."""
    meta: dict[str, Any] = {
        "format": SIDECAR_FORMAT[0],
        "format_version": SIDECAR_FORMAT[1],
        "task": payload["task"],
        "pixelseg_version": package_version(),
        "trained_with_pixelseg": payload.get("pixelseg_version"),
        "opset": opset,
        "precision": "fp32",
        "input": {
            "name": INPUT_NAME,
            "layout": "[B, C, H, W]",
            "dtype": "float32",
            "dynamic_axes": ["B", "H", "W"],
            "normalized": "(image / 255 - mean) / std, see normalization",
        },
        "output": {"name": OUTPUT_NAME, "layout": "[B, K, H, W]", "dtype": "float32"},
        "input_rules": rules,
    }
    meta.update({key: payload.get(key) for key in keys})
    return meta
