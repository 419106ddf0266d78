"""Medical volume IO: ``read_volume`` for DICOM folders/files and NIfTI, ``write_nifti``.

``read_volume(path).array`` is ``[I, J, K]`` in NIfTI voxel order and ``.affine`` maps it to
RAS+ millimetres, whatever the source, so DICOM -> :func:`write_nifti` -> ``read_volume``
gives back the same array and affine. The DICOM rules live in :mod:`pixelseg.medical.dicom`,
the NIfTI ones in :mod:`pixelseg.medical.nifti`.
"""

from __future__ import annotations

import os
from pathlib import Path

from pixelseg.errors import DataError
from pixelseg.medical.dicom import read_dicom
from pixelseg.medical.nifti import is_nifti, read_nifti, write_nifti
from pixelseg.medical.volume import Volume, check_label_values, check_same_grid

__all__ = ["Volume", "check_label_values", "check_same_grid", "read_volume", "write_nifti"]


def read_volume(path: str | os.PathLike[str], series_uid: str | None = None) -> Volume:
    """Read a DICOM series folder, a single DICOM file, or a ``.nii``/``.nii.gz`` file.

    Args:
        path: the folder of one DICOM series (files directly inside it; others such as
            DICOMDIR or text files are skipped), one DICOM file, or a NIfTI file.
        series_uid: the SeriesInstanceUID to read when the folder holds several series.

    Returns:
        A :class:`Volume`: ``array [I, J, K]`` (float32 Hounsfield units for CT), ``affine``
        (4x4, voxel -> RAS+ mm), ``spacing`` (mm per i, j, k).

    Raises:
        DataError: naming the file or folder, for everything the DICOM and NIfTI rules
            refuse (several series, mixed orientations, missing slices, uneven spacing, CT
            without rescale tags, an undecodable transfer syntax, NaN in a NIfTI).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"no such file or folder: {path}")
    if path.is_file() and is_nifti(path):
        if series_uid is not None:
            raise DataError(f"series_uid applies to DICOM only, but {path} is a NIfTI file")
        return read_nifti(path)
    return read_dicom(path, series_uid)
