"""Inference: sliding windows, test-time augmentation, predictors, panoptic fusion, and
writing masks."""

from __future__ import annotations

from pixelseg.inference.masks_io import (
    IGNORE_COLOR,
    colorize,
    default_palette,
    index_mask_image,
    load_index_mask,
    overlay,
    save_index_mask,
)
from pixelseg.inference.panoptic_fusion import FusionSettings, fuse_panoptic, naive_paste
from pixelseg.inference.pipeline import compose_predictor, model_from_checkpoint
from pixelseg.inference.predictor import as_predictor, extract_logits
from pixelseg.inference.sliding_window import (
    Predictor,
    gaussian_importance_map,
    sliding_window_predict,
    window_starts,
)
from pixelseg.inference.tta import flip_tta

__all__ = [
    "IGNORE_COLOR",
    "FusionSettings",
    "Predictor",
    "as_predictor",
    "colorize",
    "compose_predictor",
    "default_palette",
    "extract_logits",
    "flip_tta",
    "fuse_panoptic",
    "gaussian_importance_map",
    "index_mask_image",
    "load_index_mask",
    "model_from_checkpoint",
    "naive_paste",
    "overlay",
    "save_index_mask",
    "sliding_window_predict",
    "window_starts",
]
