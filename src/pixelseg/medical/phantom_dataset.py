"""Phantom datasets on disk: NIfTI pairs and MSD-layout datasets of :mod:`phantom` cases.

Images are stored as int16 HU (rounded, as scanners and MSD store CT: half the size of
float32), labels as uint8.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pixelseg.errors import InvalidInputError, unknown_choice
from pixelseg.medical.msd import (
    IMAGES_TEST,
    IMAGES_TRAIN,
    LABELS_TRAIN,
    atomic_directory,
    msd_dataset_json,
    write_dataset_json,
)
from pixelseg.medical.nifti import write_nifti
from pixelseg.medical.phantom import PHANTOM_CLASSES, make_phantom
from pixelseg.medical.volume import Volume

__all__ = ["case_seed", "make_phantom_dataset", "write_phantom_nifti"]


def _stored_hu(image: Volume) -> np.ndarray:
    """HU rounded to int16, as scanners and MSD store CT (half the size of float32)."""
    return np.clip(np.rint(image.array), -32768, 32767).astype(np.int16)


def write_phantom_nifti(
    image: Volume, label: Volume | None, out_dir: str | os.PathLike[str], name: str
) -> tuple[Path, Path | None]:
    """Write ``out_dir/images/{name}.nii.gz`` (int16 HU) and ``out_dir/labels/{name}.nii.gz``.

    The folders are the ones :class:`pixelseg.medical.datasets.NiftiPairs` reads. Returns the
    image and label paths (None without a label).
    """
    out_dir = Path(out_dir)
    image_path = write_nifti(_stored_hu(image), image.affine, out_dir / "images" / f"{name}.nii.gz")
    if label is None:
        return image_path, None
    label_path = write_nifti(label.array, label.affine, out_dir / "labels" / f"{name}.nii.gz")
    return image_path, label_path


def case_seed(seed: int, index: int) -> int:
    """The phantom seed of case ``index`` of a dataset drawn from ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def make_phantom_dataset(
    out_dir: str | os.PathLike[str],
    num_cases: int,
    seed: int,
    *,
    layout: str = "msd",
    num_test: int = 0,
    prefix: str = "lung",
    **phantom_options: Any,
) -> Path:
    """Write ``num_cases`` labelled phantoms (and ``num_test`` unlabelled ones) to ``out_dir``.

    ``layout="msd"``: MSD Task06's layout (:mod:`pixelseg.medical.msd`): ``dataset.json``,
    ``imagesTr/lung_001.nii.gz``, ``labelsTr/lung_001.nii.gz``, ``imagesTs/lung_004.nii.gz``
    (test cases numbered after the training ones). ``layout="nifti"``: ``images/``,
    ``labels/`` (:func:`write_phantom_nifti`) and ``test_images/``. Case ``n`` is
    ``make_phantom(case_seed(seed, n), **phantom_options)``. Written to a temporary folder
    and renamed: ``out_dir`` appears whole or not at all. Returns ``out_dir``.
    """
    layouts = ("msd", "nifti")
    if layout not in layouts:
        raise unknown_choice("dataset layout", layout, layouts)
    if num_cases < 1 or num_test < 0:
        raise InvalidInputError(
            f"need num_cases >= 1 and num_test >= 0, got {num_cases} and {num_test}"
        )
    names = [f"{prefix}_{n:03d}" for n in range(1, num_cases + num_test + 1)]
    folders = {
        "msd": (IMAGES_TRAIN, LABELS_TRAIN, IMAGES_TEST),
        "nifti": ("images", "labels", "test_images"),
    }[layout]
    with atomic_directory(out_dir) as tmp:
        for index, name in enumerate(names):
            image, label = make_phantom(case_seed(seed, index), **phantom_options)
            test = index >= num_cases
            write_nifti(
                _stored_hu(image), image.affine, tmp / folders[2 if test else 0] / f"{name}.nii.gz"
            )
            if not test:
                write_nifti(label.array, label.affine, tmp / folders[1] / f"{name}.nii.gz")
        if layout == "msd":
            classes = PHANTOM_CLASSES if phantom_options.get("label_lungs") else PHANTOM_CLASSES[:2]
            info = msd_dataset_json(
                "PhantomLung",
                classes,
                names[:num_cases],
                names[num_cases:],
                description=f"Synthetic chest CT phantoms (pixelseg.medical.phantom), seed {seed}",
            )
            write_dataset_json(tmp, info)
    return Path(out_dir)
