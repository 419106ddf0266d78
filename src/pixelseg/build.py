"""Plain functions that build objects from the validated config.

One name lookup per choice, no registries: read a function here to see exactly what a
config key does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from pixelseg import losses, models
from pixelseg.config import DataConfig, ExperimentConfig
from pixelseg.data import (
    PRESETS,
    SegmentationFolder,
    SyntheticShapes,
    build_transforms,
    channel_stats,
    random_split,
    read_split_file,
    resolve_normalization,
)
from pixelseg.errors import ConfigError, InvalidInputError
from pixelseg.tasks.semantic import SemanticTask

__all__ = [
    "DataBundle",
    "build_datasets",
    "build_loss",
    "build_model",
    "build_task",
    "checkpoint_meta",
    "model_from_spec",
    "normalization",
]

log = logging.getLogger(__name__)

# Offset between the training and validation seeds of the synthetic set, so the two never
# contain the same image.
SYNTHETIC_VAL_SEED_OFFSET = 1_000_003


@dataclass
class DataBundle:
    """Datasets plus what the model and reports need to know about the labels."""

    train: Dataset
    val: Dataset
    classes: list[str]
    colors: list[tuple[int, int, int]] | None
    ignore_index: int | None
    mean: list[float]
    std: list[float]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


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
    train_tf = build_transforms(data.augment, mean=mean, std=std, train=True)
    val_tf = build_transforms(data.val_transforms, mean=mean, std=std, train=False)
    if data.dataset == "synthetic":
        syn = data.synthetic
        common = {"size": syn.size, "min_shapes": syn.min_shapes, "max_shapes": syn.max_shapes}
        train = SyntheticShapes(syn.num_train, seed=config.seed, transform=train_tf, **common)
        val = SyntheticShapes(
            syn.num_val, seed=config.seed + SYNTHETIC_VAL_SEED_OFFSET, transform=val_tf, **common
        )
        return DataBundle(train, val, list(train.classes), list(train.colors), None, mean, std)
    if data.dataset in PRESETS:
        preset = PRESETS[data.dataset]
        kwargs = {"in_channels": data.in_channels, "strict": data.strict}
        train = preset(data.root, split="train", transform=train_tf, **kwargs)
        val = preset(data.root, split="val", transform=val_tf, **kwargs)
        return DataBundle(
            train, val, list(train.classes), train.colors, train.ignore_index, mean, std
        )
    return _folder_datasets(config, train_tf, val_tf, mean, std)


def _folder_datasets(config, train_tf, val_tf, mean, std) -> DataBundle:
    data = config.data
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
    else:
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
        val = SegmentationFolder(
            data.images, data.masks, stems=val_stems, transform=val_tf, **common
        )
    return DataBundle(
        train, val, list(data.classes or []), data.colors, data.ignore_index, mean, std
    )


def build_model(config: ExperimentConfig, num_classes: int) -> nn.Module:
    """The model named in ``config.model`` for ``num_classes`` classes."""
    spec = model_spec(config, num_classes)
    return models.create(
        spec["name"],
        spec["num_classes"],
        in_channels=spec["in_channels"],
        encoder=spec["encoder"],
        encoder_weights=config.model.encoder_weights,
        **spec["options"],
    )


def model_spec(config: ExperimentConfig, num_classes: int) -> dict[str, Any]:
    """The ``create()`` arguments stored in checkpoints (weights come from the checkpoint)."""
    return {
        "name": config.model.name,
        "num_classes": num_classes,
        "in_channels": config.data.in_channels,
        "encoder": config.model.encoder,
        "options": dict(config.model.options),
    }


def model_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Rebuild a model from a checkpoint's spec (no encoder weights: the state dict has them)."""
    return models.create(
        spec["name"],
        spec["num_classes"],
        in_channels=spec["in_channels"],
        encoder=spec["encoder"],
        **spec["options"],
    )


def build_loss(config: ExperimentConfig, bundle: DataBundle) -> nn.Module:
    """The weighted loss sum, with class weights from the training labels if asked."""
    terms = []
    weights = _class_weights(config, bundle) if config.loss.class_weights else None
    for term in config.loss.terms:
        options = dict(term.options)
        if bundle.ignore_index is not None:
            options.setdefault("ignore_index", bundle.ignore_index)
        if weights is not None and term.name in ("ce", "dice", "focal"):
            key = "alpha" if term.name == "focal" else "weight"
            options.setdefault(key, weights.tolist())
        terms.append((term.name, term.weight, options))
    return losses.combine(terms)


def _class_weights(config: ExperimentConfig, bundle: DataBundle) -> torch.Tensor:
    masks = (bundle.train[i]["mask"] for i in range(len(bundle.train)))  # type: ignore[arg-type]
    counts = losses.count_labels(masks, bundle.num_classes, ignore_index=bundle.ignore_index)
    weights = losses.class_weights(counts, config.loss.class_weights)
    log.info("class weights (%s): %s", config.loss.class_weights, weights.tolist())
    return weights


def build_task(config: ExperimentConfig, bundle: DataBundle) -> SemanticTask:
    return SemanticTask(
        bundle.num_classes,
        build_loss(config, bundle),
        class_names=bundle.classes,
        ignore_index=bundle.ignore_index,
        deep_supervision_weights=config.loss.deep_supervision_weights,
    )


def checkpoint_meta(config: ExperimentConfig, bundle: DataBundle) -> dict[str, Any]:
    """What a checkpoint carries besides states so that predict needs nothing else."""
    sample = bundle.train[0]  # type: ignore[index]
    return {
        "model_spec": model_spec(config, bundle.num_classes),
        "classes": bundle.classes,
        "colors": bundle.colors,
        "ignore_index": bundle.ignore_index,
        "normalization": {"mean": bundle.mean, "std": bundle.std},
        "in_channels": config.data.in_channels,
        "input_size": list(sample["image"].shape[-2:]),
        "task": config.task,
        "pixelseg_version": _version(),
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pixelseg")
    except PackageNotFoundError:
        return "unknown"


def run_dir_for(config: ExperimentConfig, out: str | Path | None) -> Path:
    return Path(out) if out else Path(config.output_dir)
