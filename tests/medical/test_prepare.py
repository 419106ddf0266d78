"""prepare_msd: DICOM series and NIfTI files (with labels) into an MSD-layout dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pixelseg.errors import DataError
from pixelseg.medical import write_nifti
from pixelseg.medical.datasets import MSDDataset
from pixelseg.medical.dicom_writer import write_dicom_series
from pixelseg.medical.phantom import make_phantom
from pixelseg.medical.prepare import find_cases, prepare_msd

SMALL = ((24, 20, 10), (6.0, 7.0, 10.0))


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path, dict]:
    """scans/: a DICOM series folder 'p1' and a NIfTI 'p2'; labels/: p1 and p2 labels."""
    p1, p1_label = make_phantom(1, *SMALL)
    p2, p2_label = make_phantom(2, *SMALL, orientation="LPS")
    scans, labels = tmp_path / "scans", tmp_path / "labels"
    write_dicom_series(p1, scans / "p1")
    write_nifti(p2.array, p2.affine, scans / "p2.nii.gz")
    (scans / ".DS_Store").write_text("")
    (scans / "notes.txt").write_text("")
    write_nifti(p1_label.array, p1_label.affine, labels / "p1.nii.gz")
    write_nifti(p2_label.array, p2_label.affine, labels / "p2.nii")
    return scans, labels, {"p1": (p1, p1_label), "p2": (p2, p2_label)}


def test_dicom_and_nifti_cases_become_an_msd_dataset(tmp_path: Path, inputs) -> None:
    scans, labels, truth = inputs
    assert sorted(find_cases(scans)) == ["p1", "p2"]
    root = prepare_msd(scans, tmp_path / "out", labels=labels, classes=("background", "nodule"))
    info = json.loads((root / "dataset.json").read_text())
    assert info["numTraining"] == 2 and info["labels"] == {"0": "background", "1": "nodule"}
    dataset = MSDDataset(root)
    assert dataset.names == ["p1", "p2"]
    for case in dataset:
        image, label = truth[case.name]
        np.testing.assert_allclose(case.image.affine, image.affine, atol=1e-5)
        np.testing.assert_allclose(case.image.array, image.array, atol=0.5)
        np.testing.assert_array_equal(case.label.array, label.array)
    # the DICOM case held whole HU: stored as int16; the float NIfTI stays float32
    assert dataset[0].image.array.dtype == np.int16
    assert dataset[1].image.array.dtype == np.float32
    assert dataset[0].label.array.dtype == np.uint8


def test_cases_without_labels_become_test_cases(tmp_path: Path, inputs) -> None:
    scans, labels, _ = inputs
    (labels / "p2.nii").unlink()
    root = prepare_msd([scans / "p2.nii.gz", scans / "p1"], tmp_path / "out", labels=labels)
    assert MSDDataset(root).names == ["p1"]
    assert MSDDataset(root, "test").names == ["p2"]
    everything_test = prepare_msd(scans, tmp_path / "unlabelled")
    assert len(MSDDataset(everything_test, "test")) == 2
    assert len(MSDDataset(everything_test)) == 0


def test_problems_are_named_and_leave_nothing(tmp_path: Path, inputs) -> None:
    scans, labels, truth = inputs
    write_nifti(np.zeros((2, 2, 2), dtype=np.uint8), np.eye(4), labels / "p9.nii.gz")
    with pytest.raises(DataError, match="match no input case: p9"):
        prepare_msd(scans, tmp_path / "out", labels=labels)
    (labels / "p9.nii.gz").unlink()
    _, p2_label = truth["p2"]
    write_nifti(p2_label.array[:, :, :-1], p2_label.affine, labels / "p2.nii")
    with pytest.raises(DataError, match=r"p2.nii\.gz and label .*p2.nii differ in shape"):
        prepare_msd(scans, tmp_path / "out", labels=labels)
    write_nifti(p2_label.array * 3, p2_label.affine, labels / "p2.nii")
    with pytest.raises(DataError, match=r"p2.nii holds values 3 outside the classes 0..1"):
        prepare_msd(scans, tmp_path / "out", labels=labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels", "scans"]
    write_nifti(p2_label.array, p2_label.affine, scans / "p1.nii")
    with pytest.raises(DataError, match="two inputs make case 'p1'"):
        find_cases(scans)
    with pytest.raises(DataError, match="holds no NIfTI files and no subfolders"):
        find_cases(_empty(tmp_path))
    with pytest.raises(DataError, match="do not exist"):
        find_cases([scans / "nope.nii.gz"])


def _empty(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "readme.txt").write_text("")
    return folder
