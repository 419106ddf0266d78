"""Segmentation losses: cross-entropy, Dice, generalised Dice, Tversky, focal, and sums.

Every loss maps ``logits [B, C, *spatial]`` (2D or 3D) and ``target [B, *spatial]`` class
indices to a scalar; ``C == 1`` means binary (sigmoid, target 0/1). Build them by name with
:func:`create`, sum several with :func:`combine`, and derive class weights from label counts
with :func:`count_labels` and :func:`class_weights`.
"""

from __future__ import annotations

from pixelseg.losses.class_weights import WEIGHT_METHODS, class_weights, count_labels
from pixelseg.losses.combined import CombinedLoss, combine
from pixelseg.losses.cross_entropy import CrossEntropyLoss
from pixelseg.losses.dice import DiceLoss, GeneralizedDiceLoss
from pixelseg.losses.focal import FocalLoss
from pixelseg.losses.registry import available, create, options_of
from pixelseg.losses.tversky import TverskyLoss

__all__ = [
    "WEIGHT_METHODS",
    "CombinedLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "GeneralizedDiceLoss",
    "TverskyLoss",
    "available",
    "class_weights",
    "combine",
    "count_labels",
    "create",
    "options_of",
]
