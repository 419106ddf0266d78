"""Convert DICOM series and NIfTI files (and label NIfTIs) into an MSD-layout dataset.

The dataset (:mod:`pixelseg.medical.msd`) is what :class:`MSDDataset` and the volumetric
task read: every image as ``.nii.gz`` with its affine, whatever it came from, so training
never touches DICOM. Each case is checked on the way (label on the image's grid, label values
within the classes) and the folder is written atomically: a bad case leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pixelseg.errors import DataError
from pixelseg.medical.io import read_volume
from pixelseg.medical.msd import (
    IMAGES_TEST,
    IMAGES_TRAIN,
    LABELS_TRAIN,
    atomic_directory,
    msd_dataset_json,
    write_dataset_json,
)
from pixelseg.medical.nifti import NIFTI_SUFFIXES, is_nifti, write_nifti
from pixelseg.medical.volume import check_label_values, check_same_grid

__all__ = ["find_cases", "prepare_msd"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def _case_name(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES[::-1]:  # .nii.gz before .nii
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_cases(inputs: PathLike | Sequence[PathLike]) -> dict[str, Path]:
    """The cases in ``inputs``, by name: ``{name: NIfTI file or DICOM series folder}``.

    ``inputs`` is a folder whose NIfTI files (``x.nii.gz`` is case ``x``) and subfolders
    (each one DICOM series, named after the subfolder) are the cases, or a list of such
    files and series folders. Hidden entries are skipped. Two inputs of one name are refused.
    """
    if isinstance(inputs, str | os.PathLike):
        folder = Path(inputs)
        if not folder.is_dir():
            raise DataError(f"inputs {folder} is not a folder")
        paths = [
            p
            for p in sorted(folder.iterdir())
            if not p.name.startswith(".") and (p.is_dir() or is_nifti(p))
        ]
        if not paths:
            raise DataError(
                f"{folder} holds no NIfTI files and no subfolders (one per DICOM series); "
                f"to convert the one series in it, pass [{str(folder)!r}]"
            )
    else:
        paths = [Path(p) for p in inputs]
        absent = [str(p) for p in paths if not p.exists()]
        if absent:
            raise DataError(f"these inputs do not exist: {', '.join(absent)}")
    cases: dict[str, Path] = {}
    for path in paths:
        name = _case_name(path)
        if name in cases:
            raise DataError(f"two inputs make case {name!r}: {cases[name]} and {path}")
        cases[name] = path
    return cases


def _stored_image(array: np.ndarray) -> np.ndarray:
    """int16 when every value is a whole number that fits (CT HU), else float32."""
    if array.dtype.kind in "iu":
        return array
    whole = np.array_equal(array, np.rint(array))
    if whole and array.size and array.min() >= -32768 and array.max() <= 32767:
        return array.astype(np.int16)
    return array.astype(np.float32)


def _stored_label(array: np.ndarray) -> np.ndarray:
    return array.astype(np.uint8 if array.max(initial=0) < 256 else np.int32)


def prepare_msd(
    inputs: PathLike | Sequence[PathLike],
    out_dir: PathLike,
    *,
    labels: PathLike | None = None,
    classes: Sequence[str] = ("background", "foreground"),
    name: str = "Dataset",
    modality: str = "CT",
    description: str = "",
) -> Path:
    """Write the cases of ``inputs`` (:func:`find_cases`) as an MSD dataset in ``out_dir``.

    ``labels`` is a folder of label NIfTIs named like the cases (``x.nii.gz`` or
    ``x.nii``); a case with a label becomes a training case (``imagesTr``, ``labelsTr``),
    one without a test case (``imagesTs``); a label matching no case is an error.
    ``classes`` name the label values (0 first) and go to ``dataset.json``. Images are
    stored as int16 when they hold whole numbers (CT HU), else float32; labels as uint8.
    Returns ``out_dir``, which must not exist or be empty.
    """
    cases = find_cases(inputs)
    label_files: dict[str, Path] = {}
    if labels is not None:
        folder = Path(labels)
        if not folder.is_dir():
            raise DataError(f"labels folder {folder} does not exist")
        for path in sorted(folder.iterdir()):
            if is_nifti(path) and not path.name.startswith("."):
                label_files[_case_name(path)] = path
        orphans = sorted(set(label_files) - set(cases))
        if orphans:
            raise DataError(f"labels in {folder} match no input case: {', '.join(orphans)}")
    training = [c for c in cases if c in label_files]
    test = [c for c in cases if c not in label_files]
    with atomic_directory(out_dir) as tmp:
        for case, path in cases.items():
            image = read_volume(path)
            folder = IMAGES_TRAIN if case in label_files else IMAGES_TEST
            write_nifti(_stored_image(image.array), image.affine, tmp / folder / f"{case}.nii.gz")
            if case in label_files:
                label = read_volume(label_files[case])
                check_same_grid(image, label)
                check_label_values(label, len(classes))
                write_nifti(
                    _stored_label(label.array), image.affine, tmp / LABELS_TRAIN / f"{case}.nii.gz"
                )
            logger.info("%s: %s %s", case, path, image.shape)
        info = msd_dataset_json(
            name, classes, training, test, modality=modality, description=description
        )
        write_dataset_json(tmp, info)
    return Path(out_dir)
