"""Fixtures for the medical tests: pydicom's real test files and DICOM series written here."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")


def pydicom_test_file(name: str) -> Path:
    """A file shipped inside pydicom (never downloaded), or skip the test naming it."""
    from pydicom.data import get_testdata_file

    try:
        found = get_testdata_file(name, download=False)
    except TypeError:  # pydicom < 3 has no download argument and never downloads
        found = get_testdata_file(name)
    if found is None or not Path(found).exists():
        pytest.skip(f"pydicom {pydicom.__version__} does not ship the test file {name}")
    return Path(found)


def pydicom_test_folder(relative: str) -> Path:
    """A folder under pydicom/data/test_files, or skip naming it."""
    import pydicom.data

    folder = Path(pydicom.data.__file__).parent / "test_files" / relative
    if not folder.is_dir():
        pytest.skip(f"pydicom {pydicom.__version__} does not ship test_files/{relative}")
    return folder


def write_series(
    folder: Path,
    positions: Sequence[Sequence[float]],
    *,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    series_uid: str = "1.2.826.0.1.3680043.8.498.1",
    seed: int = 0,
    shuffle: bool = True,
    drop_rescale: bool = False,
    reverse_numbers: bool = True,
) -> list[np.ndarray]:
    """Copy CT_small.dcm once per position into ``folder``; return the stored pixels per slice.

    Each slice's pixels are CT_small's plus ``10 * index`` (index in ``positions`` order), so
    a test can tell which slice landed where. Files get random names, are written in
    shuffled order, and (``reverse_numbers``) get InstanceNumbers in reverse, so neither
    names nor numbers give the order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = pydicom.dcmread(pydicom_test_file("CT_small.dcm"))
    order = rng.permutation(len(positions)) if shuffle else np.arange(len(positions))
    stored = [base.pixel_array.astype(np.int16) + np.int16(10 * i) for i in range(len(positions))]
    for index in order:
        ds = copy.deepcopy(base)
        ds.PixelData = stored[index].tobytes()
        ds.ImagePositionPatient = [f"{v:.6f}" for v in positions[index]]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = f"{series_uid}.{index + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = len(positions) - index if reverse_numbers else index + 1
        if drop_rescale:
            del ds.RescaleSlope
            del ds.RescaleIntercept
        name = f"img{rng.integers(1_000_000):06d}_{index}.dcm"
        ds.save_as(folder / name, enforce_file_format=True)
    return stored


@pytest.fixture
def series_writer() -> Callable[..., list[np.ndarray]]:
    return write_series
