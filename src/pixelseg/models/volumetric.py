"""Volumetric (3D) segmentation models: one factory, ``create_volumetric(name, ...)``.

Kept apart from :func:`pixelseg.models.create` because the contract differs: volumes
``[B, C, D, H, W]`` (the model order ``[C, k, j, i]`` of a Volume's ``[i, j, k]`` array)
in, logits ``[B, K, D, H, W]`` out. Two kinds of model meet that contract:

- 3D models (``unet3d``), whose options are their constructor's keyword arguments, with no
  encoder and no ``input_scale``;
- every 2D model of :func:`pixelseg.models.create` (``unet``, ``deeplabv3plus``, ...), run
  on the axial slices (the ``[H, W]`` planes, one per ``D``) by
  :class:`~pixelseg.models.slicewise.SliceWise`, with its encoder and options as in 2D plus
  ``context_slices`` (2.5D: neighbouring slices as extra input channels)::

    model = create_volumetric("unet3d", num_classes=3, depth=5, norm="instance")
    logits = model(volumes)  # [B, 1, D, H, W] -> [B, 3, D, H, W], any D x H x W
    model = create_volumetric("unet", 3, encoder="resnet18", context_slices=1)
    logits = model(volumes)  # the same contract, slice by slice (each with its 2 neighbours)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from pixelseg.errors import InvalidInputError, closest_match, unknown_choice
from pixelseg.models import available, create, model_options
from pixelseg.models.slicewise import SliceWise, check_context_slices
from pixelseg.models.unet3d import UNet3D

__all__ = [
    "SLICE_MODEL_NAMES",
    "VOLUMETRIC_MODEL_NAMES",
    "available_volumetric",
    "create_volumetric",
    "is_slice_model",
    "volumetric_options",
]

# name -> builder; the first line of the builder's docstring is its description.
_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "unet3d": UNet3D,
}

#: The 2D models :func:`create_volumetric` runs slice by slice (all of ``models.available()``).
SLICE_MODEL_NAMES: tuple[str, ...] = tuple(available())

#: Every name :func:`create_volumetric` accepts: the 3D models, then the 2D ones.
VOLUMETRIC_MODEL_NAMES: tuple[str, ...] = (*_BUILDERS, *SLICE_MODEL_NAMES)

_POSITIONAL = ("num_classes", "in_channels")


def available_volumetric() -> dict[str, str]:
    """Volumetric model name -> one-line description (3D models, then 2D ones on slices)."""
    listing = {
        name: (inspect.getdoc(builder) or name).splitlines()[0]
        for name, builder in _BUILDERS.items()
    }
    for name, description in available().items():
        listing[name] = f"2D on axial slices (context_slices for 2.5D): {description}"
    return listing


def is_slice_model(name: str) -> bool:
    """Whether ``name`` is a 2D model that :func:`create_volumetric` runs slice by slice."""
    return name in SLICE_MODEL_NAMES


def _builder(name: object) -> Callable[..., nn.Module]:
    if not isinstance(name, str) or name not in _BUILDERS:
        raise unknown_choice("volumetric model", str(name), VOLUMETRIC_MODEL_NAMES)
    return _BUILDERS[name]


def volumetric_options(name: str) -> list[str]:
    """The keyword options model ``name`` takes besides ``num_classes`` and ``in_channels``
    (and ``encoder`` for a 2D model: ``context_slices``, then its 2D options)."""
    if is_slice_model(name):
        return ["context_slices", *model_options(name)]
    params = inspect.signature(_builder(name)).parameters.values()
    return [
        p.name
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in _POSITIONAL
    ]


def _three_d_only(name: str, options: dict[str, object]) -> list[str]:
    """The options given to 2D model ``name`` that only a 3D model takes."""
    own = set(model_options(name))
    three_d = {key for builder in _BUILDERS for key in volumetric_options(builder)}
    return sorted(key for key in options if key in three_d and key not in own)


def _create_slicewise(
    name: str, num_classes: int, in_channels: int, encoder: str | None, options: dict
) -> SliceWise:
    """2D model ``name`` on slices; refuses what cannot work slice by slice, naming it."""
    options = dict(options)
    context = check_context_slices(options.pop("context_slices", 0))
    three_d = _three_d_only(name, options)
    if three_d:
        raise InvalidInputError(
            f"option(s) {', '.join(map(repr, three_d))} belong to the 3D model(s) "
            f"{', '.join(_BUILDERS)}; the 2D model {name!r} on slices takes: "
            f"{', '.join(volumetric_options(name))}"
        )
    if options.get("deep_supervision"):
        # The volumetric loss weights deep-supervision outputs by resolution (nnU-Net's
        # 1/2^i, the coarsest at 0); UNet++'s nested heads are all full resolution.
        raise InvalidInputError(
            f"option 'deep_supervision' of 2D model {name!r} is not supported on slices: "
            "deep supervision in the volumetric task is the 3D U-Net's (unet3d), whose "
            "outputs halve in resolution; leave it unset"
        )
    if options.get("training_logits", "input") != "input":
        raise InvalidInputError(
            f"option training_logits={options['training_logits']!r} is not supported on "
            "slices: the volumetric loss needs logits at the patch's size ('input')"
        )
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise InvalidInputError(f"in_channels must be an integer >= 1, got {in_channels!r}")
    model = create(
        name, num_classes, in_channels=in_channels * (2 * context + 1), encoder=encoder, **options
    )
    return SliceWise(model, in_channels, context)


def create_volumetric(
    name: str,
    num_classes: int,
    in_channels: int = 1,
    encoder: str | None = None,
    **options: object,
) -> nn.Module:
    """Build volumetric model ``name`` predicting ``num_classes`` from ``in_channels``-channel
    volumes; ``options`` are its keyword arguments (:func:`volumetric_options`). A 2D model
    name builds a :class:`SliceWise` around ``models.create(name, encoder=encoder, ...)``
    (``context_slices`` among the options). Unknown names or options raise
    InvalidInputError naming them, the closest valid one and all valid ones."""
    if is_slice_model(name):
        return _create_slicewise(name, num_classes, in_channels, encoder, options)
    builder = _builder(name)
    if encoder is not None:
        raise InvalidInputError(
            f"volumetric model {name!r} has no encoder, got encoder={encoder!r} (2D models on "
            f"slices take one: {', '.join(SLICE_MODEL_NAMES)})"
        )
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
