"""An exported detector in onnxruntime, behind torchvision's evaluation contract.

The instance task calls its predictor with a list of images and reads a list of dicts, as
from a torchvision detector in eval mode; :class:`OnnxDetectionPredictor` gives it that
from a graph that takes one image per run (see :mod:`pixelseg.export.onnx_detection`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pixelseg.errors import InvalidInputError

__all__ = ["OnnxDetectionPredictor"]


class OnnxDetectionPredictor:
    """``list of images [3, H, W] float in 0..1 -> list of detections``: per image a dict of
    ``boxes [D, 4]`` float32 ``(x1, y1, x2, y2)`` pixels, ``labels [D]`` int64 in 1..K,
    ``scores [D]`` float32 best first and ``masks [D, 1, H, W]`` float32 probabilities,
    at the image's own size. Images may live on any device; detections come back on the
    CPU (the session runs there)."""

    def __init__(self, session: Any, input_name: str, output_names: Sequence[str]) -> None:
        self.session = session
        self.input_name = input_name
        self.output_names = list(output_names)

    @classmethod
    def from_sidecar(cls, session: Any, sidecar: dict[str, Any]) -> OnnxDetectionPredictor:
        """The predictor of an exported detector, its graph's names read from the sidecar."""
        return cls(session, sidecar["input"]["name"], sidecar["output"]["names"])

    def detect(self, image: Tensor) -> dict[str, Tensor]:
        """One image's detections."""
        if image.ndim != 3 or image.shape[0] != 3:
            raise InvalidInputError(
                f"the ONNX detector takes RGB images [3, H, W], got {list(image.shape)}"
            )
        array = np.ascontiguousarray(image.detach().to("cpu", torch.float32).numpy())
        outputs = self.session.run(self.output_names, {self.input_name: array})
        return {
            name: torch.from_numpy(value)
            for name, value in zip(self.output_names, outputs, strict=True)
        }

    def __call__(self, images: Sequence[Tensor]) -> list[dict[str, Tensor]]:
        return [self.detect(image) for image in images]
