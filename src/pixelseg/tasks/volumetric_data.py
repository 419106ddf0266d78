"""Volumetric data from a config: CT phantoms, an MSD-layout folder or NIfTI pairs.

Every case is preprocessed the same way in training, evaluation and ``predict`` (the
settings travel in checkpoints): optional resampling to ``volumetric.spacing`` (images
linear, labels nearest), intensity normalisation (a CT window, z-score or percentiles), then
the model's axis order ``[C, D, H, W]`` = ``[C, k, j, i]``. Training draws patches
(:class:`pixelseg.medical.patches.PatchDataset`, nnU-Net's foreground oversampling) from
the preprocessed training cases; validation scores whole cases, read and preprocessed one
at a time. The training cases are held in memory, unless ``volumetric.cache_dir`` names a
folder: then each case is preprocessed once into it and read back memory-mapped
(:mod:`pixelseg.tasks.volumetric_cache`), so a CT dataset need not fit in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pixelseg.config import ExperimentConfig, VolumetricConfig
from pixelseg.errors import ConfigError, DataError
from pixelseg.tasks.base import DataBundle
from pixelseg.tasks.splits import check_saved_split, draw_split

__all__ = [
    "PHANTOM_VAL_SEED_OFFSET",
    "CaseDataset",
    "CaseRecipe",
    "PreparedCase",
    "Preprocessing",
    "build_volumetric_data",
    "prepare_case",
]

log = logging.getLogger(__name__)

#: Validation phantoms are drawn from ``seed + offset``: never the training ones.
PHANTOM_VAL_SEED_OFFSET = 100_003
#: Phantom labels the volumetric task learns (the lungs are context, not a class).
PHANTOM_TASK_CLASSES = ["background", "nodule"]


@dataclass(frozen=True)
class Preprocessing:
    """How a volume becomes model input; stored in checkpoints so that ``predict`` repeats
    it exactly."""

    intensity: str = "window"
    window: str | tuple[float, float] = "lung"
    spacing: tuple[float, float, float] | None = None

    @classmethod
    def from_config(cls, settings: VolumetricConfig) -> Preprocessing:
        window = settings.window if isinstance(settings.window, str) else tuple(settings.window)
        spacing = tuple(settings.spacing) if settings.spacing is not None else None
        return cls(settings.intensity, window, spacing)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {
            "intensity": self.intensity,
            "window": self.window if isinstance(self.window, str) else list(self.window),
            "spacing": list(self.spacing) if self.spacing is not None else None,
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Preprocessing:
        window = value["window"]
        spacing = value.get("spacing")
        return cls(
            str(value["intensity"]),
            window if isinstance(window, str) else tuple(window),
            tuple(spacing) if spacing is not None else None,
        )

    def normalize(self, hu: np.ndarray) -> np.ndarray:
        """Intensities of a volume array as the model sees them (float32)."""
        from pixelseg.medical.preprocess import percentile_normalize, window, zscore

        if self.intensity == "window":
            if isinstance(self.window, str):
                return window(hu, self.window)
            return window(hu, center=float(self.window[0]), width=float(self.window[1]))
        if self.intensity == "zscore":
            return zscore(hu)
        if self.intensity == "percentile":
            return percentile_normalize(hu)
        return np.asarray(hu, dtype=np.float32)


@dataclass
class PreparedCase:
    """One case as the model sees it: ``image`` float32 ``[1, D, H, W]``, ``label`` int64
    ``[D, H, W]`` (or None), ``spacing`` mm along (D, H, W), and the geometry to write a
    prediction back onto the input: ``affine`` of the model grid (i, j, k), ``source_shape``
    and ``source_affine`` of the volume as read."""

    name: str
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float]
    affine: np.ndarray
    source_shape: tuple[int, int, int]
    source_affine: np.ndarray


@dataclass(frozen=True)
class CaseRecipe:
    """How to make one prepared case (``build``, reading and preprocessing it), and what
    identifies its source for the disk cache (``source``: JSON-able, e.g. the files' path,
    size and modification time; the preprocessing settings are added by the cache)."""

    name: str
    source: dict[str, Any]
    build: Callable[[], PreparedCase]


def prepare_case(name: str, image: Any, label: Any | None, settings: Preprocessing) -> PreparedCase:
    """Resample (if asked), normalise and reorder one case (``image``/``label``: Volumes)."""
    from pixelseg.medical.patches import volume_to_model
    from pixelseg.medical.preprocess import resample_image, resample_label

    source_shape, source_affine = image.shape, image.affine
    if not np.isfinite(image.array).all():
        raise DataError(f"case {name!r} ({image.source or 'in memory'}): the image holds NaN")
    if settings.spacing is not None:
        image = resample_image(image, settings.spacing)
        label = resample_label(label, settings.spacing) if label is not None else None
    array = settings.normalize(np.asarray(image.array, dtype=np.float32))
    model_image = np.ascontiguousarray(volume_to_model(array))[None]
    model_label = None
    if label is not None:
        model_label = np.ascontiguousarray(volume_to_model(np.asarray(label.array))).astype(
            np.int64
        )
    spacing = tuple(float(s) for s in reversed(image.spacing))
    return PreparedCase(
        name,
        model_image,
        model_label,
        spacing,  # type: ignore[arg-type]
        image.affine,
        source_shape,
        source_affine,
    )


class CaseDataset(Dataset):
    """Whole cases for validation: sample ``i`` reads and preprocesses case ``i`` when asked
    (volumes are large; or reads it from the disk cache), holding no case between calls:
    ``image`` float32 ``[1, D, H, W]``, ``mask`` int64 ``[D, H, W]``, ``name``, ``spacing``
    (mm along D, H, W)."""

    def __init__(
        self, names: Sequence[str], load: Callable[[int], PreparedCase], classes: Sequence[str]
    ) -> None:
        self.names = list(names)
        self._load = load
        self.classes = list(classes)

    def __len__(self) -> int:
        return len(self.names)

    def case(self, index: int) -> PreparedCase:
        return self._load(index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        case = self._load(index)
        if case.label is None:
            raise DataError(f"case {case.name!r} has no label to score against")
        return {
            "image": torch.from_numpy(case.image),
            "mask": torch.from_numpy(case.label),
            "name": case.name,
            "spacing": case.spacing,
        }


def _phantom_case(config: ExperimentConfig, seed: int, name: str) -> PreparedCase:
    from pixelseg.medical.phantom import make_phantom

    syn = config.volumetric.phantom
    image, label = make_phantom(
        seed,
        shape=syn.shape,
        spacing=syn.spacing,
        noise_hu=syn.noise_hu,
        num_nodules=syn.num_nodules,
        nodule_mm=syn.nodule_mm,
    )
    return prepare_case(name, image, label, Preprocessing.from_config(config.volumetric))


def _phantoms(config: ExperimentConfig) -> tuple[list[CaseRecipe], list[CaseRecipe], list[str]]:
    from pixelseg.medical.phantom_dataset import case_seed

    syn = config.volumetric.phantom
    # What makes one phantom (not how many there are), for the cache key; warnings off: a
    # config built with model_copy(update=...) may hold lists where tuples are declared.
    looks = syn.model_dump(mode="json", exclude={"num_train", "num_val"}, warnings=False)

    def recipe(seed: int, name: str) -> CaseRecipe:
        return CaseRecipe(
            name, {"phantom": looks, "seed": seed}, lambda: _phantom_case(config, seed, name)
        )

    train = [recipe(case_seed(config.seed, i), f"phantom_{i:03d}") for i in range(syn.num_train)]
    val_seed = config.seed + PHANTOM_VAL_SEED_OFFSET
    val = [recipe(case_seed(val_seed, i), f"phantom_val_{i:03d}") for i in range(syn.num_val)]
    return train, val, PHANTOM_TASK_CLASSES


def _split_files(
    config: ExperimentConfig, source: Any
) -> tuple[list[int], list[int], dict[str, Any]]:
    """Case indices of the split the config draws over ``source``'s case names (seeded,
    or by group: ``data.group_by`` keeps a patient's cases on one side)."""
    record = draw_split(list(source.names), config.data, "cases")
    index = {name: i for i, name in enumerate(source.names)}
    return [index[n] for n in record["train"]], [index[n] for n in record["val"]], record


def _files(
    config: ExperimentConfig,
) -> tuple[list[CaseRecipe], list[CaseRecipe], list[str], dict[str, Any] | None]:
    """An MSD folder (``data.root``) or NIfTI pairs (``data.images`` + ``data.masks``, with
    ``data.val_images`` + ``data.val_masks`` or a seeded ``val_fraction`` of the cases)."""
    from pathlib import Path

    from pixelseg.medical.datasets import MSDDataset, NiftiPairs

    data, settings = config.data, Preprocessing.from_config(config.volumetric)

    def resolve(path: str) -> Path:
        return Path(data.root) / path if data.root and not Path(path).is_absolute() else Path(path)

    record = None
    if data.dataset == "msd":
        source = MSDDataset(data.root, "train")  # type: ignore[arg-type]
        val_source, (train_idx, val_idx, record) = source, _split_files(config, source)
    else:
        classes = tuple(data.classes) if data.classes else ("background", "foreground")
        source = NiftiPairs(resolve(data.images), resolve(data.masks) if data.masks else None,  # type: ignore[arg-type]
                            classes=classes)  # fmt: skip
        if data.val_images:
            val_source = NiftiPairs(
                resolve(data.val_images),
                resolve(data.val_masks) if data.val_masks else None,
                classes=classes,
            )
            train_idx, val_idx = list(range(len(source))), list(range(len(val_source)))
        else:
            val_source, (train_idx, val_idx, record) = source, _split_files(config, source)

    from pixelseg.medical.case_cache import file_fingerprint

    def load(dataset: Any, i: int) -> PreparedCase:
        case = dataset[i]
        if case.label is None:
            raise DataError(f"case {case.name!r} has no label")
        return prepare_case(case.name, case.image, case.label, settings)

    def recipe(dataset: Any, i: int) -> CaseRecipe:
        name, image, label = dataset.files[i]
        files = {  # the classes too: reading a case checks its label values against them
            "image": file_fingerprint(image),
            "label": file_fingerprint(label) if label is not None else None,
            "classes": list(source.classes),
        }
        return CaseRecipe(name, files, lambda: load(dataset, i))

    train = [recipe(source, i) for i in train_idx]
    val = [recipe(val_source, i) for i in val_idx]
    return train, val, list(source.classes), record


def _check_in_plane(augment: Any) -> None:
    """One-slice patches (2D models on slices) cannot be rotated out of their plane: a
    rotation about axis 1 or 2 would read the slice's own voxels stretched, not its
    neighbours. An error naming the ``data.augment`` entry."""
    from pixelseg.medical.augment3d_ops import RotateOp

    for index, op in enumerate(augment.ops if augment is not None else []):
        if isinstance(op, RotateOp) and any(op.degrees[a] != (0.0, 0.0) for a in (1, 2)):
            raise ConfigError(
                f"data.augment[{index}] (rotate) turns about axes 1 or 2, which tilts a slice "
                "out of its plane; volumetric.patch_size is one slice deep (2D on slices), so "
                "rotate about axis 0 only (axes: [0]) or use deeper patches"
            )


def build_volumetric_data(
    config: ExperimentConfig, split: dict[str, Any] | None = None
) -> DataBundle:
    """Training patches and validation cases; ``split`` is a saved split to check."""
    from pixelseg.medical.augment3d import build_augment3d
    from pixelseg.medical.patches import PatchDataset

    data, settings = config.data, config.volumetric
    if data.in_channels != 1:
        raise ConfigError(
            f"data.in_channels is {data.in_channels}; volumetric models read one channel (1)"
        )
    if data.val_transforms:
        raise ConfigError("data.val_transforms has no effect with task 'volumetric'")
    augment = build_augment3d(data.augment)
    if settings.patch_size[0] == 1:
        _check_in_plane(augment)
    record = None
    if data.dataset == "synthetic":
        train_recipes, val_recipes, classes = _phantoms(config)
    elif data.dataset in ("msd", "nifti"):
        train_recipes, val_recipes, classes, record = _files(config)
    else:  # config validation lists the datasets of each task; this guards a new one
        raise ConfigError(f"data.dataset {data.dataset!r} has no volumetric targets")
    if split is not None and record is not None:
        check_saved_split(split, record)
    names = [recipe.name for recipe in train_recipes]
    locations: list[dict[int, np.ndarray]] | None = None
    if settings.cache_dir is None:
        cases = [recipe.build() for recipe in train_recipes]
        arrays = [(case.image, case.label) for case in cases]
        image_min = [float(case.image.min()) for case in cases]
        label_max = [int(case.label.max(initial=0)) for case in cases]  # type: ignore[union-attr]

        def load_val(index: int) -> PreparedCase:
            return val_recipes[index].build()
    else:
        from pixelseg.tasks.volumetric_cache import VolumetricCaseCache

        cache = VolumetricCaseCache(settings.cache_dir, Preprocessing.from_config(settings))
        entries = cache.training_cases(train_recipes)
        arrays = [(entry.image, entry.label) for entry in entries]
        image_min = [entry.image_min for entry in entries]
        label_max = [entry.label_max for entry in entries]
        locations = [entry.locations for entry in entries]
        load_val = cache.loader(val_recipes)
    for name, too_high in zip(names, label_max, strict=True):
        if too_high >= len(classes):
            raise DataError(
                f"case {name!r}: label value {too_high} is outside the classes {classes}"
            )
    # Patches hanging over the border are padded with the darkest training intensity (air).
    train = PatchDataset(
        arrays,  # type: ignore[arg-type]
        settings.patch_size,
        settings.samples_per_epoch,
        settings.foreground_fraction,
        augment,
        names=names,
        pad_image=min(image_min),
        locations=locations,
        check_values=locations is None,  # the cache checked them when it wrote them
    )
    val = CaseDataset([recipe.name for recipe in val_recipes], load_val, classes)
    log.info(
        "volumetric data: %d training cases (%d patches per epoch), %d validation cases%s",
        len(names),
        settings.samples_per_epoch,
        len(val),
        "" if settings.cache_dir is None else f", cached in {settings.cache_dir}",
    )
    return DataBundle(train, val, list(classes), None, None, [0.0], [1.0], None, record)
