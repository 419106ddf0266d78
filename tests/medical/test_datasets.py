"""Volumetric datasets: MSD and NIfTI-pair folders written by the phantom writer and by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pixelseg.errors import DataError, InvalidInputError
from pixelseg.medical import write_nifti
from pixelseg.medical.datasets import MSDDataset, NiftiPairs, VolumeCase
from pixelseg.medical.phantom import make_phantom
from pixelseg.medical.phantom_dataset import case_seed, make_phantom_dataset, write_phantom_nifti

TINY = {"shape": (24, 24, 12), "spacing": (6.0, 6.0, 10.0), "nodule_mm": (8.0, 14.0)}
AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])


@pytest.fixture(scope="module")
def msd_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("msd") / "Task06_Phantom"
    return make_phantom_dataset(root, num_cases=2, seed=7, num_test=1, **TINY)


def test_phantom_dataset_follows_msd_task06(msd_root: Path) -> None:
    info = json.loads((msd_root / "dataset.json").read_text())
    assert info["modality"] == {"0": "CT"} and info["tensorImageSize"] == "3D"
    assert info["labels"] == {"0": "background", "1": "nodule"}
    assert info["numTraining"] == 2 and info["numTest"] == 1
    assert info["training"][0] == {
        "image": "./imagesTr/lung_001.nii.gz",
        "label": "./labelsTr/lung_001.nii.gz",
    }
    assert info["test"] == ["./imagesTs/lung_003.nii.gz"]
    assert sorted(p.name for p in msd_root.iterdir()) == [
        "dataset.json",
        "imagesTr",
        "imagesTs",
        "labelsTr",
    ]
    assert sorted(p.name for p in (msd_root / "imagesTr").iterdir()) == [
        "lung_001.nii.gz",
        "lung_002.nii.gz",
    ]
    assert not list(msd_root.parent.glob(".*"))  # no temporary folder left


def test_msd_dataset_reads_the_phantoms_lazily(msd_root: Path) -> None:
    train = MSDDataset(msd_root)
    assert len(train) == 2 and train.names == ["lung_001", "lung_002"]
    assert train.classes == ("background", "nodule")
    case = train[1]
    assert isinstance(case, VolumeCase) and case.name == "lung_002"
    image, label = make_phantom(case_seed(7, 1), **TINY)
    assert case.image.array.dtype == np.int16  # HU stored as whole numbers, like MSD's
    np.testing.assert_array_equal(case.image.array, np.rint(image.array))
    np.testing.assert_array_equal(case.label.array, label.array)
    np.testing.assert_allclose(case.image.affine, image.affine)
    assert train[-1].name == "lung_002"
    with pytest.raises(IndexError):
        train[2]
    test = MSDDataset(msd_root, split="test")
    assert test.names == ["lung_003"] and test[0].label is None


def test_nifti_layout_and_nifti_pairs(tmp_path: Path) -> None:
    root = make_phantom_dataset(
        tmp_path / "nifti", 2, seed=1, layout="nifti", label_lungs=True, **TINY
    )
    assert sorted(p.name for p in root.iterdir()) == ["images", "labels"]
    pairs = NiftiPairs(root / "images", root / "labels", classes=("bg", "nodule", "lung"))
    assert pairs.names == ["lung_001", "lung_002"] and pairs.classes == ("bg", "nodule", "lung")
    assert set(np.unique(pairs[0].label.array).tolist()) == {0, 1, 2}
    # the default classes are binary: a lung label (2) is refused naming the file
    with pytest.raises(DataError, match=r"lung_001.nii.gz holds values 2 .*background"):
        NiftiPairs(root / "images", root / "labels")[0]
    images_only = NiftiPairs(root / "images")
    assert images_only[1].label is None
    with pytest.raises(InvalidInputError, match="dataset layout"):
        make_phantom_dataset(tmp_path / "x", 1, seed=0, layout="nnunet")
    assert not (tmp_path / "x").exists()


def test_unmatched_images_and_labels_are_listed(tmp_path: Path) -> None:
    image, label = make_phantom(0, **TINY)
    for name in ("a", "b", "c"):
        write_phantom_nifti(image, label if name != "c" else None, tmp_path, name)
    write_nifti(label.array, label.affine, tmp_path / "labels" / "z.nii.gz")
    (tmp_path / "images" / "notes.txt").write_text("ignored")
    with pytest.raises(DataError) as info:
        NiftiPairs(tmp_path / "images", tmp_path / "labels")
    assert "1 images have no label" in str(info.value) and ": c" in str(info.value)
    assert "1 labels have no image" in str(info.value) and ": z" in str(info.value)
    with pytest.raises(DataError, match="does not exist"):
        NiftiPairs(tmp_path / "nothing")
    with pytest.raises(DataError, match=r"no \*_0000\.nii\.gz images"):
        NiftiPairs(tmp_path / "images", image_suffix="_0000.nii.gz")


def test_nnunet_suffix_pairs(tmp_path: Path) -> None:
    array = np.zeros((4, 4, 3), dtype=np.int16)
    write_nifti(array, AFFINE, tmp_path / "img" / "case1_0000.nii.gz")
    write_nifti(array.astype(np.uint8), AFFINE, tmp_path / "lab" / "case1.nii.gz")
    pairs = NiftiPairs(tmp_path / "img", tmp_path / "lab", image_suffix="_0000.nii.gz")
    assert pairs.names == ["case1"] and pairs[0].label is not None


def test_bad_cases_name_their_files(tmp_path: Path) -> None:
    image = np.zeros((6, 5, 4), dtype=np.float32)
    label = np.zeros((6, 5, 4), dtype=np.uint8)
    write_nifti(image, AFFINE, tmp_path / "img" / "shape.nii.gz")
    write_nifti(label[:, :, :3], AFFINE, tmp_path / "lab" / "shape.nii.gz")
    write_nifti(image, AFFINE, tmp_path / "img" / "shift.nii.gz")
    shifted = AFFINE.copy()
    shifted[0, 3] = 1.0
    write_nifti(label, shifted, tmp_path / "lab" / "shift.nii.gz")
    nan = image.copy()
    nan[2, 2, 2] = np.nan
    nib = pytest.importorskip("nibabel")  # write_nifti refuses NaN, as it should
    nib.save(nib.Nifti1Image(nan, AFFINE), tmp_path / "img" / "nan.nii.gz")
    write_nifti(label, AFFINE, tmp_path / "lab" / "nan.nii.gz")
    write_nifti(image, AFFINE, tmp_path / "img" / "values.nii.gz")
    write_nifti(label + 255, AFFINE, tmp_path / "lab" / "values.nii.gz")
    pairs = NiftiPairs(tmp_path / "img", tmp_path / "lab")
    assert pairs.names == ["nan", "shape", "shift", "values"]
    with pytest.raises(DataError, match=r"nan.nii.gz holds 1 NaN"):
        pairs[0]
    with pytest.raises(DataError, match=r"img/shape.nii.gz and label .*lab/shape.nii.gz differ"):
        pairs[1]
    with pytest.raises(DataError, match=r"shift.nii.gz differ in affine"):
        pairs[2]
    with pytest.raises(DataError, match=r"values.nii.gz holds values 255 outside"):
        pairs[3]


def _write_msd(root: Path, info: dict, files: list[str]) -> Path:
    root.mkdir(parents=True)
    for name in files:
        write_nifti(np.zeros((4, 4, 3), dtype=np.uint8), AFFINE, root / name)
    (root / "dataset.json").write_text(json.dumps(info))
    return root


GOOD = {
    "name": "T",
    "modality": {"0": "CT"},
    "labels": {"0": "background", "1": "tumour"},
    "numTraining": 1,
    "training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}],
    "test": ["./imagesTs/b.nii.gz"],
}
FILES = ["imagesTr/a.nii.gz", "labelsTr/a.nii.gz", "imagesTs/b.nii.gz"]


@pytest.mark.parametrize(
    ("change", "files", "message"),
    [
        ({"numTraining": 2}, FILES, "numTraining is 2 but 'training' lists 1"),
        ({"labels": {"0": "bg", "2": "x"}}, FILES, r"keys must be 0\.\.1"),
        ({"labels": {"zero": "bg"}}, FILES, "keys must be integers"),
        ({"modality": {"0": "T1", "1": "T2"}}, FILES, "multi-channel"),
        ({"training": [{"image": "./imagesTr/a.nii.gz"}]}, FILES, "must give image and label"),
        ({"training": "x"}, FILES, "must be a list"),
        ({}, FILES[:1], r"lists 1 files that do not exist: .*labelsTr/a.nii.gz"),
        (
            {"numTraining": 2, "training": GOOD["training"] * 2},
            FILES,
            "more than once: a",
        ),
    ],
)
def test_msd_json_problems_are_named(
    tmp_path: Path, change: dict, files: list[str], message: str
) -> None:
    root = _write_msd(tmp_path / "T", {**GOOD, **change}, files)
    with pytest.raises(DataError, match=message):
        MSDDataset(root)


def test_msd_missing_or_broken_json(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"dataset\.json does not exist"):
        MSDDataset(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        MSDDataset(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"0": "bg"}}))
    with pytest.raises(DataError, match=r"lacks the keys \['modality', 'training'\]"):
        MSDDataset(tmp_path)
    with pytest.raises(InvalidInputError, match="unknown MSD split 'val'"):
        MSDDataset(tmp_path, split="val")
    root = _write_msd(tmp_path / "ok", GOOD, FILES)
    assert MSDDataset(root).classes == ("background", "tumour")
    assert MSDDataset(root, "test").names == ["b"]
    root = _write_msd(tmp_path / "count", {**GOOD, "numTest": 3}, FILES)
    with pytest.raises(DataError, match="numTest is 3 but 'test' lists 1 cases"):
        MSDDataset(root, "test")
