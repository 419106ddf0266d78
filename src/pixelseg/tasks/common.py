"""Small pieces several task plug-ins share: a checkpoint's model rebuilt and loaded, the
refusal of tiling for models that resize images themselves, RGB inputs for ``predict``, and
the list-of-targets batch of the detection-based tasks (instance, panoptic)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pixelseg.errors import CheckpointError, InvalidInputError

__all__ = [
    "detection_batch",
    "list_image_inputs",
    "load_checkpoint_model",
    "read_rgb_input",
    "refuse_tiling",
]

#: Target entries with one row per object: crowd filtering selects their rows.
PER_OBJECT_KEYS = ("boxes", "labels", "masks", "iscrowd", "area")


def load_checkpoint_model(
    create: Callable[[dict[str, Any]], nn.Module],
    payload: dict[str, Any],
    device: torch.device | str,
    where: str,
) -> nn.Module:
    """``create(payload["model_spec"])`` with the checkpoint's weights, in eval mode on
    ``device``; weights that do not fit are a :class:`CheckpointError` naming ``where``."""
    try:
        model = create(payload["model_spec"])
        model.load_state_dict(payload["model"])
    except (RuntimeError, KeyError, TypeError, ValueError, InvalidInputError) as error:
        raise CheckpointError(f"weights in {where} do not fit its model: {error}") from None
    return model.to(torch.device(device)).eval()


def refuse_tiling(window: Any, tta: bool, where: str, message: str) -> None:
    """Sliding windows and flip TTA merge logits; models that return detections or tile
    volumes themselves cannot take them: an error naming ``where`` and ``message``."""
    if window is not None or tta:
        raise InvalidInputError(f"{where} {message}")


def list_image_inputs(inputs: Sequence[str]) -> list[Path]:
    """The image files ``predict`` reads from files, folders or glob patterns."""
    from pixelseg.data import list_images

    return list_images(list(inputs))


def read_rgb_input(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """``(image uint8 [H, W, 3], {"images": [float [3, H, W] in 0..1], "name": [stem]})``:
    the batch of one that detectors (which resize and normalise inside) take."""
    from pixelseg.data import read_image
    from pixelseg.data.transforms import to_tensors

    image = read_image(path, in_channels=3)
    return image, {"images": [to_tensors(image)[0]], "name": [path.stem]}


def detection_batch(
    samples: list[dict[str, Any]], *, drop_crowds: bool, extra_keys: Sequence[str] = ()
) -> dict[str, Any]:
    """``{"images": [C, H, W] list, "targets": list of dicts, "name": list}``: detectors take
    lists, since image sizes and object counts differ.

    Each target holds the per-object entries (``boxes``, ``labels``, ``masks``, ``iscrowd``,
    ``area``), ``image_id`` and ``extra_keys`` when the sample has them. ``drop_crowds``
    removes crowd objects from the per-object entries (training: a crowd region is not an
    object to learn); evaluation keeps them, because COCO AP and PQ ignore what falls on them.
    """
    keys = (*PER_OBJECT_KEYS, "image_id", *extra_keys)
    targets = []
    for sample in samples:
        target = {key: sample[key] for key in keys if key in sample}
        crowd = target.get("iscrowd")
        if drop_crowds and crowd is not None and bool(crowd.any()):
            keep = crowd == 0
            target.update({k: target[k][keep] for k in PER_OBJECT_KEYS if k in target})
        targets.append(target)
    return {
        "images": [s["image"] for s in samples],
        "targets": targets,
        "name": [str(s.get("name", i)) for i, s in enumerate(samples)],
    }
