from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from pixelseg.data import SegmentationFolder, build_transforms
from pixelseg.errors import DataError, InvalidInputError

CLASSES = ["bg", "a", "b"]


@pytest.fixture
def folder(tmp_path, save_image, rng):
    """Four pairs in four image formats (grey and RGB) with index masks, plus one lonely image."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    data = {}
    for stem, ext, grey in [
        ("p1", ".png", False),
        ("p2", ".JPG", False),
        ("p3", ".tif", True),
        ("p4", ".bmp", False),
    ]:
        shape = (6, 8) if grey else (6, 8, 3)
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        mask = rng.integers(0, 3, (6, 8), dtype=np.uint8)
        save_image(images / f"{stem}{ext}", img)
        save_image(masks / f"{stem}.png", mask)
        data[stem] = (images / f"{stem}{ext}", img, mask)
    save_image(images / "lonely.png", np.zeros((6, 8), np.uint8))
    return images, masks, data


def test_pairs_by_stem_and_reads_values(folder, caplog):
    images, masks, data = folder
    with caplog.at_level(logging.WARNING):
        ds = SegmentationFolder(images, masks, CLASSES)
    assert "lonely" in caplog.text and "no mask" in caplog.text
    assert ds.stems == ["p1", "p2", "p3", "p4"]
    for i, stem in enumerate(ds.stems):
        path, img, mask = data[stem]
        sample = ds[i]
        assert sample["name"] == stem and sample["image_path"] == str(path)
        assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, 6, 8)
        assert sample["mask"].dtype == torch.int64
        np.testing.assert_array_equal(sample["mask"].numpy(), mask)
        expected = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
        if img.ndim == 2:  # grey repeated to 3 channels
            np.testing.assert_allclose(sample["image"][1].numpy(), img / 255.0, atol=1e-6)
        np.testing.assert_allclose(sample["image"].permute(1, 2, 0).numpy(), expected, atol=1e-6)
        if stem != "p2":  # lossless formats keep exact pixel values
            raw = img if img.ndim == 3 else np.repeat(img[..., None], 3, 2)
            np.testing.assert_array_equal(ds.load(i)[0], raw)


def test_in_channels_one_and_default_collate(folder):
    images, masks, data = folder
    tf = build_transforms(None, mean=[0.5], std=[0.25], train=False)
    ds = SegmentationFolder(images, masks, CLASSES, in_channels=1, transform=tf)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 1, 6, 8) and batch["mask"].shape == (4, 6, 8)
    assert batch["name"] == ["p1", "p2", "p3", "p4"]
    grey = data["p3"][1]
    np.testing.assert_allclose(batch["image"][2, 0].numpy(), (grey / 255.0 - 0.5) / 0.25, atol=1e-5)


def test_palette_masks_and_default_colors(tmp_path, save_image):
    idx = np.array([[0, 1, 2], [255, 2, 1]], dtype=np.uint8)
    palette = [0, 0, 0, 200, 10, 10, 10, 200, 10] + [224, 224, 192] * 253
    save_image(tmp_path / "im" / "x.jpeg", np.zeros((2, 3, 3), np.uint8))
    save_image(tmp_path / "m" / "x.png", idx, palette=palette)
    ds = SegmentationFolder(
        tmp_path / "im", tmp_path / "m", CLASSES, ignore_index=255, mask_format="palette"
    )
    np.testing.assert_array_equal(ds[0]["mask"].numpy(), idx)
    assert ds.colors == [(0, 0, 0), (200, 10, 10), (10, 200, 10)]
    # A grey mask is refused by the palette format, with the file named.
    save_image(tmp_path / "m2" / "x.png", idx)
    ds2 = SegmentationFolder(
        tmp_path / "im", tmp_path / "m2", CLASSES, ignore_index=255, mask_format="palette"
    )
    with pytest.raises(DataError, match=r"x\.png.*P mode"):
        ds2[0]


def test_rgb_masks_vectorised_lookup_and_unknown_colours(tmp_path, save_image):
    colors = [(0, 0, 0), (255, 0, 0), (0, 0, 255)]
    classes = np.array([[0, 1, 2, 2], [1, 1, 0, 2]])
    rgb = np.array(colors, dtype=np.uint8)[classes]
    rgb[1, 3] = (9, 9, 9)  # void colour -> ignore
    save_image(tmp_path / "im" / "a.png", np.zeros((2, 4, 3), np.uint8))
    save_image(tmp_path / "m" / "a.png", rgb)
    color_map = {c: i for i, c in enumerate(colors)} | {(9, 9, 9): 255}
    ds = SegmentationFolder(
        tmp_path / "im",
        tmp_path / "m",
        CLASSES,
        mask_format="rgb",
        color_map=color_map,
        ignore_index=255,
    )
    expected = classes.copy()
    expected[1, 3] = 255
    np.testing.assert_array_equal(ds[0]["mask"].numpy(), expected)
    # Without the void colour in the map, the error names the file and the colour.
    ds = SegmentationFolder(
        tmp_path / "im", tmp_path / "m", CLASSES, mask_format="rgb", colors=colors
    )
    with pytest.raises(DataError, match=r"a\.png.*1 colours not in the color_map: \(9, 9, 9\)"):
        ds[0]


def test_value_map(tmp_path, save_image):
    raw = np.array([[0, 255], [255, 0]], dtype=np.uint8)
    save_image(tmp_path / "im" / "a.png", np.zeros((2, 2), np.uint8))
    save_image(tmp_path / "m" / "a.png", raw)
    ds = SegmentationFolder(
        tmp_path / "im", tmp_path / "m", ["membrane", "cell"], value_map={0: 0, 255: 1}
    )
    np.testing.assert_array_equal(ds[0]["mask"].numpy(), [[0, 1], [1, 0]])
    ds = SegmentationFolder(tmp_path / "im", tmp_path / "m", ["membrane", "cell"], value_map={0: 0})
    with pytest.raises(DataError, match=r"a\.png.*values \[255\].*value_map"):
        ds[0]


def test_mask_values_outside_classes(tmp_path, save_image):
    save_image(tmp_path / "im" / "a.png", np.zeros((2, 3), np.uint8))
    save_image(tmp_path / "m" / "a.png", np.array([[0, 2, 7], [9, 255, 1]], dtype=np.uint8))
    ds = SegmentationFolder(tmp_path / "im", tmp_path / "m", CLASSES, ignore_index=255)
    with pytest.raises(DataError, match=r"a\.png.*values \[7, 9\] outside the 3 classes"):
        ds[0]
    ds = SegmentationFolder(tmp_path / "im", tmp_path / "m", CLASSES)
    with pytest.raises(DataError, match=r"values \[7, 9, 255\]"):
        ds[0]


def test_corrupt_files_are_skipped_or_strict(folder, caplog):
    images, masks, _ = folder
    (images / "bad.png").write_bytes(b"garbage bytes, not an image")
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(masks / "bad.png")
    with caplog.at_level(logging.WARNING):
        ds = SegmentationFolder(images, masks, CLASSES)
    assert "bad" not in ds.stems and len(ds) == 4
    assert "bad.png" in caplog.text and "skipping" in caplog.text
    assert ds.skipped and ds.skipped[0][0].endswith("bad.png")
    with pytest.raises(DataError, match=r"bad\.png"):
        SegmentationFolder(images, masks, CLASSES, strict=True)


def test_truncated_file_raises_on_read(tmp_path, save_image, rng):
    path = save_image(tmp_path / "im" / "t.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    save_image(tmp_path / "m" / "t.png", np.zeros((32, 32), np.uint8))
    path.write_bytes(path.read_bytes()[:200])
    ds = SegmentationFolder(tmp_path / "im", tmp_path / "m", CLASSES)  # header still reads
    with pytest.raises(DataError, match=r"t\.png"):
        ds[0]


def test_size_mismatch_names_both_files(tmp_path, save_image):
    save_image(tmp_path / "im" / "a.png", np.zeros((4, 5), np.uint8))
    save_image(tmp_path / "m" / "a.png", np.zeros((4, 6), np.uint8))
    with pytest.raises(DataError, match=r"im/a\.png.* 4x5 .*m/a\.png.* 4x6"):
        SegmentationFolder(tmp_path / "im", tmp_path / "m", CLASSES)


def test_empty_dataset_lists_paths_patterns_and_counts(tmp_path, save_image):
    save_image(tmp_path / "im" / "a.png", np.zeros((2, 2), np.uint8))
    save_image(tmp_path / "m" / "b.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(DataError) as info:
        SegmentationFolder(tmp_path / "im", tmp_path / "m", CLASSES)
    msg = str(info.value)
    assert str(tmp_path / "im") in msg and str(tmp_path / "m") in msg and ".png" in msg
    assert "1 images and 1 masks without partners" in msg
    with pytest.raises(DataError, match="does not exist"):
        SegmentationFolder(tmp_path / "nope", tmp_path / "m", CLASSES)


def test_stems_select_and_order_and_missing_stems(folder):
    images, masks, _ = folder
    ds = SegmentationFolder(images, masks, CLASSES, stems=["p3", "p1"])
    assert ds.stems == ["p3", "p1"] and ds[0]["name"] == "p3"
    with pytest.raises(DataError, match=r"1 listed stems.*ghost"):
        SegmentationFolder(images, masks, CLASSES, stems=["p1", "ghost"])


def test_mask_suffix_in_the_same_folder(tmp_path, save_image, caplog):
    for stem in ["a", "b"]:
        save_image(tmp_path / f"{stem}.png", np.zeros((2, 2, 3), np.uint8))
        save_image(tmp_path / f"{stem}_mask.png", np.ones((2, 2), np.uint8))
    with caplog.at_level(logging.WARNING):
        ds = SegmentationFolder(tmp_path, tmp_path, CLASSES, mask_suffix="_mask")
    assert ds.stems == ["a", "b"] and not caplog.text
    assert ds.mask_paths[0].name == "a_mask.png"
    assert int(ds[1]["mask"].sum()) == 4


def test_duplicate_stems_and_bad_options(tmp_path, save_image):
    save_image(tmp_path / "im" / "a.png", np.zeros((2, 2), np.uint8))
    save_image(tmp_path / "im" / "a.jpg", np.zeros((2, 2), np.uint8))
    save_image(tmp_path / "m" / "a.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(DataError, match=r"share the stem 'a'"):
        SegmentationFolder(tmp_path / "im", tmp_path / "m", CLASSES)
    with pytest.raises(InvalidInputError, match=r"unknown mask_format 'pallete'.*'palette'"):
        SegmentationFolder(tmp_path / "im", tmp_path / "m", CLASSES, mask_format="pallete")
    with pytest.raises(InvalidInputError, match="ignore_index 1 is a class index"):
        SegmentationFolder(tmp_path / "im", tmp_path / "m", CLASSES, ignore_index=1)
    with pytest.raises(InvalidInputError, match="colors has 2 entries"):
        SegmentationFolder(tmp_path / "im", tmp_path / "m", CLASSES, colors=[(0, 0, 0)] * 2)
    with pytest.raises(InvalidInputError, match="needs color_map or colors"):
        SegmentationFolder(tmp_path / "im", tmp_path / "m", CLASSES, mask_format="rgb")
