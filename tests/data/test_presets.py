from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pixelseg.data import (
    CAMVID_CLASSES,
    DATASET_INFO,
    PRESETS,
    VOC_CLASSES,
    VOC_COLORS,
    build_transforms,
    camvid,
    membrane,
    voc,
)
from pixelseg.errors import DataError, InvalidInputError


def test_registry_and_info_are_consistent():
    assert set(PRESETS) == {"camvid", "voc", "membrane"}
    assert set(PRESETS) <= set(DATASET_INFO)
    for name, info in DATASET_INFO.items():
        assert len(info.colors) == len(info.classes), name
        assert len(info.mean) == len(info.std) == info.in_channels, name
    assert DATASET_INFO["camvid"].ignore_index == 11 and len(CAMVID_CLASSES) == 11
    assert DATASET_INFO["voc"].ignore_index == 255 and len(VOC_CLASSES) == 21
    assert VOC_COLORS[1] == (128, 0, 0) and VOC_COLORS[15] == (192, 128, 128)


def _voc_tree(root, save_image, rng):
    """A three-image VOC layout: palette PNG masks with a 255 border, like the real ones."""
    base = root / "VOCdevkit" / "VOC2012"
    palette = [c for color in VOC_COLORS for c in color] + [224, 224, 192] * (256 - len(VOC_COLORS))
    masks = {}
    for stem in ["2007_000001", "2007_000002", "2007_000003"]:
        save_image(
            base / "JPEGImages" / f"{stem}.jpg", rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
        )
        mask = rng.integers(0, 21, (10, 12), dtype=np.uint8)
        mask[0, :] = 255
        save_image(base / "SegmentationClass" / f"{stem}.png", mask, palette=palette)
        masks[stem] = mask
    sets = base / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("2007_000003\n2007_000001\n")
    (sets / "val.txt").write_text("2007_000002\n")
    return masks


def test_voc_layout(tmp_path, save_image, rng):
    masks = _voc_tree(tmp_path, save_image, rng)
    train = voc(tmp_path, "train")  # finds VOCdevkit/VOC2012 below root
    assert train.stems == ["2007_000003", "2007_000001"] and train.ignore_index == 255
    sample = train[0]
    np.testing.assert_array_equal(sample["mask"].numpy(), masks["2007_000003"])
    assert sample["image"].shape == (3, 10, 12)
    assert train.colors == VOC_COLORS
    assert len(voc(tmp_path / "VOCdevkit" / "VOC2012", "val")) == 1
    with pytest.raises(DataError, match=r"trainval\.txt"):
        voc(tmp_path, "trainval")
    with pytest.raises(InvalidInputError, match=r"unknown voc split 'test'.*train, trainval, val"):
        voc(tmp_path, "test")


def test_missing_layout_names_the_folder(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match=r"trainannot.*CamVid layout.*holds: train"):
        camvid(tmp_path, "train")
    with pytest.raises(DataError, match=r"image.*ISBI membrane layout"):
        membrane(tmp_path)


@pytest.mark.realdata
def test_camvid_real_data(shared_dir):
    root = shared_dir("camvid")
    train = camvid(root, "train")
    val = camvid(root, "val", transform=build_transforms(None, mean="imagenet", train=False))
    assert len(train) == 367 and len(val) == 101
    assert not set(train.stems) & set(val.stems)
    sample = train[0]
    assert sample["image"].shape == (3, 360, 480) and sample["mask"].shape == (360, 480)
    reference = np.asarray(Image.open(root / "trainannot" / f"{train.stems[0]}.png"))
    np.testing.assert_array_equal(sample["mask"].numpy(), reference)
    values = set(np.unique(val[5]["mask"].numpy()).tolist())
    assert values <= set(range(12)) and len(values) > 3
    if not (root / "test").is_dir():
        with pytest.raises(DataError, match="test"):
            camvid(root, "test")


@pytest.mark.realdata
def test_membrane_real_data(shared_dir):
    root = shared_dir("membrane")
    every = membrane(root)
    assert len(every) == 25 and every.in_channels == 1
    sample = every[0]
    assert sample["image"].shape == (1, 512, 512)
    mask = sample["mask"].numpy()
    raw = np.asarray(Image.open(root / "label" / f"{every.stems[0]}.png"))
    np.testing.assert_array_equal(mask, (raw == 255).astype(np.int64))
    assert 0.6 < mask.mean() < 0.9  # the README: 78% cell interior
    train, val = membrane(root, "train", seed=1), membrane(root, "val", seed=1)
    assert len(train) == 20 and len(val) == 5
    assert set(train.stems) | set(val.stems) == set(every.stems)
    assert membrane(root, "val", seed=1).stems == val.stems
