"""Panoptic data from a config: synthetic shapes or a COCO panoptic folder.

Every source gives the samples of :mod:`pixelseg.data.panoptic_sample` (thing instances,
the ``semantic`` map with 0 = things and 255 = VOID, the ``panoptic`` id map and its
``segments_info``); ``data.augment`` lists the instance transforms (flip, scale, crop,
colour), which move every target with the image (:mod:`pixelseg.data.panoptic_transforms`).
Validation images are never augmented: the model resizes them itself.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset, Subset

from pixelseg.config import DataConfig, ExperimentConfig
from pixelseg.errors import ConfigError, DataError
from pixelseg.tasks.base import DataBundle
from pixelseg.tasks.semantic_data import SYNTHETIC_VAL_SEED_OFFSET, normalization
from pixelseg.tasks.splits import check_saved_split, draw_split

__all__ = ["build_panoptic_data"]

log = logging.getLogger(__name__)


def build_panoptic_data(
    config: ExperimentConfig, split: dict[str, Any] | None = None
) -> DataBundle:
    """Training and validation panoptic datasets; ``split`` is a saved split, checked
    against the one the config draws. ``DataBundle.classes`` names every category (things
    and stuff, in category id order), ``categories`` holds them with ``isthing``."""
    from pixelseg.data.panoptic_transforms import TransformedPanoptic, build_panoptic_transforms

    data = config.data
    if data.in_channels != 3:
        raise ConfigError(
            f"data.in_channels is {data.in_channels}; panoptic models take RGB images (3)"
        )
    if data.val_transforms:
        raise ConfigError(
            "data.val_transforms has no effect with task 'panoptic': the model resizes "
            "validation images itself (model.options min_size/max_size)"
        )
    mean, std = normalization(data)
    if data.dataset == "synthetic":
        train, val, record = _synthetic(config)
    elif data.dataset == "coco_panoptic":
        train, val, record = _coco_panoptic(data)
    else:  # config validation lists the datasets of each task; this guards a new one
        raise ConfigError(f"data.dataset {data.dataset!r} has no panoptic targets")
    if split is not None and record is not None:
        check_saved_split(split, record)
    categories = [dict(c) for c in train.categories]
    stored = train
    transform = build_panoptic_transforms(data.augment)
    if transform is not None:
        train = TransformedPanoptic(train, transform)
    return DataBundle(
        train,
        val,
        [str(c["name"]) for c in categories],
        [tuple(c["color"]) for c in categories] if all("color" in c for c in categories) else None,
        None,
        mean,
        std,
        stored,
        record,
        [int(c["id"]) for c in categories],
        categories,
    )


def _synthetic(config: ExperimentConfig) -> tuple[Dataset, Dataset, None]:
    from pixelseg.data import SyntheticPanoptic

    syn = config.data.synthetic
    common = {"size": syn.size, "min_shapes": syn.min_shapes, "max_shapes": syn.max_shapes}
    train = SyntheticPanoptic(syn.num_train, seed=config.seed, **common)
    val = SyntheticPanoptic(syn.num_val, seed=config.seed + SYNTHETIC_VAL_SEED_OFFSET, **common)
    return train, val, None


def _path(root: str | None, path: str | None, default: str | None, what: str) -> Path | None:
    """``path`` (or ``default``) under ``root`` unless absolute; None when neither is set."""
    value = path or default
    if value is None:
        return None
    resolved = Path(root) / value if root and not Path(value).is_absolute() else Path(value)
    if not resolved.exists():
        raise ConfigError(f"data.{what}: {str(resolved)!r} does not exist")
    return resolved


def _coco_panoptic(data: DataConfig) -> tuple[Dataset, Dataset, dict[str, Any] | None]:
    """``data.images`` + ``data.annotations`` (+ ``data.masks``, the PNG folder), paths
    relative to ``data.root``; validation from ``data.val_images`` + ``data.val_annotations``
    (+ ``data.val_masks``) or a seeded ``val_fraction`` of the training images."""
    from pixelseg.data import CocoPanoptic

    images = _path(data.root, data.images, "images", "images")
    annotations = _path(data.root, data.annotations, "panoptic.json", "annotations")
    pngs = _path(data.root, data.masks, None, "masks")
    full = CocoPanoptic(images, annotations, pngs, keep_empty=data.keep_empty)
    if data.val_annotations is not None:
        val = CocoPanoptic(
            _path(data.root, data.val_images, data.images or "images", "val_images"),
            _path(data.root, data.val_annotations, None, "val_annotations"),
            _path(data.root, data.val_masks, None, "val_masks"),
            keep_empty=True,  # an image of VOID only still scores false positives
        )
        if val.categories != full.categories:
            raise DataError(
                f"the validation annotations {data.val_annotations!r} list other categories "
                f"than {str(annotations)!r}: {[c['name'] for c in val.categories]} against "
                f"{[c['name'] for c in full.categories]}"
            )
        return full, val, None
    names = full.names
    if len(set(names)) != len(names):
        raise DataError(f"{str(annotations)!r} names one image file stem twice; cannot split")
    record = draw_split(names, data, "images")
    index = {name: i for i, name in enumerate(names)}
    train = _Subset(full, [index[n] for n in record["train"]])
    val = _Subset(full, [index[n] for n in record["val"]])
    log.info("COCO panoptic: %d training and %d validation images", len(train), len(val))
    return train, val, record


class _Subset(Subset):
    """A subset that keeps the panoptic source's category attributes."""

    def __getattr__(self, name: str) -> Any:
        if name in ("categories", "classes", "stuff_classes", "thing_category_ids",
                    "stuff_category_ids"):  # fmt: skip
            return getattr(self.dataset, name)
        raise AttributeError(name)
