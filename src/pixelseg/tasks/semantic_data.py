"""Semantic segmentation data from the config: datasets, transforms, labels, normalisation.

One name lookup per choice: read a function here to see exactly what a ``data`` key does.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from torch.utils.data import Dataset

from pixelseg.config import DataConfig, ExperimentConfig
from pixelseg.data import (
    DATASET_INFO,
    PRESETS,
    SHAPE_CLASSES,
    SHAPE_COLORS,
    SegmentationFolder,
    SyntheticShapes,
    build_transforms,
    channel_stats,
    random_split,
    read_split_file,
    resolve_normalization,
)
from pixelseg.data.augmentations import EVAL_KEPT, INVENTS_PIXELS
from pixelseg.errors import ConfigError, InvalidInputError
from pixelseg.tasks.base import DataBundle

__all__ = ["PAD_IGNORE", "build_datasets", "normalization"]

log = logging.getLogger(__name__)

# Offset between the training and validation seeds of the synthetic set, so the two never
# contain the same image.
SYNTHETIC_VAL_SEED_OFFSET = 1_000_003

#: The ignore value given to pixels a transform invents (padding, rotated-in corners) when
#: the dataset has no ignore value of its own, so that they are never trained as class 0.
PAD_IGNORE = 255


def normalization(data: DataConfig) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (0..1 units) for ``data.in_channels`` channels."""
    channels = data.in_channels
    if data.normalize != "custom":
        mean, std = resolve_normalization(data.normalize)
    else:
        mean, std = list(data.mean or []), list(data.std or [])
        if len(mean) != channels or len(std) != channels:
            raise ConfigError(
                f"data.mean and data.std need {channels} values (data.in_channels), got "
                f"{len(mean)} and {len(std)}"
            )
        try:
            mean, std = resolve_normalization(mean, std)
        except InvalidInputError as error:
            raise ConfigError(f"data.mean/data.std: {error}") from None
    return channel_stats(mean, channels, "mean"), channel_stats(std, channels, "std")


def build_datasets(config: ExperimentConfig) -> DataBundle:
    """Training and validation datasets with their transforms, from ``config.data``."""
    data = config.data
    mean, std = normalization(data)
    _check_val_transforms(data)
    classes, colors, dataset_ignore = _label_info(config)
    ignore = _run_ignore_index(data, dataset_ignore, len(classes))
    train_tf = build_transforms(data.augment, mean=mean, std=std, train=True, ignore_index=ignore)
    val_tf = build_transforms(
        data.val_transforms, mean=mean, std=std, train=False, ignore_index=ignore
    )
    if data.dataset == "synthetic":
        syn = data.synthetic
        common = {"size": syn.size, "min_shapes": syn.min_shapes, "max_shapes": syn.max_shapes}
        train = SyntheticShapes(syn.num_train, seed=config.seed, transform=train_tf, **common)
        val = SyntheticShapes(
            syn.num_val, seed=config.seed + SYNTHETIC_VAL_SEED_OFFSET, transform=val_tf, **common
        )
    elif data.dataset in PRESETS:
        train, val = _preset_datasets(data, train_tf, val_tf)
        colors = train.colors
    else:
        train, val = _folder_datasets(data, train_tf, val_tf)
        colors = data.colors or train.colors
    return DataBundle(train, val, classes, colors, ignore, mean, std, _without_transform(train))


def _label_info(config: ExperimentConfig) -> tuple[list[str], list | None, int | None]:
    """Class names, colours and the dataset's own ignore value, without reading any file."""
    data = config.data
    if data.dataset == "synthetic":
        return list(SHAPE_CLASSES), list(SHAPE_COLORS), None
    if data.dataset in DATASET_INFO:
        info = DATASET_INFO[data.dataset]
        return list(info.classes), list(info.colors), info.ignore_index
    return list(data.classes or []), data.colors, data.ignore_index


def _run_ignore_index(data: DataConfig, dataset_ignore: int | None, num_classes: int):
    """The dataset's ignore value, or one for invented pixels when a transform can add them."""
    if dataset_ignore is not None:
        return dataset_ignore
    inventing = [
        entry.get("name")
        for entry in [*data.augment, *data.val_transforms]
        if isinstance(entry, dict) and entry.get("name") in INVENTS_PIXELS
    ]
    if not inventing:
        return None
    if num_classes > PAD_IGNORE:
        raise ConfigError(
            f"data.augment uses {', '.join(map(repr, inventing))}, which can pad images, but the "
            f"dataset has no ignore value and {num_classes} classes; set data.ignore_index to "
            f"a value >= {num_classes} for the padded pixels"
        )
    log.info(
        "%s can pad images: padded mask pixels get ignore value %d (the dataset has none)",
        ", ".join(inventing),
        PAD_IGNORE,
    )
    return PAD_IGNORE


def _check_val_transforms(data: DataConfig) -> None:
    """Validation transforms must be deterministic; a random one would be dropped silently."""
    for index, entry in enumerate(data.val_transforms):
        name = entry.get("name") if isinstance(entry, dict) else None
        if name is not None and name not in EVAL_KEPT:
            raise ConfigError(
                f"data.val_transforms[{index}] {name!r} is random, so evaluation cannot use it; "
                f"use one of {', '.join(sorted(EVAL_KEPT))}, or nothing: validation and eval "
                "score whole images of any size"
            )


def _without_transform(dataset: Dataset) -> Dataset:
    """A shallow copy of ``dataset`` that returns samples as stored (no augmentation)."""
    plain = copy.copy(dataset)
    plain.transform = None  # type: ignore[attr-defined]
    return plain


def _preset_datasets(data: DataConfig, train_tf, val_tf) -> tuple[Dataset, Dataset]:
    preset = PRESETS[data.dataset]
    kwargs: dict[str, Any] = {"in_channels": data.in_channels, "strict": data.strict}
    if data.dataset == "membrane":
        # The membrane slices have no official validation split: a seeded random one.
        kwargs.update(val_fraction=data.val_fraction, seed=data.split_seed)
    eval_split = data.eval_split or "val"
    if eval_split == "train":
        log.warning("data.eval_split 'train': validation scores the training images")
    train = preset(data.root, split="train", transform=train_tf, **kwargs)
    val = preset(data.root, split=eval_split, transform=val_tf, **kwargs)
    return train, val


def _folder_datasets(data: DataConfig, train_tf, val_tf) -> tuple[Dataset, Dataset]:
    common: dict[str, Any] = {
        "classes": data.classes,
        "ignore_index": data.ignore_index,
        "colors": data.colors,
        "mask_format": data.mask_format,
        "value_map": data.value_map,
        "in_channels": data.in_channels,
        "strict": data.strict,
    }
    if data.val_images and data.val_masks:
        train = SegmentationFolder(data.images, data.masks, transform=train_tf, **common)
        val = SegmentationFolder(data.val_images, data.val_masks, transform=val_tf, **common)
        return train, val
    if data.train_split and data.val_split:
        train_stems = read_split_file(data.train_split)
        val_stems = read_split_file(data.val_split)
    else:
        everything = SegmentationFolder(data.images, data.masks, **common)
        train_stems, val_stems = random_split(
            everything.stems, val_fraction=data.val_fraction, seed=data.split_seed
        )
    train = SegmentationFolder(
        data.images, data.masks, stems=train_stems, transform=train_tf, **common
    )
    val = SegmentationFolder(data.images, data.masks, stems=val_stems, transform=val_tf, **common)
    return train, val
