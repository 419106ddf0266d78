"""Create losses by name: one plain dict from name to class, as ``pixelseg.models`` does."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from pixelseg.errors import InvalidInputError, closest_match, unknown_choice
from pixelseg.losses.cross_entropy import CrossEntropyLoss
from pixelseg.losses.dice import DiceLoss, GeneralizedDiceLoss
from pixelseg.losses.focal import FocalLoss
from pixelseg.losses.tversky import TverskyLoss

__all__ = ["LOSSES", "available", "create", "options_of"]

LOSSES: dict[str, tuple[type[nn.Module], str]] = {
    "ce": (CrossEntropyLoss, "cross-entropy (BCE-with-logits when C == 1)"),
    "dice": (DiceLoss, "soft Dice, batch or per image"),
    "generalized_dice": (GeneralizedDiceLoss, "Dice weighted by 1/volume^2 (Sudre 2017)"),
    "tversky": (TverskyLoss, "Dice with separate false-positive/false-negative weights"),
    "focal": (FocalLoss, "cross-entropy down-weighting easy pixels (Lin 2017)"),
}


def available() -> dict[str, str]:
    """Return ``{name: one-line description}`` of every loss :func:`create` knows."""
    return {name: description for name, (_, description) in LOSSES.items()}


def options_of(name: str) -> dict[str, Any]:
    """Return the options of loss ``name`` with their defaults (its constructor's keywords)."""
    if name not in LOSSES:
        raise unknown_choice("loss", name, LOSSES)
    parameters = inspect.signature(LOSSES[name][0]).parameters.values()
    return {p.name: p.default for p in parameters}


def create(name: str, **options: Any) -> nn.Module:
    """Build the loss ``name`` (see :func:`available`) with keyword ``options``.

    Every loss maps ``logits [B, C, *spatial]`` and ``target [B, *spatial]`` to a scalar.
    An unknown name or option raises :class:`InvalidInputError` listing the valid ones.
    """
    if not isinstance(name, str) or name not in LOSSES:
        raise unknown_choice("loss", str(name), LOSSES)
    valid = options_of(name)
    for option in options:
        if option not in valid:
            hint = closest_match(option, valid)
            did_you_mean = f" Did you mean {hint!r}?" if hint else ""
            raise InvalidInputError(
                f"unknown option {option!r} for loss {name!r}.{did_you_mean} "
                f"Valid options: {', '.join(valid)}"
            )
    return LOSSES[name][0](**options)
