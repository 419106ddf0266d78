"""Instance data from a config: synthetic shapes, Penn-Fudan or a COCO folder.

Every source gives the samples :class:`pixelseg.data.CocoInstances` gives; ``data.augment``
lists instance transforms (flip, scale, crop, colour: see
:mod:`pixelseg.data.instance_transforms`) that move boxes and masks with the image.
Validation images are never augmented: detectors resize them themselves.
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
from pixelseg.tasks.splits import check_saved_split, draw_split, splits_by_group

__all__ = ["build_instance_data"]

log = logging.getLogger(__name__)


def build_instance_data(
    config: ExperimentConfig, split: dict[str, Any] | None = None
) -> DataBundle:
    """Training and validation instance datasets; ``split`` is a saved split, checked
    against the one the config draws (a drawn split is recorded in ``DataBundle.split``)."""
    from pixelseg.data.instance_transforms import TransformedInstances, build_instance_transforms

    data = config.data
    if data.in_channels != 3:
        raise ConfigError(
            f"data.in_channels is {data.in_channels}; instance models take RGB images (3)"
        )
    if data.val_transforms:
        raise ConfigError(
            "data.val_transforms has no effect with task 'instance': detectors resize "
            "validation images themselves (model.options min_size/max_size)"
        )
    mean, std = normalization(data)
    if data.dataset == "synthetic":
        train, val, category_ids, record = _synthetic(config)
    elif data.dataset == "pennfudan":
        train, val, category_ids, record = _pennfudan(data)
    elif data.dataset == "coco":
        train, val, category_ids, record = _coco(data)
    else:  # config validation lists the datasets of each task; this guards a new one
        raise ConfigError(f"data.dataset {data.dataset!r} has no instance targets")
    if split is not None and record is not None:
        check_saved_split(split, record)
    classes = list(train.classes)
    stored = train
    transform = build_instance_transforms(data.augment)
    if transform is not None:
        train = TransformedInstances(train, transform)
    return DataBundle(train, val, classes, None, None, mean, std, stored, record, category_ids)


def _synthetic(config: ExperimentConfig) -> tuple[Dataset, Dataset, list[int], None]:
    from pixelseg.data import SyntheticInstances

    syn = config.data.synthetic
    common = {"size": syn.size, "min_shapes": syn.min_shapes, "max_shapes": syn.max_shapes}
    train = SyntheticInstances(syn.num_train, seed=config.seed, **common)
    val = SyntheticInstances(syn.num_val, seed=config.seed + SYNTHETIC_VAL_SEED_OFFSET, **common)
    return train, val, [c["id"] for c in train.categories], None


def _pennfudan(data: DataConfig) -> tuple[Dataset, Dataset, list[int], dict[str, Any]]:
    from pixelseg.data import PennFudan

    if splits_by_group(data):
        # By group, e.g. data.group_by '^(FudanPed|PennPed)' keeps the two sites apart.
        names = PennFudan(data.root, split="all").stems  # type: ignore[arg-type]
        record = draw_split(names, data, "images")
        train = PennFudan(data.root, stems=record["train"], keep_empty=data.keep_empty)  # type: ignore[arg-type]
        val = PennFudan(data.root, stems=record["val"], keep_empty=data.keep_empty)  # type: ignore[arg-type]
    else:
        common = {
            "val_fraction": data.val_fraction,
            "split_seed": data.split_seed,
            "keep_empty": data.keep_empty,
        }
        train = PennFudan(data.root, split="train", **common)  # type: ignore[arg-type]
        val = PennFudan(data.root, split="val", **common)  # type: ignore[arg-type]
        record = {
            "how": f"seeded split of the images, val_fraction {data.val_fraction}, "
            f"split_seed {data.split_seed}",
            "train": train.stems,
            "val": val.stems,
        }
    log.info("Penn-Fudan: %d training and %d validation images", len(train), len(val))
    return train, val, [1], record


def _resolve(root: str | None, path: str | None, what: str) -> Path:
    if path is None:
        raise ConfigError(f"data.dataset 'coco' needs data.{what}")
    resolved = Path(root) / path if root and not Path(path).is_absolute() else Path(path)
    if not resolved.exists():
        raise ConfigError(f"data.{what}: {str(resolved)!r} does not exist")
    return resolved


def _coco(data: DataConfig) -> tuple[Dataset, Dataset, list[int], dict[str, Any] | None]:
    """COCO instances: ``data.images`` + ``data.annotations`` (paths relative to
    ``data.root``), validation from ``data.val_images`` + ``data.val_annotations`` or a
    seeded ``val_fraction`` of the training images."""
    from pixelseg.data import CocoInstances

    images = _resolve(data.root, data.images or "images", "images")
    annotations = _resolve(data.root, data.annotations or "instances.json", "annotations")
    full = CocoInstances(images, annotations, keep_empty=data.keep_empty)
    category_ids = [full.label_to_category_id[k] for k in sorted(full.label_to_category_id)]
    if data.val_annotations is not None:
        val_images = _resolve(data.root, data.val_images or data.images or "images", "val_images")
        val_ann = _resolve(data.root, data.val_annotations, "val_annotations")
        # Validation keeps images without objects: false detections on them count.
        val = CocoInstances(val_images, val_ann, keep_empty=True)
        if val.classes != full.classes:
            raise DataError(
                f"{str(val_ann)!r} lists categories {val.classes} but {str(annotations)!r} "
                f"lists {full.classes}"
            )
        return full, val, category_ids, None
    names = [entry.path.stem for entry in full.images]
    if len(set(names)) != len(names):
        raise DataError(f"{str(annotations)!r} names one image file stem twice; cannot split")
    record = draw_split(names, data, "images")
    index = {name: i for i, name in enumerate(names)}
    train = _Subset(full, [index[n] for n in record["train"]])
    val = _Subset(full, [index[n] for n in record["val"]])
    return train, val, category_ids, record


class _Subset(Subset):
    """A subset that keeps the dataset's ``classes`` and ``categories``."""

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes  # type: ignore[attr-defined]

    @property
    def categories(self) -> list[dict[str, Any]]:
        return self.dataset.categories  # type: ignore[attr-defined]
