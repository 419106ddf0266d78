"""Running an exported model: an onnxruntime session wrapped as a predictor.

:class:`OnnxPredictor` is a plain ``images [B, C, H, W] -> logits [B, K, H, W]`` callable
(torch in, NumPy through the session, torch out), so
:func:`pixelseg.inference.compose_predictor` adds flip TTA and the sliding window to it
exactly as it does to a torch module, and the task that reads inputs and writes predictions
is rebuilt from the sidecar by the task's own plug-in.
"""

from __future__ import annotations

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

__all__ = ["OnnxPredictor", "load_onnx_model", "onnx_session"]


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


class OnnxPredictor:
    """``images [B, C, H, W] float -> float32 logits [B, K, H, W]`` through onnxruntime.

    Inputs may live on any device; the logits come back on the CPU (the session runs there).
    Sides below the sidecar's ``min_height`` x ``min_width`` are refused with the reason:
    the graph reflect-pads to the model's size multiple, which such small inputs cannot take.
    """

    def __init__(self, session: Any, sidecar: dict[str, Any]) -> None:
        self.session = session
        self.input_name = sidecar["input"]["name"]
        self.output_name = sidecar["output"]["name"]
        self.in_channels = int(sidecar["in_channels"])
        rules = sidecar.get("input_rules") or {}
        self.min_size = (int(rules.get("min_height", 1)), int(rules.get("min_width", 1)))

    def __call__(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise InvalidInputError(
                f"the ONNX model takes [B, {self.in_channels}, H, W] images, got "
                f"{list(images.shape)}"
            )
        height, width = images.shape[-2:]
        if height < self.min_size[0] or width < self.min_size[1]:
            raise InvalidInputError(
                f"input of {height}x{width} pixels is below the ONNX model's minimum "
                f"{self.min_size[0]}x{self.min_size[1]} (sidecar input_rules); use the .pt "
                "checkpoint for images that small"
            )
        array = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
        logits = self.session.run([self.output_name], {self.input_name: array})[0]
        return torch.from_numpy(logits)


def load_onnx_model(
    path: str | Path,
    *,
    window: tuple[int, ...] | None = None,
    overlap: float = 0.25,
    tta: bool = False,
    threads: int | None = None,
) -> tuple[dict[str, Any], Task, Predictor]:
    """``(sidecar, task, predictor)`` for an exported model and the sidecar beside it.

    The task comes from the sidecar through its plug-in's ``task_from_checkpoint`` (the
    sidecar holds the same metadata keys as the checkpoint); the predictor adds flip TTA and
    the sliding window around :class:`OnnxPredictor`.
    """
    sidecar = read_sidecar(path)
    plugin = get_plugin(str(sidecar["task"]))
    task = plugin.task_from_checkpoint(sidecar, None)
    predictor = compose_predictor(
        OnnxPredictor(onnx_session(path, threads), sidecar),
        window=window,
        overlap=overlap,
        tta=tta,
    )
    return sidecar, task, predictor
