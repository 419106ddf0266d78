"""Write a :class:`Volume` as a CT DICOM series: one single-frame file per k slice.

The files are what :func:`pixelseg.medical.read_volume` (and scanners' PACS) expect: CT Image
Storage, Explicit VR Little Endian, signed int16 pixels with RescaleSlope/Intercept to HU,
ImagePositionPatient and ImageOrientationPatient in DICOM's LPS coordinates (the RAS+ affine
with x and y negated), PixelSpacing (between rows, between columns) and SliceThickness from
the affine, and fresh Study, Series, Frame of Reference and SOP Instance UIDs.

Reading the series back gives the same affine and the array within half a RescaleSlope,
with one exception DICOM imposes: readers order slices along the slice normal (row
direction x column direction), so a volume whose k axis runs against it (a left-handed
affine, e.g. orientation "LAS") comes back with k reversed: the same voxels at the same
places, indexed from the other end.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pixelseg._optional import import_optional
from pixelseg.errors import InvalidInputError
from pixelseg.medical.msd import atomic_directory
from pixelseg.medical.volume import Volume

__all__ = ["write_dicom_series"]

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _ds(values: Sequence[float]) -> list[object]:
    """DICOM decimal strings (at most 16 characters each, as the standard allows)."""
    from pydicom.valuerep import DS

    return [DS(float(v), auto_format=True) for v in values]


def _stored(volume: Volume, slope: float, intercept: float) -> np.ndarray:
    """``volume.array`` as int16 stored values, refusing what int16 cannot hold."""
    hu = np.asarray(volume.array, dtype=np.float64)
    if not np.isfinite(hu).all():
        raise InvalidInputError(f"volume {volume.source or '<memory>'} holds NaN or inf voxels")
    stored = np.rint((hu - intercept) / slope)
    low, high = float(stored.min()), float(stored.max())
    if low < -32768 or high > 32767:
        raise InvalidInputError(
            f"volume {volume.source or '<memory>'} spans {hu.min():g}..{hu.max():g}, which "
            f"rescale (slope {slope:g}, intercept {intercept:g}) maps to {low:g}..{high:g}, "
            "outside int16; use a larger slope"
        )
    return stored.astype("<i2")


def write_dicom_series(
    volume: Volume,
    out_dir: str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    rescale: tuple[float, float] = (1.0, -1024.0),
    shuffle: bool = False,
    seed: int = 0,
    patient_id: str = "PHANTOM",
    description: str = "pixelseg phantom",
) -> Path:
    """Write ``volume`` (HU, ``[I, J, K]``) to ``out_dir`` as a CT series; returns ``out_dir``.

    Args:
        volume: its affine must be orthogonal within the slice (i and j perpendicular);
            the k step may be oblique (gantry tilt).
        out_dir: a new (or empty) folder; written to a temporary one and renamed.
        series_uid: the SeriesInstanceUID; by default a new random one. The study, frame of
            reference and SOP instance UIDs derive from it, so one UID gives identical files.
        rescale: (RescaleSlope, RescaleIntercept): HU = stored * slope + intercept; stored
            values are the rounded inverse, which must fit in int16.
        shuffle: name the files in a random order (drawn from ``seed``) instead of
            ``slice_0000.dcm`` upwards, to test readers that must sort by position.
    """
    import_optional("pydicom", "medical")  # names the extra when pydicom is missing
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import (
        PYDICOM_IMPLEMENTATION_UID,
        CTImageStorage,
        ExplicitVRLittleEndian,
        generate_uid,
    )

    slope, intercept = (float(v) for v in rescale)
    if not (np.isfinite([slope, intercept]).all() and slope > 0):
        raise InvalidInputError(f"rescale must be (slope > 0, intercept), got {rescale!r}")
    lps = LPS_FROM_RAS @ volume.affine
    col_spacing, row_spacing, _ = volume.spacing  # i steps along a row, j down a column
    row_dir, col_dir = lps[:3, 0] / col_spacing, lps[:3, 1] / row_spacing
    if abs(float(row_dir @ col_dir)) > 1e-6:
        raise InvalidInputError(
            f"volume {volume.source or '<memory>'}: i and j axes are not perpendicular in its "
            "affine; DICOM slices need a rectangular pixel grid"
        )
    stored = _stored(volume, slope, intercept)
    series_uid = str(series_uid or generate_uid())
    study_uid = generate_uid(entropy_srcs=[series_uid, "study"])
    frame_uid = generate_uid(entropy_srcs=[series_uid, "frame"])
    normal = np.cross(row_dir, col_dir)
    num_slices = volume.shape[2]
    names = np.arange(num_slices)
    if shuffle:
        names = np.random.default_rng(seed).permutation(num_slices)
    with atomic_directory(out_dir) as tmp:
        for k in range(num_slices):
            sop_uid = generate_uid(entropy_srcs=[series_uid, str(k)])
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CTImageStorage
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
            ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uid
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
            ds.FrameOfReferenceUID = frame_uid
            ds.Modality, ds.SeriesDescription, ds.Manufacturer = "CT", description, "pixelseg"
            ds.PatientName, ds.PatientID = patient_id, patient_id
            ds.PatientBirthDate = ds.PatientSex = ds.StudyDate = ds.StudyTime = ""
            ds.ReferringPhysicianName = ds.AccessionNumber = ds.StudyID = ""
            ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
            ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
            position = (lps @ np.array([0.0, 0.0, k, 1.0]))[:3]
            ds.ImagePositionPatient = _ds(position)
            ds.ImageOrientationPatient = _ds([*row_dir, *col_dir])
            ds.SliceLocation = _ds([position @ normal])[0]
            ds.PixelSpacing = _ds([row_spacing, col_spacing])
            ds.SliceThickness = _ds([abs(float(lps[:3, 2] @ normal))])[0]
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleSlope, ds.RescaleIntercept = _ds([slope, intercept])
            ds.RescaleType = "HU"
            ds.WindowCenter, ds.WindowWidth = _ds([-600.0, 1500.0])  # the lung window
            ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # [rows=J, cols=I]
            ds.save_as(tmp / f"slice_{names[k]:04d}.dcm", enforce_file_format=True)
    return Path(out_dir)
