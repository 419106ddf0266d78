"""Writing a CT DICOM series: read_volume gives the same array and affine back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pixelseg.errors import DataError, InvalidInputError
from pixelseg.medical import Volume, read_volume
from pixelseg.medical.dicom_writer import write_dicom_series
from pixelseg.medical.phantom import make_phantom

from .conftest import pydicom

SMALL = ((24, 20, 12), (6.0, 7.0, 10.0))


def test_round_trip_shuffled_gives_the_same_array_and_affine(tmp_path: Path) -> None:
    image, _ = make_phantom(1, *SMALL)
    folder = write_dicom_series(image, tmp_path / "ct", shuffle=True, seed=3)
    files = sorted(folder.iterdir())
    assert len(files) == 12
    numbers = [int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber) for f in files]
    assert numbers != sorted(numbers)  # file names do not follow the slice order
    volume = read_volume(folder)
    np.testing.assert_allclose(volume.affine, image.affine, atol=1e-6)
    assert np.abs(volume.array - image.array).max() <= 0.5  # HU rounded to whole numbers
    np.testing.assert_array_equal(volume.array, np.rint(image.array))


def test_headers_make_a_proper_ct_series(tmp_path: Path) -> None:
    image, _ = make_phantom(1, *SMALL)
    folder = write_dicom_series(image, tmp_path / "ct", series_uid="1.2.3.4")
    headers = [pydicom.dcmread(f) for f in sorted(folder.iterdir())]
    first = headers[0]
    assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert first.SOPClassUID == pydicom.uid.CTImageStorage and first.Modality == "CT"
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
    assert {h.SeriesInstanceUID for h in headers} == {"1.2.3.4"}
    assert len({h.StudyInstanceUID for h in headers}) == 1
    assert len({h.SOPInstanceUID for h in headers}) == 12
    assert first.pixel_array.dtype == np.int16 and first.PixelRepresentation == 1
    assert (first.Rows, first.Columns) == (20, 24)
    assert [float(v) for v in first.PixelSpacing] == [7.0, 6.0]  # rows apart, columns apart
    assert float(first.SliceThickness) == 10.0
    assert (float(first.RescaleSlope), float(first.RescaleIntercept)) == (1.0, -1024.0)
    # RAS (1, 0, 0) / (0, 1, 0) is LPS (-1, 0, 0) / (0, -1, 0)
    assert [float(v) for v in first.ImageOrientationPatient] == [-1, 0, 0, 0, -1, 0]
    corner = image.affine @ [0, 0, 0, 1.0]
    np.testing.assert_allclose(
        [float(v) for v in first.ImagePositionPatient], [-corner[0], -corner[1], corner[2]]
    )
    # a given UID gives identical files
    again = write_dicom_series(image, tmp_path / "again", series_uid="1.2.3.4")
    for a, b in zip(sorted(folder.iterdir()), sorted(again.iterdir()), strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_oblique_grid_and_fractional_slope(tmp_path: Path) -> None:
    c, s = np.cos(0.4), np.sin(0.4)
    direction = np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])
    image, _ = make_phantom(2, *SMALL, orientation=direction)
    folder = write_dicom_series(image, tmp_path / "ct", rescale=(0.25, -1100.0), shuffle=True)
    volume = read_volume(folder)
    np.testing.assert_allclose(volume.affine, image.affine, atol=1e-4)
    assert np.abs(volume.array - image.array).max() <= 0.125 + 1e-3


def test_left_handed_volume_comes_back_with_k_reversed(tmp_path: Path) -> None:
    image, _ = make_phantom(1, *SMALL, orientation="LAS")
    volume = read_volume(write_dicom_series(image, tmp_path / "ct"))
    flip = np.eye(4)
    flip[2, 2], flip[2, 3] = -1.0, SMALL[0][2] - 1
    np.testing.assert_allclose(volume.affine, image.affine @ flip, atol=1e-6)
    np.testing.assert_array_equal(volume.array, np.rint(image.array[:, :, ::-1]))


def test_refusals_leave_nothing_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image, _ = make_phantom(1, *SMALL)
    with pytest.raises(InvalidInputError, match="outside int16"):
        write_dicom_series(Volume(image.array * 100, image.affine), tmp_path / "a")
    with pytest.raises(InvalidInputError, match="slope > 0"):
        write_dicom_series(image, tmp_path / "a", rescale=(0.0, 0.0))
    nan = image.array.copy()
    nan[1, 1, 1] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        write_dicom_series(Volume(nan, image.affine, "scan.nii"), tmp_path / "a")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.dcm").write_bytes(b"")
    with pytest.raises(DataError, match="not an empty folder"):
        write_dicom_series(image, tmp_path / "full")
    calls = []

    def failing_save(self, *args, **kwargs) -> None:
        calls.append(1)
        if len(calls) == 5:
            raise OSError("disk full")
        original(self, *args, **kwargs)

    original = pydicom.dataset.Dataset.save_as
    monkeypatch.setattr(pydicom.dataset.Dataset, "save_as", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_dicom_series(image, tmp_path / "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]
