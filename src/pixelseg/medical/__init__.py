"""Medical imaging: DICOM and NIfTI volumes and CT preprocessing.

``read_volume`` / ``write_nifti`` / ``Volume`` (:mod:`pixelseg.medical.io`) read a DICOM series
or a NIfTI file into ``array [I, J, K]`` with a voxel -> RAS+ mm affine, and write NIfTI
predictions that overlay their input. :mod:`pixelseg.medical.preprocess` holds windowing,
normalisation, resampling, lung extraction and cropping. pydicom, nibabel and scipy are
imported on first use (``pip install 'pixelseg[medical]'``).

Import these from their modules (they are not loaded by ``import pixelseg.medical``):
:mod:`~pixelseg.medical.phantom` (synthetic chest CT, the default data),
:mod:`~pixelseg.medical.phantom_dataset` (phantoms as NIfTI pairs or an MSD dataset),
:mod:`~pixelseg.medical.dicom_writer` (a volume as a CT DICOM series),
:mod:`~pixelseg.medical.datasets` (``NiftiPairs``, ``MSDDataset``),
:mod:`~pixelseg.medical.prepare` (DICOM/NIfTI folders to an MSD dataset) and
:mod:`~pixelseg.medical.patches` (axis order, the foreground-oversampling patch sampler and
the torch ``PatchDataset``) and :mod:`~pixelseg.medical.case_cache` (preprocessed cases on
disk, read memory-mapped).
"""

from __future__ import annotations

from pixelseg.medical.io import (
    Volume,
    check_label_values,
    check_same_grid,
    read_volume,
    write_nifti,
)

__all__ = ["Volume", "check_label_values", "check_same_grid", "read_volume", "write_nifti"]
