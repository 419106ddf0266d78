"""Semantic segmentation models: one factory, ``create(name, ...)``, over a plain dict.

``available()`` lists the models, ``available_encoders()`` the backbones. A model's options
are its constructor's keyword arguments (see each class), nothing hidden::

    model = create("unet", num_classes=4, in_channels=1, encoder="resnet34")
    logits = model(images)  # [B, 1, H, W] -> [B, 4, H, W], any H x W
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from pixelseg.errors import InvalidInputError, closest_match, unknown_choice
from pixelseg.models.base import SegmentationModel
from pixelseg.models.deeplabv3plus import DeepLabV3Plus
from pixelseg.models.encoders import Encoder, available_encoders, build_encoder
from pixelseg.models.fcn import FCN8s, FCN16s, FCN32s
from pixelseg.models.unet import UNet
from pixelseg.models.unetpp import UNetPlusPlus

__all__ = [
    "DeepLabV3Plus",
    "Encoder",
    "FCN8s",
    "FCN16s",
    "FCN32s",
    "SegmentationModel",
    "UNet",
    "UNetPlusPlus",
    "available",
    "available_encoders",
    "build_encoder",
    "create",
    "model_options",
]

# name -> builder; the first line of the builder's docstring is its description.
_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "fcn32s": FCN32s,
    "fcn16s": FCN16s,
    "fcn8s": FCN8s,
    "unet": UNet,
    "unetpp": UNetPlusPlus,
    "deeplabv3plus": DeepLabV3Plus,
}

_POSITIONAL = ("num_classes", "in_channels", "encoder")


def available() -> dict[str, str]:
    """Model name -> one-line description."""
    return {
        name: (inspect.getdoc(builder) or name).splitlines()[0]
        for name, builder in _BUILDERS.items()
    }


def _options(builder: Callable[..., nn.Module]) -> tuple[list[str], bool]:
    """Keyword options a builder takes (besides the positional ones), and whether it has **kw."""
    params = inspect.signature(builder).parameters.values()
    names = [
        p.name
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in _POSITIONAL
    ]
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def model_options(name: str) -> list[str]:
    """The keyword options model ``name`` takes besides ``num_classes``, ``in_channels`` and
    ``encoder``: its constructor's, then ``input_scale`` and ``training_logits``."""
    if not isinstance(name, str) or name not in _BUILDERS:
        raise unknown_choice("model", str(name), _BUILDERS)
    return [*_options(_BUILDERS[name])[0], "input_scale", "training_logits"]


def _with_hint(key: str, valid: list[str]) -> str:
    match = closest_match(key, valid)
    return f"{key!r} (did you mean {match!r}?)" if match else repr(key)


def create(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    encoder: str | None = None,
    **options: object,
) -> nn.Module:
    """Build model ``name`` predicting ``num_classes`` from ``in_channels``-channel images.

    ``encoder`` picks the backbone (``available_encoders()``; None = the model's default);
    ``options`` are the model's keyword arguments, plus ``input_scale`` and
    ``training_logits`` which every model takes (see :class:`SegmentationModel`: the network
    runs on the input resized by that factor, logits return at input size, in training
    mode at the network's size with ``training_logits="network"``). Unknown names or
    options raise InvalidInputError listing the valid choices.
    """
    if not isinstance(name, str) or name not in _BUILDERS:
        raise unknown_choice("model", str(name), _BUILDERS)
    if encoder is not None and not isinstance(encoder, str):
        raise InvalidInputError(f"encoder must be a name (str) or None, got {encoder!r}")
    builder = _BUILDERS[name]
    options = dict(options)
    input_scale = options.pop("input_scale", 1.0)
    training_logits = options.pop("training_logits", "input")
    valid, takes_any = model_options(name), _options(builder)[1]
    unknown = sorted(set(options) - set(valid))
    if unknown and not takes_any:
        hints = [_with_hint(k, valid) for k in unknown]
        raise InvalidInputError(
            f"unknown option(s) for model {name!r}: {', '.join(hints)}. "
            f"Valid options: {', '.join(valid) or '(none)'}"
        )
    kwargs = dict(options)
    if "encoder" in inspect.signature(builder).parameters:
        kwargs["encoder"] = encoder
    elif encoder is not None:
        raise InvalidInputError(f"model {name!r} takes no encoder, got encoder={encoder!r}")
    model = builder(num_classes=num_classes, in_channels=in_channels, **kwargs)
    return model.set_input_scale(input_scale, training_logits=training_logits)
