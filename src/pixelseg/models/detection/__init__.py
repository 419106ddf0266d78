"""Instance segmentation models: one factory, ``create_detector(name, num_classes, **options)``.

Every detector follows torchvision's detection contract, so the instance task, the
evaluator and ``predict`` treat them alike:

- ``num_classes`` is the number of object classes K; labels are ``1..K`` and 0 is the
  background (the builder adds the background class where a head needs it).
- Inputs are a list of float images ``[3, H, W]`` in 0..1, any sizes; the model resizes
  and normalises them itself and maps its outputs back to each input's size.
- Training mode: ``model(images, targets) -> dict[str, Tensor]`` of loss terms, where each
  target holds ``boxes`` float ``[N, 4]`` ``(x1, y1, x2, y2)`` pixels, ``labels`` int64
  ``[N]`` and ``masks`` uint8 ``[N, H, W]``. The task sums the terms.
- Evaluation mode: ``model(images) -> list[dict]`` with ``boxes [D, 4]``, ``labels [D]``,
  ``scores [D]`` (best first) and ``masks`` float ``[D, 1, H, W]`` probabilities.

A builder's options are its keyword arguments, nothing hidden; an unknown option is an
error naming the closest valid one. Builders are imported on first use, so a detector's
module loads only when it is asked for.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from pixelseg.errors import InvalidInputError, closest_match, unknown_choice

__all__ = ["DETECTOR_NAMES", "available_detectors", "create_detector", "detector_options"]

# name -> (module, builder function); the first line of the builder's docstring describes it.
_BUILDERS: dict[str, tuple[str, str]] = {
    "maskrcnn": ("pixelseg.models.detection.maskrcnn", "build_maskrcnn"),
    "yolact": ("pixelseg.models.detection.yolact", "build_yolact"),
}


#: The detector names, without importing their modules.
DETECTOR_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def _builder(name: str) -> Callable[..., nn.Module]:
    if name not in _BUILDERS:
        raise unknown_choice("instance model", name, _BUILDERS)
    module, function = _BUILDERS[name]
    return getattr(importlib.import_module(module), function)


def available_detectors() -> dict[str, str]:
    """Detector name -> one-line description."""
    return {name: (inspect.getdoc(_builder(name)) or name).splitlines()[0] for name in _BUILDERS}


def detector_options(name: str) -> list[str]:
    """The keyword options of detector ``name`` (besides ``num_classes``)."""
    params = inspect.signature(_builder(name)).parameters.values()
    return [
        p.name
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "num_classes"
    ]


def create_detector(name: str, num_classes: int, **options: Any) -> nn.Module:
    """Build detector ``name`` for ``num_classes`` object classes (background excluded)."""
    builder = _builder(name)
    if int(num_classes) < 1:
        raise InvalidInputError(f"an instance model needs at least 1 class, got {num_classes}")
    valid = detector_options(name)
    for key in options:
        if key not in valid:
            hint = closest_match(key, valid)
            shown = f"{key!r} (did you mean {hint!r}?)" if hint else repr(key)
            raise InvalidInputError(
                f"unknown option {shown} for instance model {name!r} (options: {', '.join(valid)})"
            )
    return builder(num_classes=int(num_classes), **options)
