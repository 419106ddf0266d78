"""A model (or any ``Tensor -> logits`` callable) made ready for eval and predict.

``eval`` and ``predict`` only ever call a predictor; tiling and flip test-time augmentation
wrap any predictor, so they work the same over a torch module today and an exported model
(an onnxruntime session wrapped as a callable) later. Images are segmented whole unless a
``window`` is given: then images larger than it are tiled with a Gaussian-blended sliding
window (for images too large for memory).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from pixelseg import models
from pixelseg.errors import CheckpointError
from pixelseg.inference.predictor import as_predictor
from pixelseg.inference.sliding_window import Predictor, sliding_window_predict
from pixelseg.inference.tta import flip_tta

__all__ = ["compose_predictor", "model_from_checkpoint"]


def model_from_checkpoint(
    payload: dict[str, Any], *, device: torch.device | str = "cpu", where: str = "checkpoint"
) -> nn.Module:
    """Rebuild the model a checkpoint's ``model_spec`` describes and load its weights."""
    spec = payload["model_spec"]
    try:
        model = models.create(
            spec["name"],
            spec["num_classes"],
            in_channels=spec["in_channels"],
            encoder=spec["encoder"],
            **spec["options"],
        )
        model.load_state_dict(payload["model"])
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"weights in {where} do not fit its model: {error}") from None
    return model.to(torch.device(device)).eval()


def compose_predictor(
    model: nn.Module | Callable[[Tensor], Tensor],
    *,
    device: torch.device | str | None = None,
    window: Sequence[int] | None = None,
    overlap: float = 0.25,
    tta: bool = False,
) -> Predictor:
    """``images [B, C, *spatial] -> float32 logits [B, K, *spatial]``.

    A module is wrapped by :func:`as_predictor` (eval mode, inputs moved to ``device``); any
    other callable is used as it is. ``tta`` averages the logits with a horizontal flip;
    ``window`` tiles inputs larger than it in any dimension (one size per spatial dim).
    """
    predictor: Predictor = (
        as_predictor(model, device=device) if isinstance(model, nn.Module) else model
    )
    if tta:
        predictor = flip_tta(predictor, dims=("w",), average="logits")
    if not window:
        return predictor
    tile = tuple(int(v) for v in window)
    whole = predictor

    def tiled(images: Tensor) -> Tensor:
        spatial = images.shape[2:]
        if len(spatial) != len(tile):
            raise ValueError(
                f"window {tile} has {len(tile)} sizes but the input has {len(spatial)} "
                "spatial dimensions"
            )
        if all(s <= t for s, t in zip(spatial, tile, strict=True)):
            return whole(images)
        return sliding_window_predict(whole, images, window=tile, overlap=overlap)

    return tiled
