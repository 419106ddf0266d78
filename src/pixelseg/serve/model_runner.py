"""The model behind the service: ``normalised images [B, C, H, W] -> class indices [B, H, W]``.

A ``.pt`` checkpoint is rebuilt through its task plug-in and run in PyTorch; an ``.onnx``
export through :func:`pixelseg.export.runtime.load_onnx_model` in onnxruntime (CPU). This is
what :mod:`pixelseg.workflows` does for ``pixelseg predict``, repeated here (a few lines)
because workflows imports the training engine, which a service must not load. Images are
read and normalised exactly as the task's ``read_input`` does, and the labels come from the
task's ``forward_eval`` and ``predict``, so a served mask equals ``predict``'s
``<name>_mask.png``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pixelseg.checkpoints import load_checkpoint, require_keys
from pixelseg.errors import InvalidInputError
from pixelseg.inference import Predictor, default_palette
from pixelseg.serve.settings import ServeSettings
from pixelseg.tasks import SemanticTask, get_plugin

__all__ = ["ModelRunner", "load_runner", "serving_device"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRunner:
    """A loaded semantic model and what the service tells clients about it.

    ``min_size`` is the smallest ``(height, width)`` the model takes (an ONNX graph's
    sidecar ``input_rules``; 1 x 1 for PyTorch).
    """

    task: SemanticTask
    predictor: Predictor
    device: torch.device
    backend: str  # "torch" or "onnxruntime"
    model_name: str
    input_rules: dict[str, Any] | None = None

    @property
    def min_size(self) -> tuple[int, int]:
        rules = self.input_rules or {}
        return int(rules.get("min_height", 1)), int(rules.get("min_width", 1))

    @property
    def colors(self) -> list[tuple[int, int, int]]:
        """The class colours of masks and overlays: the model's, else the default palette."""
        return [tuple(c) for c in (self.task.colors or default_palette(self.task.num_classes))]

    def prepare(self, image: np.ndarray) -> Tensor:
        """``uint8 [H, W, C]`` (as :func:`pixelseg.data.read_image` returns it for the model's
        channels) -> normalised float32 ``[C, H, W]``, as the task's ``read_input`` makes it."""
        from pixelseg.data.transforms import normalize_image

        if image.ndim == 2:
            image = image[:, :, None]
        if image.shape[2] != self.task.in_channels:
            raise InvalidInputError(
                f"the image has {image.shape[2]} channels but the model expects "
                f"{self.task.in_channels}"
            )
        return normalize_image(image, self.task.mean, self.task.std)

    def run(self, images: Tensor) -> np.ndarray:
        """One forward pass: ``images [B, C, H, W]`` (one size) -> labels ``int64 [B, H, W]``."""
        with torch.inference_mode():
            output = self.task.forward_eval(self.predictor, {"image": images.to(self.device)})
            labels = self.task.predict(output)
        return labels.cpu().numpy().astype(np.int64, copy=False)


def serving_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``, ``cuda`` or ``cuda:N`` checked.

    Not :func:`pixelseg.engine.device.resolve_device`: the service does not import the
    training engine.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InvalidInputError(
            f"--device {name!r} is not a device; use auto, cpu or cuda"
        ) from None
    if device.type not in ("cpu", "cuda"):
        raise InvalidInputError(f"--device {name!r}: the service runs on auto, cpu or cuda")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInputError(f"--device {name!r}: no CUDA device is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InvalidInputError(
                f"--device {name!r}: there are {torch.cuda.device_count()} CUDA devices"
            )
    return device


def load_runner(settings: ServeSettings) -> ModelRunner:
    """Load ``settings.model`` (``.pt`` or ``.onnx`` with its sidecar); refuse non-semantic
    models, naming their task."""
    path = Path(settings.model)
    window = tuple(settings.window) if settings.window else None
    if path.suffix.lower() == ".onnx":
        from pixelseg.export.runtime import load_onnx_model

        if settings.device not in ("auto", "cpu"):
            raise InvalidInputError(
                f"--device {settings.device!r}: an .onnx model runs in onnxruntime on the CPU; "
                "leave --device out, or serve the .pt checkpoint on that device"
            )
        sidecar, task, predictor = load_onnx_model(
            path,
            window=window,
            overlap=settings.overlap,
            tta=settings.tta,
            threads=settings.threads,
        )
        _require_semantic(task, path)
        runner = ModelRunner(
            task, predictor, torch.device("cpu"), "onnxruntime", path.name,
            sidecar.get("input_rules"),
        )  # fmt: skip
    else:
        device = serving_device(settings.device)
        payload = load_checkpoint(path)
        plugin = get_plugin(str(payload["task"]))
        require_keys(payload, plugin.checkpoint_keys, path)
        task = plugin.task_from_checkpoint(payload, None)
        _require_semantic(task, path)
        if settings.threads:
            # The service owns its process, so the setting it was given is the process's.
            torch.set_num_threads(settings.threads)
        predictor = plugin.predictor_from_checkpoint(
            payload, device=device, window=window, overlap=settings.overlap, tta=settings.tta,
            where=f"checkpoint {str(path)!r}",
        )  # fmt: skip
        runner = ModelRunner(task, predictor, device, "torch", path.name)
    log.info(
        "serving %s (%s on %s): %d classes", path, runner.backend, runner.device,
        task.num_classes,
    )  # fmt: skip
    return runner


def _require_semantic(task: Any, path: Path) -> None:
    if not isinstance(task, SemanticTask):
        raise InvalidInputError(
            f"pixelseg serve runs semantic segmentation models; {str(path)!r} is a "
            f"{task.name!r} model (segment its inputs with pixelseg predict)"
        )
