"""Running an exported model: an onnxruntime session wrapped as the predictor its task
calls, chosen by the sidecar's task.

:class:`OnnxPredictor` is a plain ``inputs [B, C, *spatial] -> logits [B, K, *spatial]``
callable (torch in, NumPy through the session, torch out) for images and volumes alike, so
:func:`pixelseg.inference.compose_predictor` adds flip TTA and the sliding window to a
semantic model exactly as it does to a torch module, and the volumetric task tiles volumes
around it with its own window. Detectors run through
:class:`~pixelseg.export.runtime_detection.OnnxDetectionPredictor`. The task that reads
inputs and writes predictions is rebuilt from the sidecar by the task's own plug-in.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pixelseg.errors import CheckpointError, InvalidInputError
from pixelseg.export.deps import import_deploy
from pixelseg.export.sidecar import read_sidecar
from pixelseg.inference import Predictor, compose_predictor
from pixelseg.tasks import Task, get_plugin
from pixelseg.tasks.common import refuse_tiling

__all__ = ["ONNX_PREDICTORS", "OnnxPredictor", "load_onnx_model", "onnx_session"]


def onnx_session(path: str | Path, threads: int | None = None, *, spinning: bool = True) -> Any:
    """An onnxruntime CPU session for ``path``; ``threads`` sets its intra-op threads
    (None: onnxruntime's default, one per physical core).

    ``spinning=False`` stops idle pool threads from busy-waiting after a run: by default
    they spin for a while, which is faster for back-to-back runs of one session but takes
    the cores from whatever runs next (another session, PyTorch), so timings that
    alternate backends turn it off.
    """
    ort = import_deploy("onnxruntime")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own types for a bad file
        first = next((line for line in str(error).splitlines() if line.strip()), "")
        raise CheckpointError(
            f"{str(path)!r} is not a readable ONNX model ({type(error).__name__}: {first})"
        ) from None


def _size_rules(rules: dict[str, Any]) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """``(smallest side per spatial axis, size multiple per axis or None)`` from a sidecar's
    ``input_rules``: ``min_size`` (volumes) or ``min_height``/``min_width`` (images); the
    multiples only where some axis must exceed its multiple (instance-norm volumes)."""
    if "min_size" in rules:
        minimum = tuple(int(v) for v in rules["min_size"])
    else:
        minimum = (int(rules.get("min_height", 1)), int(rules.get("min_width", 1)))
    above = None
    if rules.get("one_axis_above_multiple"):
        above = tuple(int(v) for v in rules["size_multiple"])
    return minimum, above


class OnnxPredictor:
    """``inputs [B, C, *spatial] float -> float32 logits [B, K, *spatial]`` through
    onnxruntime: images ``[B, C, H, W]`` or volumes ``[B, C, D, H, W]``, as the sidecar's
    input rules say.

    Inputs may live on any device; the logits come back on the CPU (the session runs there).
    Sides below the sidecar's minimum are refused with the reason: the graph reflect-pads to
    the model's size multiple, which such small inputs cannot take.
    """

    def __init__(self, session: Any, sidecar: dict[str, Any]) -> None:
        self.session = session
        self.input_name = sidecar["input"]["name"]
        self.output_name = sidecar["output"]["name"]
        self.in_channels = int(sidecar["in_channels"])
        self.min_size, self.above_multiple = _size_rules(sidecar.get("input_rules") or {})
        self.layout = "[B, {}, {}]".format(
            self.in_channels, "D, H, W" if len(self.min_size) == 3 else "H, W"
        )

    def _check(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 2 + len(self.min_size) or shape[1] != self.in_channels:
            raise InvalidInputError(f"the ONNX model takes {self.layout} inputs, got {list(shape)}")
        spatial = shape[2:]
        unit = "voxels" if len(spatial) == 3 else "pixels"
        size, minimum = "x".join(map(str, spatial)), "x".join(map(str, self.min_size))
        if any(s < m for s, m in zip(spatial, self.min_size, strict=True)):
            raise InvalidInputError(
                f"input of {size} {unit} is below the ONNX model's minimum {minimum} (sidecar "
                f"input_rules); use the .pt checkpoint for inputs that small"
            )
        multiple = self.above_multiple
        if multiple and all(s <= m for s, m in zip(spatial, multiple, strict=True)):
            raise InvalidInputError(
                f"input of {size} {unit} is too small for the ONNX model: some axis must "
                f"exceed its size multiple {'x'.join(map(str, multiple))} (instance norm "
                "needs more than one voxel at the deepest level; sidecar input_rules)"
            )

    def __call__(self, inputs: Tensor) -> Tensor:
        self._check(tuple(inputs.shape))
        array = np.ascontiguousarray(inputs.detach().to("cpu", torch.float32).numpy())
        logits = self.session.run([self.output_name], {self.input_name: array})[0]
        return torch.from_numpy(logits)


def _semantic_predictor(session, sidecar, *, window, overlap, tta, where) -> Predictor:
    return compose_predictor(
        OnnxPredictor(session, sidecar), window=window, overlap=overlap, tta=tta
    )


def _volumetric_predictor(session, sidecar, *, window, overlap, tta, where) -> Predictor:
    refuse_tiling(
        window,
        tta,
        where,
        "is a volumetric model: it always predicts window by window, with the window, "
        "overlap and flip TTA its sidecar's inference settings name (set volumetric.tta / "
        "eval.window in the config before training to change them)",
    )
    return OnnxPredictor(session, sidecar)


def _instance_predictor(session, sidecar, *, window, overlap, tta, where) -> Any:
    from pixelseg.export.runtime_detection import OnnxDetectionPredictor

    refuse_tiling(
        window,
        tta,
        where,
        "is an instance model: sliding windows (window) and flip TTA (tta) apply to semantic "
        "models only; detectors resize each image themselves",
    )
    return OnnxDetectionPredictor.from_sidecar(session, sidecar)


#: Task name -> ``(session, sidecar, *, window, overlap, tta, where) -> predictor``: the
#: callable the task's ``forward_eval`` takes, around an exported model's session.
ONNX_PREDICTORS: dict[str, Callable[..., Any]] = {
    "semantic": _semantic_predictor,
    "volumetric": _volumetric_predictor,
    "instance": _instance_predictor,
}


def load_onnx_model(
    path: str | Path,
    *,
    window: tuple[int, ...] | None = None,
    overlap: float = 0.25,
    tta: bool = False,
    threads: int | None = None,
) -> tuple[dict[str, Any], Task, Any]:
    """``(sidecar, task, predictor)`` for an exported model and the sidecar beside it.

    The task comes from the sidecar through its plug-in's ``task_from_checkpoint`` (the
    sidecar holds the same metadata keys as the checkpoint); the predictor is the task's
    entry in :data:`ONNX_PREDICTORS` (semantic models: flip TTA and the sliding window
    around :class:`OnnxPredictor`).
    """
    sidecar = read_sidecar(path)
    name = str(sidecar["task"])
    plugin = get_plugin(name)
    if name not in ONNX_PREDICTORS:
        raise CheckpointError(
            f"ONNX model {str(path)!r} is a {name!r} model, which pixelseg cannot run in "
            f"onnxruntime; runnable tasks: {', '.join(ONNX_PREDICTORS)}"
        )
    task = plugin.task_from_checkpoint(sidecar, None)
    predictor = ONNX_PREDICTORS[name](
        onnx_session(path, threads),
        sidecar,
        window=window,
        overlap=overlap,
        tta=tta,
        where=f"ONNX model {str(path)!r}",
    )
    return sidecar, task, predictor
