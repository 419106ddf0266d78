"""Volumetric (3D) segmentation models: one factory, ``create_volumetric(name, ...)``.

Kept apart from :func:`pixelseg.models.create` because the contract differs: volumes
``[B, C, D, H, W]`` (the model order ``[C, k, j, i]`` of a Volume's ``[i, j, k]`` array)
in, logits ``[B, K, D, H, W]`` out, and no ``input_scale`` or encoder. A model's options
are its constructor's keyword arguments::

    model = create_volumetric("unet3d", num_classes=3, depth=5, norm="instance")
    logits = model(volumes)  # [B, 1, D, H, W] -> [B, 3, D, H, W], any D x H x W
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from pixelseg.errors import InvalidInputError, closest_match, unknown_choice
from pixelseg.models.unet3d import UNet3D

__all__ = [
    "VOLUMETRIC_MODEL_NAMES",
    "available_volumetric",
    "create_volumetric",
    "volumetric_options",
]

# name -> builder; the first line of the builder's docstring is its description.
_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "unet3d": UNet3D,
}

#: Every name :func:`create_volumetric` accepts.
VOLUMETRIC_MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)

_POSITIONAL = ("num_classes", "in_channels")


def available_volumetric() -> dict[str, str]:
    """Volumetric model name -> one-line description."""
    return {
        name: (inspect.getdoc(builder) or name).splitlines()[0]
        for name, builder in _BUILDERS.items()
    }


def _builder(name: object) -> Callable[..., nn.Module]:
    if not isinstance(name, str) or name not in _BUILDERS:
        raise unknown_choice("volumetric model", str(name), _BUILDERS)
    return _BUILDERS[name]


def volumetric_options(name: str) -> list[str]:
    """The keyword options model ``name`` takes besides ``num_classes`` and ``in_channels``."""
    params = inspect.signature(_builder(name)).parameters.values()
    return [
        p.name
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in _POSITIONAL
    ]


def create_volumetric(
    name: str, num_classes: int, in_channels: int = 1, **options: object
) -> nn.Module:
    """Build volumetric model ``name`` predicting ``num_classes`` from ``in_channels``-channel
    volumes; ``options`` are its keyword arguments (:func:`volumetric_options`). Unknown names
    or options raise InvalidInputError naming them, the closest valid one and all valid ones."""
    builder = _builder(name)
    valid = volumetric_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        hints = []
        for key in unknown:
            match = closest_match(key, valid)
            hints.append(f"{key!r} (did you mean {match!r}?)" if match else repr(key))
        raise InvalidInputError(
            f"unknown option(s) for volumetric model {name!r}: {', '.join(hints)}. "
            f"Valid options: {', '.join(valid) or '(none)'}"
        )
    return builder(num_classes=num_classes, in_channels=in_channels, **options)
