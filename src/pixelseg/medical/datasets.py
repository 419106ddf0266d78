"""Volumetric datasets: NIfTI image/label folders and MSD-layout datasets, read lazily.

Both give :class:`VolumeCase` items (``image`` and ``label`` :class:`Volume`, ``[I, J, K]``
in NIfTI voxel order with their affines), read from disk on each ``dataset[index]``; the file
lists are checked up front, so a missing or unmatched file fails at construction, naming it,
not hours into training. Each case read is checked: the label on the image's grid
(:func:`check_same_grid`), label values within the classes (:func:`check_label_values`), and
no NaN in the image (:func:`read_nifti` refuses it). Turning a case into model arrays
(``[C, D, H, W]``) is :func:`pixelseg.medical.patches.volume_to_model`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixelseg.errors import DataError, InvalidInputError, unknown_choice
from pixelseg.medical.io import read_volume
from pixelseg.medical.msd import DATASET_JSON
from pixelseg.medical.volume import Volume, check_label_values, check_same_grid

__all__ = ["MSDDataset", "NiftiPairs", "VolumeCase"]

BINARY_CLASSES = ("background", "foreground")


@dataclass(frozen=True)
class VolumeCase:
    """One case: its name, the image and (for labelled cases) the label on the same grid."""

    name: str
    image: Volume
    label: Volume | None


def _listing(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


class _VolumeFiles:
    """The shared part: a list of (name, image path, label path or None), read on access."""

    def __init__(self, files: Sequence[tuple[str, Path, Path | None]], classes: Sequence[str]):
        if len(classes) < 1:
            raise InvalidInputError("classes must name at least the background (class 0)")
        self.files = list(files)
        self.classes = tuple(str(c) for c in classes)

    @property
    def names(self) -> list[str]:
        """The case names, in index order."""
        return [name for name, _, _ in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> VolumeCase:
        if not -len(self.files) <= index < len(self.files):
            raise IndexError(f"case index {index} is out of range for {len(self.files)} cases")
        name, image_path, label_path = self.files[index]
        image = read_volume(image_path)
        label = None
        if label_path is not None:
            label = read_volume(label_path)
            check_same_grid(image, label)
            if label.array.dtype.kind not in "iuf":
                raise DataError(f"label volume {label_path} has dtype {label.array.dtype}")
            try:
                check_label_values(label, len(self.classes))
            except DataError as exc:
                raise DataError(f"{exc} ({', '.join(self.classes)})") from None
        return VolumeCase(name, image, label)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} cases, classes={list(self.classes)})"


class NiftiPairs(_VolumeFiles):
    """Images in one folder, labels of the same file names in another (or no labels).

    A case is ``{name}{image_suffix}`` in ``images_dir`` with ``{name}{label_suffix}`` in
    ``labels_dir``; e.g. nnU-Net's ``case_0000.nii.gz`` / ``case.nii.gz`` is
    ``image_suffix="_0000.nii.gz"``. An image without a label, or a label without an image,
    is a :class:`DataError` listing the names. ``classes`` name the label values (0 first);
    the default is binary, and a label holding other values is refused naming its file.
    Files not ending in the suffix (and hidden files) are ignored.
    """

    def __init__(
        self,
        images_dir: str | os.PathLike[str],
        labels_dir: str | os.PathLike[str] | None = None,
        *,
        image_suffix: str = ".nii.gz",
        label_suffix: str = ".nii.gz",
        classes: Sequence[str] = BINARY_CLASSES,
    ) -> None:
        self.images_dir = Path(images_dir)
        self.labels_dir = None if labels_dir is None else Path(labels_dir)
        images = self._scan(self.images_dir, image_suffix, "images")
        if not images:
            raise DataError(f"no *{image_suffix} images in {self.images_dir}")
        labels: dict[str, Path] = {}
        if self.labels_dir is not None:
            labels = self._scan(self.labels_dir, label_suffix, "labels")
            unlabelled = sorted(set(images) - set(labels))
            orphans = sorted(set(labels) - set(images))
            if unlabelled or orphans:
                parts = []
                if unlabelled:
                    parts.append(
                        f"{len(unlabelled)} images have no label in {self.labels_dir}: "
                        f"{_listing(unlabelled)}"
                    )
                if orphans:
                    parts.append(
                        f"{len(orphans)} labels have no image in {self.images_dir}: "
                        f"{_listing(orphans)}"
                    )
                raise DataError("; ".join(parts))
        files = [(name, images[name], labels.get(name)) for name in sorted(images)]
        super().__init__(files, classes)

    @staticmethod
    def _scan(folder: Path, suffix: str, what: str) -> dict[str, Path]:
        if not folder.is_dir():
            raise DataError(f"{what} folder {folder} does not exist")
        return {
            p.name[: -len(suffix)]: p
            for p in sorted(folder.iterdir())
            if p.is_file() and p.name.endswith(suffix) and not p.name.startswith(".")
        }


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path} does not exist: an MSD dataset folder holds a {DATASET_JSON}")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(info, dict):
        raise DataError(f"{path} must hold a JSON object, got {type(info).__name__}")
    return info


def _msd_classes(path: Path, labels: Any) -> tuple[str, ...]:
    if not isinstance(labels, dict) or not labels:
        raise DataError(f"{path}: 'labels' must map values to names, got {labels!r}")
    try:
        by_value = {int(k): str(name) for k, name in labels.items()}
    except ValueError:
        raise DataError(f"{path}: 'labels' keys must be integers, got {list(labels)}") from None
    if sorted(by_value) != list(range(len(labels))):
        raise DataError(f"{path}: 'labels' keys must be 0..{len(labels) - 1}, got {list(labels)}")
    return tuple(by_value[v] for v in range(len(by_value)))


class MSDDataset(_VolumeFiles):
    """A Medical Segmentation Decathlon dataset folder (:mod:`pixelseg.medical.msd`).

    ``split="train"`` gives the ``training`` entries (image and label), ``split="test"``
    the ``test`` entries (images only, ``label`` None). ``dataset.json`` is validated up
    front: required keys, ``labels`` keyed 0..N-1 (they become :attr:`classes`), one
    modality (multi-channel tasks are refused), ``numTraining`` (``numTest``) equal to the
    number of ``training`` (``test``) entries, and every listed file present (the missing ones are named).
    """

    SPLITS = ("train", "test")

    def __init__(self, root: str | os.PathLike[str], split: str = "train") -> None:
        if split not in self.SPLITS:
            raise unknown_choice("MSD split", split, self.SPLITS)
        self.root, self.split = Path(root), split
        path = self.root / DATASET_JSON
        info = _load_json(path)
        key = "training" if split == "train" else "test"
        missing_keys = [k for k in ("labels", "modality", key) if k not in info]
        if missing_keys:
            raise DataError(f"{path} lacks the keys {missing_keys}; it has {sorted(info)}")
        self.info = info
        classes = _msd_classes(path, info["labels"])
        modality = info["modality"]
        if not isinstance(modality, dict) or len(modality) != 1:
            raise DataError(
                f"{path}: 'modality' {modality!r} must name exactly one channel; multi-channel "
                "(4D) MSD tasks are not supported"
            )
        entries = info[key]
        if not isinstance(entries, list):
            raise DataError(f"{path}: {key!r} must be a list, got {type(entries).__name__}")
        count = "numTraining" if split == "train" else "numTest"
        if info.get(count, len(entries)) != len(entries):
            raise DataError(
                f"{path}: {count} is {info[count]} but {key!r} lists {len(entries)} cases"
            )
        files = [self._entry(path, entry, split == "train") for entry in entries]
        missing = [str(p) for _, image, label in files for p in (image, label) if p is not None]
        missing = [p for p in missing if not Path(p).is_file()]
        if missing:
            raise DataError(
                f"{path} lists {len(missing)} files that do not exist: {_listing(missing)}"
            )
        names = [name for name, _, _ in files]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise DataError(f"{path} lists these cases more than once: {_listing(repeated)}")
        super().__init__(files, classes)

    def _entry(self, path: Path, entry: Any, labelled: bool) -> tuple[str, Path, Path | None]:
        if isinstance(entry, str):  # MSD's test entries are plain paths
            entry = {"image": entry}
        need = ("image", "label") if labelled else ("image",)
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in need):
            raise DataError(f"{path}: entry {entry!r} must give {' and '.join(need)} paths")
        image = self.root / entry["image"]
        name = image.name.removesuffix(".gz").removesuffix(".nii")
        return name, image, self.root / entry["label"] if labelled else None
