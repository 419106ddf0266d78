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

Panoptic models have their own factory, ``create_panoptic_model(name, num_things,
num_stuff, **options)``: the instance contract above plus a ``semantic`` target
(int64 ``[H, W]``: 0 things, ``1..num_stuff`` stuff, 255 void) in training and
``semantic`` float32 logits ``[num_stuff + 1, H, W]`` in each prediction. They are not
instance detectors (``DETECTOR_NAMES`` leaves them out).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from pixelseg.errors import InvalidInputError, closest_match, unknown_choice

__all__ = [
    "DETECTOR_NAMES",
    "PANOPTIC_MODEL_NAMES",
    "available_detectors",
    "available_panoptic_models",
    "create_detector",
    "create_panoptic_model",
    "detector_options",
    "panoptic_model_options",
]

# name -> (module, builder function); the first line of the builder's docstring describes it.
_BUILDERS: dict[str, tuple[str, str]] = {
    "maskrcnn": ("pixelseg.models.detection.maskrcnn", "build_maskrcnn"),
    "yolact": ("pixelseg.models.detection.yolact", "build_yolact"),
}


#: The detector names, without importing their modules.
DETECTOR_NAMES: tuple[str, ...] = tuple(_BUILDERS)

_PANOPTIC_BUILDERS: dict[str, tuple[str, str]] = {
    "panoptic_fpn": ("pixelseg.models.detection.panoptic_fpn", "build_panoptic_fpn"),
}

#: The panoptic model names, without importing their modules.
PANOPTIC_MODEL_NAMES: tuple[str, ...] = tuple(_PANOPTIC_BUILDERS)


def _builder(name: str) -> Callable[..., nn.Module]:
    if name not in _BUILDERS:
        raise unknown_choice("instance model", name, _BUILDERS)
    module, function = _BUILDERS[name]
    return getattr(importlib.import_module(module), function)


def _panoptic_builder(name: str) -> Callable[..., nn.Module]:
    if name not in _PANOPTIC_BUILDERS:
        raise unknown_choice("panoptic model", name, _PANOPTIC_BUILDERS)
    module, function = _PANOPTIC_BUILDERS[name]
    return getattr(importlib.import_module(module), function)


def _keyword_options(builder: Callable[..., nn.Module], positional: tuple[str, ...]) -> list[str]:
    params = inspect.signature(builder).parameters.values()
    return [
        p.name
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in positional
    ]


def _check_options(kind: str, name: str, options: dict[str, Any], valid: list[str]) -> None:
    for key in options:
        if key not in valid:
            hint = closest_match(key, valid)
            shown = f"{key!r} (did you mean {hint!r}?)" if hint else repr(key)
            raise InvalidInputError(
                f"unknown option {shown} for {kind} {name!r} (options: {', '.join(valid)})"
            )


def available_detectors() -> dict[str, str]:
    """Detector name -> one-line description."""
    return {name: (inspect.getdoc(_builder(name)) or name).splitlines()[0] for name in _BUILDERS}


def detector_options(name: str) -> list[str]:
    """The keyword options of detector ``name`` (besides ``num_classes``)."""
    return _keyword_options(_builder(name), ("num_classes",))


def create_detector(name: str, num_classes: int, **options: Any) -> nn.Module:
    """Build detector ``name`` for ``num_classes`` object classes (background excluded)."""
    builder = _builder(name)
    if int(num_classes) < 1:
        raise InvalidInputError(f"an instance model needs at least 1 class, got {num_classes}")
    _check_options("instance model", name, options, detector_options(name))
    return builder(num_classes=int(num_classes), **options)


def available_panoptic_models() -> dict[str, str]:
    """Panoptic model name -> one-line description."""
    return {
        name: (inspect.getdoc(_panoptic_builder(name)) or name).splitlines()[0]
        for name in _PANOPTIC_BUILDERS
    }


def panoptic_model_options(name: str) -> list[str]:
    """The keyword options of panoptic model ``name`` (besides ``num_things``, ``num_stuff``)."""
    return _keyword_options(_panoptic_builder(name), ("num_things", "num_stuff"))


def create_panoptic_model(name: str, num_things: int, num_stuff: int, **options: Any) -> nn.Module:
    """Build panoptic model ``name`` for ``num_things`` instance and ``num_stuff`` stuff classes.

    The builder checks both counts (>= 1) and every option's value.
    """
    builder = _panoptic_builder(name)
    _check_options("panoptic model", name, options, panoptic_model_options(name))
    return builder(num_things=num_things, num_stuff=num_stuff, **options)
