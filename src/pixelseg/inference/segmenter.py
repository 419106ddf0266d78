"""A trained model ready to segment images, rebuilt from nothing but its checkpoint.

The checkpoint carries the model spec, class names, colours, normalisation and training
input size. Images are segmented whole, as the trainer's validation scores them, unless a
``window`` is given: then images larger than it are tiled with a Gaussian-blended sliding
window (for images too large for memory). Flip test-time augmentation is optional.
``predict`` and ``eval`` both go through this one class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pixelseg import models
from pixelseg.checkpoints import load_checkpoint
from pixelseg.errors import CheckpointError, InvalidInputError
from pixelseg.inference.masks_io import default_palette
from pixelseg.inference.predictor import as_predictor
from pixelseg.inference.sliding_window import sliding_window_predict
from pixelseg.inference.tta import flip_tta
from pixelseg.tasks.semantic import labels_from_logits

__all__ = ["Segmenter"]


@dataclass
class Segmenter:
    """``model`` plus the metadata needed to turn images into label maps."""

    model: nn.Module
    classes: list[str]
    colors: list[tuple[int, int, int]]
    mean: list[float]
    std: list[float]
    in_channels: int
    input_size: tuple[int, int] | None = None
    ignore_index: int | None = None
    window: tuple[int, int] | None = None
    overlap: float = 0.25
    tta: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    task: str = "semantic"

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        device: str | torch.device = "cpu",
        window: tuple[int, int] | None = None,
        overlap: float = 0.25,
        tta: bool = False,
    ) -> Segmenter:
        """Rebuild the model from ``path``; ``window`` (None: whole images) tiles larger ones."""
        payload = load_checkpoint(path, map_location="cpu")
        spec = payload["model_spec"]
        model = models.create(
            spec["name"],
            spec["num_classes"],
            in_channels=spec["in_channels"],
            encoder=spec["encoder"],
            **spec["options"],
        )
        try:
            model.load_state_dict(payload["model"])
        except RuntimeError as error:
            raise CheckpointError(
                f"weights in {str(path)!r} do not fit its model: {error}"
            ) from None
        device = torch.device(device)
        model.to(device).eval()
        classes = list(payload["classes"])
        input_size = tuple(payload["input_size"]) if payload.get("input_size") else None
        return cls(
            model=model,
            classes=classes,
            colors=[tuple(c) for c in (payload.get("colors") or default_palette(len(classes)))],
            mean=list(payload["normalization"]["mean"]),
            std=list(payload["normalization"]["std"]),
            in_channels=int(payload["in_channels"]),
            input_size=input_size,  # type: ignore[arg-type]
            ignore_index=payload.get("ignore_index"),
            window=tuple(window) if window else None,  # type: ignore[arg-type]
            overlap=overlap,
            tta=tta,
            device=device,
            task=str(payload["task"]),
        )

    def normalize(self, image: np.ndarray) -> Tensor:
        """``H x W x C`` uint8 -> normalised ``[1, C, H, W]`` float32 on the device."""
        if image.ndim == 2:
            image = image[:, :, None]
        if image.shape[2] != self.in_channels:
            raise InvalidInputError(
                f"image has {image.shape[2]} channels but the model expects {self.in_channels}"
            )
        tensor = torch.from_numpy(np.array(image, dtype=np.float32)).to(self.device) / 255.0
        mean = torch.tensor(self.mean, device=self.device)
        std = torch.tensor(self.std, device=self.device)
        tensor = (tensor - mean) / std
        return tensor.permute(2, 0, 1).unsqueeze(0).contiguous()

    @torch.inference_mode()
    def logits(self, images: Tensor) -> Tensor:
        """Normalised ``[B, C, H, W]`` -> logits ``[B, K, H, W]``; tiled only when a window is
        set and the image is larger than it."""
        predictor: Any = as_predictor(self.model, device=self.device)
        if self.tta:
            predictor = flip_tta(predictor, dims=("w",), average="logits")
        height, width = images.shape[-2:]
        if self.window and (height > self.window[0] or width > self.window[1]):
            return sliding_window_predict(
                predictor, images, window=self.window, overlap=self.overlap
            )
        return predictor(images)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """``H x W x C`` uint8 image -> ``H x W`` uint8/int label map."""
        labels = labels_from_logits(self.logits(self.normalize(image)))[0]
        dtype = np.uint8 if len(self.classes) <= 256 else np.int32
        return labels.cpu().numpy().astype(dtype)
