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
    CAMVID_GROUP_PATTERN,
    DATASET_INFO,
    PRESETS,
    SHAPE_CLASSES,
    SHAPE_COLORS,
    SegmentationFolder,
    SyntheticShapes,
    build_transforms,
    channel_stats,
    groups_of,
    read_split_file,
    resolve_normalization,
)
from pixelseg.data.augmentations import EVAL_KEPT, INVENTS_PIXELS
from pixelseg.errors import ConfigError, DataError, InvalidInputError
from pixelseg.tasks.base import DataBundle
from pixelseg.tasks.splits import (
    EACH_ITS_OWN_GROUP,
    check_saved_split,
    draw_split,
    splits_by_group,
)

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


def build_datasets(config: ExperimentConfig, split: dict[str, Any] | None = None) -> DataBundle:
    """Training and validation datasets with their transforms, from ``config.data``.

    ``split`` is a split saved by an earlier run (``DataBundle.split``): its stems are used
    instead of drawing the split again.
    """
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
        record = None
    elif data.dataset in PRESETS:
        train, val, record = _preset_datasets(data, train_tf, val_tf, split)
        colors = train.colors
    else:
        train, val, record = _folder_datasets(data, train_tf, val_tf, split)
        colors = data.colors or train.colors
    return DataBundle(
        train, val, classes, colors, ignore, mean, std, _without_transform(train), record
    )


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


def _preset_datasets(data: DataConfig, train_tf, val_tf, saved: dict[str, Any] | None):
    preset = PRESETS[data.dataset]
    kwargs: dict[str, Any] = {"in_channels": data.in_channels, "strict": data.strict}
    draws = _preset_draws(data)
    if draws or (saved is not None and data.dataset == "camvid"):
        # Re-split the training files (CamVid's train/, every membrane slice) by group; a
        # CamVid run that drew its split is evaluated on it even by a config that does not.
        source = "train" if data.dataset == "camvid" else "all"
        record = saved
        if draws:
            everything = preset(data.root, split=source, **kwargs)
            drawn = draw_split(everything.stems, data, "files", _PRESET_GROUPS[data.dataset])
            if saved is not None:
                check_saved_split(saved, drawn)
            record = saved or drawn
        assert record is not None
        train = preset(data.root, split=source, transform=train_tf, stems=record["train"], **kwargs)
        if data.eval_split is not None:
            # An official split named explicitly scores instead of the drawn groups.
            val = preset(data.root, split=data.eval_split, transform=val_tf, **kwargs)
            _warn_shared_groups(data, train.stems, val.stems)
        else:
            val = preset(data.root, split=source, transform=val_tf, stems=record["val"], **kwargs)
        return train, val, record
    if data.dataset == "membrane":
        # The membrane slices have no official validation split: a seeded random one.
        kwargs.update(val_fraction=data.val_fraction, seed=data.split_seed)
    eval_split = data.eval_split or "val"
    if eval_split == "train":
        log.warning("data.eval_split 'train': validation scores the training images")
    train = preset(data.root, split="train", transform=train_tf, **kwargs)
    val = preset(data.root, split=eval_split, transform=val_tf, **kwargs)
    record = None
    if data.dataset == "membrane":
        record = {"train": train.stems, "val": val.stems, "how": _random_how(data)}
    if saved is not None and record is not None:
        check_saved_split(saved, record)
    _warn_shared_groups(data, train.stems, val.stems)
    return train, val, record


def _preset_draws(data: DataConfig) -> bool:
    """CamVid keeps its val/ unless validation groups or folds are named; membrane splits
    by group as soon as a pattern is given."""
    if data.dataset == "camvid":
        return data.val_groups is not None or data.num_folds is not None
    return data.dataset == "membrane" and splits_by_group(data)


# The group pattern of a preset when data.group_by is unset: CamVid names its videos in
# the stem; a membrane slice is its own group (a plain k-fold over slices).
_PRESET_GROUPS = {"camvid": CAMVID_GROUP_PATTERN, "membrane": EACH_ITS_OWN_GROUP}


def _random_how(data: DataConfig) -> str:
    # The words draw_split uses for the same seeded split.
    return (
        f"seeded split of the files, val_fraction {data.val_fraction}, split_seed {data.split_seed}"
    )


def _warn_shared_groups(data: DataConfig, train: list[str], val: list[str]) -> None:
    """Choosing best.pt on validation images from the training groups (frames of the same
    videos) rewards memorising them: say so at start-up."""
    pattern = data.group_by or _PRESET_GROUPS.get(data.dataset)
    if pattern is None or (data.dataset == "membrane" and data.group_by is None):
        return
    try:
        shared = sorted(set(groups_of(train, pattern)) & set(groups_of(val, pattern)))
    except (DataError, InvalidInputError):
        if data.group_by is not None:
            raise  # the user's pattern must name every file's group
        return
    if shared:
        log.warning(
            "the validation images share groups %s (by %r) with the training images: "
            "train.best_metric then rewards memorising those groups, so prefer last.pt or "
            "validate on other groups (data.val_groups)",
            ", ".join(shared),
            pattern,
        )


def _folder_datasets(data: DataConfig, train_tf, val_tf, saved: dict[str, Any] | None):
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
        _warn_shared_groups(data, train.stems, val.stems)
        return train, val, None
    record = None
    if data.train_split and data.val_split:
        train_stems = read_split_file(data.train_split)
        val_stems = read_split_file(data.val_split)
        _warn_shared_groups(data, train_stems, val_stems)
        drawn = {"val": val_stems, "how": f"split files {data.train_split}, {data.val_split}"}
    else:
        everything = SegmentationFolder(data.images, data.masks, **common).stems
        drawn = record = draw_split(everything, data, "files")
        train_stems, val_stems = record["train"], record["val"]
    if saved is not None:
        check_saved_split(saved, drawn)
        train_stems, val_stems = saved["train"], saved["val"]  # the files the run used
    train = SegmentationFolder(
        data.images, data.masks, stems=train_stems, transform=train_tf, **common
    )
    val = SegmentationFolder(data.images, data.masks, stems=val_stems, transform=val_tf, **common)
    return train, val, record
