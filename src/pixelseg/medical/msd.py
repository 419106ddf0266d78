"""The Medical Segmentation Decathlon (MSD) folder layout, and writing a dataset atomically.

The layout is MSD Task06_Lung's as released::

    dataset.json
    imagesTr/lung_001.nii.gz   labelsTr/lung_001.nii.gz   (training: image and label)
    imagesTs/lung_004.nii.gz                              (test: images only)

``dataset.json`` holds ``name``, ``description``, ``tensorImageSize`` ("3D"), ``modality``
(``{"0": "CT"}``: one entry per image channel), ``labels`` (``{"0": "background", "1":
"nodule"}``), ``numTraining``, ``numTest``, ``training`` (``[{"image": "./imagesTr/x.nii.gz",
"label": "./labelsTr/x.nii.gz"}]``) and ``test`` (``["./imagesTs/y.nii.gz"]``), paths relative
to the dataset folder. Training image file names carry no ``_0000`` channel suffix (that is
nnU-Net's convention, not MSD's).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pixelseg.errors import DataError

__all__ = [
    "DATASET_JSON",
    "IMAGES_TEST",
    "IMAGES_TRAIN",
    "LABELS_TRAIN",
    "atomic_directory",
    "msd_dataset_json",
    "write_dataset_json",
]

DATASET_JSON = "dataset.json"
IMAGES_TRAIN, LABELS_TRAIN, IMAGES_TEST = "imagesTr", "labelsTr", "imagesTs"
NIFTI_GZ = ".nii.gz"


def msd_dataset_json(
    name: str,
    classes: Sequence[str],
    training: Sequence[str],
    test: Sequence[str] = (),
    *,
    modality: str = "CT",
    description: str = "",
) -> dict[str, Any]:
    """The ``dataset.json`` content for cases named ``training`` (with labels) and ``test``.

    ``classes`` are the label names by value (``classes[0]`` is the background).
    """
    return {
        "name": name,
        "description": description,
        "tensorImageSize": "3D",
        "modality": {"0": modality},
        "labels": {str(value): label for value, label in enumerate(classes)},
        "numTraining": len(training),
        "numTest": len(test),
        "training": [
            {
                "image": f"./{IMAGES_TRAIN}/{case}{NIFTI_GZ}",
                "label": f"./{LABELS_TRAIN}/{case}{NIFTI_GZ}",
            }
            for case in training
        ],
        "test": [f"./{IMAGES_TEST}/{case}{NIFTI_GZ}" for case in test],
    }


def write_dataset_json(root: Path, info: dict[str, Any]) -> Path:
    """Write ``info`` as ``root/dataset.json`` (indented, like MSD's own files)."""
    path = root / DATASET_JSON
    path.write_text(json.dumps(info, indent=4) + "\n", encoding="utf-8")
    return path


@contextmanager
def atomic_directory(out_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside ``out_dir`` that becomes ``out_dir`` on success.

    On an error (or interrupt) the temporary folder is deleted, so a reader never finds a
    half-written dataset or series at ``out_dir``. ``out_dir`` must not exist or be an empty
    folder: merging into an existing dataset would mix old and new cases.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DataError(f"{out_dir} already exists and is not an empty folder; choose a new one")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        yield tmp
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
