"""DICOM series reading: pydicom's real test files, and series written here out of order."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from pixelseg.errors import DataError
from pixelseg.medical import read_volume, write_nifti

from .conftest import pydicom, pydicom_test_file, pydicom_test_folder, write_series

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
PIXEL = 0.661468  # CT_small.dcm's PixelSpacing


def test_single_ct_slice_is_hounsfield_in_ijk_order() -> None:
    path = pydicom_test_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    volume = read_volume(path)
    assert volume.shape == (128, 128, 1) and volume.array.dtype == np.float32
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(volume.array[:, :, 0], hu.T)  # i = column, j = row
    # one slice: k spacing from SliceThickness (no second position to measure)
    assert volume.spacing == pytest.approx((PIXEL, PIXEL, 5.0))
    # voxel (i, j) sits at IPP + i * col_spacing * row_dir + j * row_spacing * col_dir (LPS)
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    lps = LPS_TO_RAS @ volume.affine @ np.array([3, 5, 0, 1.0])
    np.testing.assert_allclose(lps[:3], ipp + np.array([3 * PIXEL, 5 * PIXEL, 0]), atol=1e-9)


def test_single_slice_affine_matches_nibabel_dicom_wrapper() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel calls its DICOM readers experimental
        from nibabel.nicom import dicomwrappers

    for name in ("CT_small.dcm", "MR_small.dcm"):
        path = pydicom_test_file(name)
        wrapper = dicomwrappers.wrapper_from_data(pydicom.dcmread(path))
        ref = np.asarray(wrapper.affine)  # LPS, voxel order (row, column, slice)
        ours = LPS_TO_RAS @ read_volume(path).affine  # back to LPS, order (column, row, slice)
        np.testing.assert_allclose(ours[:3, 0], ref[:3, 1], atol=1e-9)
        np.testing.assert_allclose(ours[:3, 1], ref[:3, 0], atol=1e-9)
        np.testing.assert_allclose(ours[:3, 3], ref[:3, 3], atol=1e-9)


def test_mr_slice_without_rescale_keeps_stored_values() -> None:
    path = pydicom_test_file("MR_small.dcm")
    ds = pydicom.dcmread(path)
    assert "RescaleSlope" not in ds
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.array[:, :, 0], ds.pixel_array.T.astype(np.float32))
    assert volume.spacing == pytest.approx((0.3125, 0.3125, 0.8))


def test_real_ct_series_with_a_202mm_gap_is_refused_naming_the_positions() -> None:
    folder = pydicom_test_folder("dicomdirtests/77654033/CT2")
    with pytest.raises(DataError, match="missing slices") as info:
        read_volume(folder)
    message = str(info.value)
    assert "202.5 mm between -99.48 and 103.02" in message and str(folder) in message


def test_real_radial_localisers_are_refused_naming_orientations() -> None:
    folder = pydicom_test_folder("dicomdirtests/98892003/MR700")
    with pytest.raises(DataError, match="mixes 7 slice orientations") as info:
        read_volume(folder)
    for name in ("4467", "4528", "4558", "4588", "4618", "4648", "4678"):
        assert name in str(info.value)
    assert "0.654" in str(info.value)  # the first localiser's row direction


def test_mixed_planes_of_other_sizes_are_refused_for_their_orientations(tmp_path: Path) -> None:
    folder = tmp_path / "localiser"
    write_series(folder, [(0, 0, z) for z in (0, 5, 10)])
    write_series(folder, [(0, y, 0) for y in (0, 5)], orientation=(1, 0, 0, 0, 0, -1), seed=1)
    for path in sorted(folder.iterdir())[:2]:  # some slices also differ in pixel size
        ds = pydicom.dcmread(path)
        ds.PixelSpacing = [1.5, 1.5]
        ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DataError, match="mixes 2 slice orientations"):
        read_volume(folder)


def test_real_folder_with_three_series_lists_them() -> None:
    folder = pydicom_test_folder("dicomdirtests/98892003/MR2")
    uids = sorted({str(pydicom.dcmread(p).SeriesInstanceUID) for p in folder.iterdir()})
    assert len(uids) == 3
    with pytest.raises(DataError, match="holds 3 DICOM series") as info:
        read_volume(folder)
    assert all(uid in str(info.value) for uid in uids)
    assert "FAST LOCALIZER" in str(info.value)
    # a chosen series still mixes orientations: refused, naming them
    three = "1.3.6.1.4.1.5962.1.1.0.0.0.1196533885.18148.0.136"
    with pytest.raises(DataError, match="mixes 3 slice orientations"):
        read_volume(folder, series_uid=three)
    single = read_volume(folder, series_uid="1.3.6.1.4.1.5962.1.1.0.0.0.1196533885.18148.0.481")
    assert single.shape == (16, 16, 1)
    with pytest.raises(DataError, match="is not in") as info:
        read_volume(folder, series_uid="1.2.3")
    assert all(uid in str(info.value) for uid in uids)


def test_shuffled_series_is_sorted_by_position_not_names_or_numbers(tmp_path: Path) -> None:
    z = [-40.0, -37.5, -35.0, -32.5, -30.0, -27.5]
    stored = write_series(tmp_path / "s", [(-158.1, -179.0, v) for v in z])
    # written shuffled, names random, InstanceNumber reversed: only positions give the order
    volume = read_volume(tmp_path / "s")
    assert volume.shape == (128, 128, 6)
    for k in range(6):
        np.testing.assert_array_equal(volume.array[:, :, k], stored[k].T.astype(np.float32) - 1024)
    assert volume.spacing == pytest.approx((PIXEL, PIXEL, 2.5))
    expected = np.array(
        [[-PIXEL, 0, 0, 158.1], [0, -PIXEL, 0, 179.0], [0, 0, 2.5, -40.0], [0, 0, 0, 1]]
    )
    np.testing.assert_allclose(volume.affine, expected, atol=1e-9)


def test_series_matches_monai_pydicom_reader_where_instance_numbers_agree(
    tmp_path: Path,
) -> None:
    # MONAI's PydicomReader sorts by InstanceNumber, so it is a reference only for series
    # whose numbers follow the positions; files are still written shuffled.
    from monai.data import PydicomReader

    z = [12.0, 14.5, 17.0, 19.5]
    write_series(tmp_path / "s", [(-158.1, -179.0, v) for v in z], reverse_numbers=False)
    volume = read_volume(tmp_path / "s")
    reader = PydicomReader()
    array, meta = reader.get_data(reader.read(str(tmp_path / "s")))
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.affine, meta["affine"], atol=1e-6)


def test_oblique_series_places_voxels_at_their_dicom_positions(tmp_path: Path) -> None:
    angle = np.deg2rad(20)
    row = np.array([np.cos(angle), np.sin(angle), 0.0])
    col = np.array([0.0, 0.0, -1.0])  # coronal-ish, tilted about z
    normal = np.cross(row, col)
    origin = np.array([10.0, -20.0, 30.0])
    positions = [origin + normal * 3.0 * k for k in range(5)]
    write_series(tmp_path / "s", positions, orientation=(*row, *col), reverse_numbers=False)
    volume = read_volume(tmp_path / "s")
    assert volume.spacing == pytest.approx((PIXEL, PIXEL, 3.0), abs=1e-5)
    for i, j, k in [(0, 0, 0), (7, 3, 2), (127, 127, 4)]:
        lps = LPS_TO_RAS @ volume.affine @ np.array([i, j, k, 1.0])
        expected = origin + normal * 3.0 * k + i * PIXEL * row + j * PIXEL * col
        np.testing.assert_allclose(lps[:3], expected, atol=1e-4)

    from monai.data import PydicomReader

    reader = PydicomReader()
    array, meta = reader.get_data(reader.read(str(tmp_path / "s")))
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.affine, meta["affine"], atol=1e-4)


def test_gantry_tilt_gives_a_sheared_affine_that_is_exact(tmp_path: Path) -> None:
    # each slice shifts 0.5 mm in y as it steps 2 mm in z: positions on a tilted line
    positions = [(0.0, 0.5 * k, 2.0 * k) for k in (2, 0, 3, 1)]
    write_series(tmp_path / "s", positions)
    volume = read_volume(tmp_path / "s")
    for k in range(4):
        ras = volume.affine @ np.array([0, 0, k, 1.0])
        np.testing.assert_allclose(ras[:3], [0.0, -0.5 * k, 2.0 * k], atol=1e-6)
    assert volume.spacing[2] == pytest.approx(np.hypot(0.5, 2.0))


def test_missing_and_uneven_slices_are_refused_naming_positions(tmp_path: Path) -> None:
    write_series(tmp_path / "gap", [(0, 0, z) for z in (0, 2.5, 5, 10, 12.5, 15)])
    with pytest.raises(DataError, match=r"missing slices: gap of 5 mm between 5 and 10 mm"):
        read_volume(tmp_path / "gap")
    write_series(tmp_path / "uneven", [(0, 0, z) for z in (0, 2.5, 5, 8, 10.5, 13)])
    with pytest.raises(DataError, match="not evenly spaced") as info:
        read_volume(tmp_path / "uneven")
    assert "slice steps range 2.5 to 3 mm" in str(info.value)
    write_series(tmp_path / "dup", [(0, 0, z) for z in (0, 2.5, 2.5, 5)])
    with pytest.raises(DataError, match=r"two slices at position 2\.5"):
        read_volume(tmp_path / "dup")
    # jitter far below 1% of the step is normal scanner rounding: accepted
    write_series(tmp_path / "jitter", [(0, 0, z) for z in (0, 2.5001, 4.9999, 7.5)])
    assert read_volume(tmp_path / "jitter").spacing[2] == pytest.approx(2.5)


def test_two_series_in_one_folder_are_listed_and_one_can_be_chosen(tmp_path: Path) -> None:
    write_series(tmp_path, [(0, 0, z) for z in (0, 1, 2)], series_uid="1.2.3.4")
    write_series(tmp_path, [(0, 0, z) for z in (0, 5)], series_uid="1.2.3.5", seed=1)
    (tmp_path / "README.txt").write_text("not DICOM")
    with pytest.raises(DataError, match="holds 2 DICOM series") as info:
        read_volume(tmp_path)
    assert "1.2.3.4 (series" in str(info.value) and "3 files" in str(info.value)
    assert "1.2.3.5 (series" in str(info.value) and "2 files" in str(info.value)
    assert read_volume(tmp_path, series_uid="1.2.3.5").shape == (128, 128, 2)


def test_ct_without_rescale_tags_is_refused_naming_the_file(tmp_path: Path) -> None:
    write_series(tmp_path, [(0, 0, 0), (0, 0, 1)], drop_rescale=True)
    with pytest.raises(DataError, match="has no RescaleSlope/RescaleIntercept") as info:
        read_volume(tmp_path)
    assert str(tmp_path) in str(info.value) and "CT file" in str(info.value)


def test_empty_or_missing_folders_are_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "sub").mkdir()
    with pytest.raises(DataError, match=r"no DICOM image files .* subfolders \['sub'\]"):
        read_volume(tmp_path)
    with pytest.raises(DataError, match="no such file or folder"):
        read_volume(tmp_path / "absent")


def test_undecodable_compression_names_the_syntax_and_the_packages() -> None:
    path = pydicom_test_file("MR_small_jpeg_ls_lossless.dcm")
    from pydicom.pixels import get_decoder

    if get_decoder(pydicom.dcmread(path).file_meta.TransferSyntaxUID).is_available:
        pytest.skip("a JPEG-LS decoder is installed here, so this file decodes")
    with pytest.raises(DataError, match="JPEG-LS Lossless Image Compression") as info:
        read_volume(path)
    assert "pylibjpeg-libjpeg" in str(info.value) and str(path) in str(info.value)


def test_decodable_compression_reads_like_the_uncompressed_file() -> None:
    rle = read_volume(pydicom_test_file("MR_small_RLE.dcm"))
    plain = read_volume(pydicom_test_file("MR_small.dcm"))
    np.testing.assert_array_equal(rle.array, plain.array)


def test_dicom_to_nifti_round_trip_keeps_array_and_affine(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    angle = np.deg2rad(10)
    row, col = np.array([np.cos(angle), 0, np.sin(angle)]), np.array([0.0, 1.0, 0.0])
    normal = np.cross(row, col)
    write_series(tmp_path / "dcm", [normal * 1.5 * k for k in range(5)], orientation=(*row, *col))
    volume = read_volume(tmp_path / "dcm")
    out = write_nifti(volume.array, volume.affine, tmp_path / "out" / "ct.nii.gz")
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-5)
    assert back.spacing == pytest.approx(volume.spacing, abs=1e-5)
    # a viewer reads the same geometry: nibabel's own header fields, both codes scanner
    header = nib.load(str(out)).header
    assert int(header["sform_code"]) == 1 and int(header["qform_code"]) == 1
    np.testing.assert_allclose(header.get_qform(), volume.affine, atol=1e-4)
    # a prediction written with the input's affine lies on the input's grid
    label = write_nifti(volume.array > 0, volume.affine, tmp_path / "out" / "label.nii.gz")
    from pixelseg.medical import check_same_grid

    check_same_grid(back, read_volume(label))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ct.nii.gz", "label.nii.gz"]
