"""NIfTI reading and writing, grid checks, and the light import of pixelseg.medical."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pixelseg._optional import MissingDependencyError, import_optional
from pixelseg.errors import DataError, InvalidInputError
from pixelseg.medical import (
    Volume,
    check_label_values,
    check_same_grid,
    read_volume,
    write_nifti,
)

nib = pytest.importorskip("nibabel")

OBLIQUE = np.array(
    [
        [0.0, -0.9, 0.1, 12.5],
        [0.8, 0.0, 0.0, -30.0],
        [0.0, 0.05, 2.99, 7.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def _rotation_affine() -> np.ndarray:
    # an orthogonal direction matrix with anisotropic zooms, as DICOM gives
    c, s = np.cos(0.3), np.sin(0.3)
    rotation = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation * [0.7, 0.8, 2.5]
    affine[:3, 3] = [-100.0, 40.0, 12.0]
    return affine


@pytest.mark.parametrize(
    ("dtype", "stored"),
    [
        (np.int16, np.int16),
        (np.float32, np.float32),
        (np.float16, np.float32),
        (np.bool_, np.uint8),
        (np.int64, np.int32),
        (np.uint64, np.int32),
    ],
)
def test_round_trip_keeps_values_affine_and_sensible_dtypes(
    tmp_path: Path, dtype: type, stored: type
) -> None:
    rng = np.random.default_rng(0)
    array = (rng.random((5, 6, 7)) * 100).astype(dtype)
    affine = _rotation_affine()
    path = write_nifti(array, affine, tmp_path / "v.nii.gz")
    volume = read_volume(path)
    assert volume.array.dtype == stored
    np.testing.assert_array_equal(volume.array, array.astype(stored))
    np.testing.assert_allclose(volume.affine, affine, atol=1e-5)
    assert volume.spacing == pytest.approx((0.7, 0.8, 2.5), abs=1e-6)
    assert volume.source == str(path)
    header = nib.load(str(path)).header
    assert header.get_xyzt_units()[0] == "mm"
    assert int(header["qform_code"]) == 1 and int(header["sform_code"]) == 1
    np.testing.assert_allclose(header.get_qform(), affine, atol=1e-5)


def test_sheared_affine_goes_to_the_sform_only(tmp_path: Path) -> None:
    path = write_nifti(np.zeros((3, 4, 5), np.float32), OBLIQUE, tmp_path / "v.nii")
    header = nib.load(str(path)).header
    assert int(header["sform_code"]) == 1 and int(header["qform_code"]) == 0
    np.testing.assert_allclose(read_volume(path).affine, OBLIQUE, atol=1e-6)


def test_nifti_with_nan_is_refused_naming_the_file(tmp_path: Path) -> None:
    array = np.zeros((4, 4, 4), np.float32)
    array[1, 2, 3] = np.nan
    array[0, 0, 0] = np.inf
    path = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    with pytest.raises(DataError, match=r"bad.nii.gz holds 2 NaN or infinite voxels"):
        read_volume(path)


def test_nifti_shapes_trailing_ones_dropped_4d_refused(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.ones((3, 4, 5, 1), np.int16), np.eye(4)), str(tmp_path / "a.nii"))
    assert read_volume(tmp_path / "a.nii").shape == (3, 4, 5)
    nib.save(nib.Nifti1Image(np.ones((3, 4, 5, 2), np.int16), np.eye(4)), str(tmp_path / "b.nii"))
    with pytest.raises(DataError, match=r"b.nii has shape \(3, 4, 5, 2\)"):
        read_volume(tmp_path / "b.nii")
    (tmp_path / "c.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(DataError, match=r"cannot read NIfTI file .*c\.nii\.gz"):
        read_volume(tmp_path / "c.nii.gz")


def test_bad_writes_leave_nothing_in_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InvalidInputError, match=r"must end in \.nii or \.nii\.gz"):
        write_nifti(np.zeros((2, 2, 2)), np.eye(4), out / "x.png")
    with pytest.raises(InvalidInputError, match="1 NaN/inf voxels"):
        write_nifti(np.array([[[np.nan, 0.0]]]), np.eye(4), out / "x.nii.gz")
    with pytest.raises(InvalidInputError, match="finite 4x4"):
        write_nifti(np.zeros((2, 2, 2)), np.eye(3), out / "x.nii.gz")
    with pytest.raises(InvalidInputError, match="int32 range"):
        write_nifti(np.full((2, 2, 2), 2**40), np.eye(4), out / "x.nii.gz")

    def failing_save(image: object, filename: str) -> None:
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_nifti(np.zeros((2, 2, 2)), np.eye(4), out / "x.nii.gz")
    assert list(out.iterdir()) == []


def test_grid_and_label_checks_name_both_files() -> None:
    image = Volume(np.zeros((4, 5, 6), np.float32), _rotation_affine(), "ct.nii.gz")
    label = Volume(np.zeros((4, 5, 6), np.uint8), _rotation_affine(), "seg.nii.gz")
    check_same_grid(image, label)
    with pytest.raises(DataError, match=r"ct.nii.gz and label seg.nii.gz differ in shape"):
        check_same_grid(image, Volume(np.zeros((4, 5, 7)), image.affine, "seg.nii.gz"))
    moved = _rotation_affine()
    moved[0, 3] += 0.5
    with pytest.raises(DataError, match=r"differ in affine \(largest difference 0.5 mm\)"):
        check_same_grid(image, Volume(label.array, moved, "seg.nii.gz"))

    values = np.zeros((4, 5, 6), np.int16)
    values[0, 0, :3] = [1, 2, 7]
    values[1, 1, 1] = -1
    check_label_values(Volume(values.clip(0, 2), image.affine, "seg.nii.gz"), num_classes=3)
    with pytest.raises(
        DataError, match=r"seg\.nii\.gz holds values -1, 7 outside the classes 0\.\.2"
    ):
        check_label_values(Volume(values, image.affine, "seg.nii.gz"), num_classes=3)
    with pytest.raises(DataError, match=r"holds values 0\.5"):
        check_label_values(Volume(values * 0 + 0.5, image.affine, "s"), num_classes=3)


def test_volume_rejects_bad_geometry() -> None:
    with pytest.raises(InvalidInputError, match="must be 3D"):
        Volume(np.zeros((2, 2)), np.eye(4))
    with pytest.raises(InvalidInputError, match="singular"):
        Volume(np.zeros((2, 2, 2)), np.diag([1.0, 0.0, 1.0, 1.0]))


def test_import_is_light_and_missing_extras_name_the_extra() -> None:
    code = (
        "import sys, pixelseg, pixelseg.medical, pixelseg.metrics; "
        "print(sorted(m for m in ('pydicom', 'nibabel', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    with pytest.raises(MissingDependencyError, match=r"pip install 'pixelseg\[medical\]'"):
        import_optional("pixelseg_no_such_module", "medical")
