"""Read and write NIfTI-1 volumes with nibabel, keeping the affine.

A prediction written with its input's affine overlays the input exactly in a viewer (ITK-SNAP,
3D Slicer, FSLeyes): both qform and sform carry the affine (code 1, scanner coordinates), or
the sform alone when the affine has shear (gantry tilt), which a qform cannot hold. Viewers
built on ITK (Slicer, ITK-SNAP) take only orthonormal directions: they refuse or
straighten a sheared volume, so a tilted series overlays exactly in nibabel-based tools
(FSLeyes, nilearn) and after resampling to an unsheared grid, not in those.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from pixelseg._optional import import_optional
from pixelseg.errors import DataError, InvalidInputError
from pixelseg.medical.volume import Volume

__all__ = ["NIFTI_SUFFIXES", "is_nifti", "read_nifti", "write_nifti"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    """True when the file name ends in ``.nii`` or ``.nii.gz``."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def read_nifti(path: Path) -> Volume:
    """Read a 3D NIfTI file (trailing axes of length 1 are dropped).

    The array keeps the stored dtype unless the header scales it (scl_slope), then it is
    float. nibabel's ``affine`` is used: the sform when set, else the qform. NaN or infinite
    values are refused: every later step (normalisation, losses, metrics) would turn them
    into silent garbage.
    """
    nib = import_optional("nibabel", "medical")
    try:
        image = nib.load(str(path))
        array = np.asarray(image.dataobj)
    except Exception as exc:  # nibabel raises several types for truncated or bad files
        raise DataError(f"cannot read NIfTI file {path}: {exc}") from exc
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise DataError(
            f"NIfTI file {path} has shape {array.shape}; a volume must be 3D (split 4D "
            "multi-channel or time-series files into one file per volume)"
        )
    if array.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise DataError(f"NIfTI file {path} holds {bad} NaN or infinite voxels")
    return Volume(array, np.asarray(image.affine, dtype=np.float64), str(path))


def _storable(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim != 3:
        raise InvalidInputError(f"write_nifti({path}): array must be 3D, got {array.shape}")
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise InvalidInputError(f"write_nifti({path}): array holds {bad} NaN/inf voxels")
    if array.dtype == np.float16:
        return array.astype(np.float32)  # NIfTI-1 has no half-precision code
    if array.dtype in (np.int64, np.uint64):
        # Many viewers cannot open int64 NIfTI (and nibabel refuses uint64); labels and
        # counts fit in int32.
        info = np.iinfo(np.int32)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise InvalidInputError(
                f"write_nifti({path}): {array.dtype} values outside the int32 range cannot "
                "be stored"
            )
        return array.astype(np.int32)
    if array.dtype.kind not in "iuf":
        raise InvalidInputError(f"write_nifti({path}): unsupported dtype {array.dtype}")
    return array


def write_nifti(array: np.ndarray, affine: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write ``array`` ``[I, J, K]`` with ``affine`` (voxel -> RAS+ mm) to ``path``.

    ``path`` must end in ``.nii`` or ``.nii.gz`` (gzip). bool becomes uint8, float16 float32,
    int64 and uint64 int32;
    NaN/inf is refused. The file is written to a temporary name in the same folder and
    renamed, so a failure never leaves a half-written file. Returns the path.
    """
    nib = import_optional("nibabel", "medical")
    path = Path(path)
    if not is_nifti(path):
        raise InvalidInputError(f"write_nifti: {path} must end in .nii or .nii.gz")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise InvalidInputError(f"write_nifti({path}): affine must be a finite 4x4 matrix")
    data = _storable(np.asarray(array), path)
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm")
    image.set_sform(affine, code=1)
    # A qform is a rotation, zooms and a flip: it cannot hold shear; leave it unset then.
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    rotation = affine[:3, :3] / zooms
    orthogonal = np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-6)
    image.set_qform(affine if orthogonal else None, code=1 if orthogonal else 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else ".nii"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        nib.save(image, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
