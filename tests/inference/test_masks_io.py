"""Palettes, colourised masks, overlays, and palette-PNG round trips."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pixelseg.colormap import label_colormap
from pixelseg.errors import DataError, InvalidInputError
from pixelseg.inference import (
    IGNORE_COLOR,
    colorize,
    default_palette,
    load_index_mask,
    overlay,
    save_index_mask,
)


def test_default_palette_is_the_one_voc_colour_map():
    assert default_palette is label_colormap  # tested in tests/test_colormap.py


def test_colorize_lookup_and_ignore():
    labels = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    palette = [(10, 20, 30), (40, 50, 60), (70, 80, 90)]
    rgb = colorize(labels, palette, ignore_index=255)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == [10, 20, 30]
    assert rgb[0, 1].tolist() == [40, 50, 60]
    assert rgb[1, 0].tolist() == [70, 80, 90]
    assert rgb[1, 1].tolist() == list(IGNORE_COLOR)
    with pytest.raises(InvalidInputError, match="label 255 has no colour"):
        colorize(labels, palette)
    with pytest.raises(InvalidInputError, match="integer"):
        colorize(labels.astype(np.float32), palette)
    # Without a palette the default one is used.
    assert colorize(labels, ignore_index=255)[0, 1].tolist() == [128, 0, 0]


def test_overlay_values_by_hand():
    image = np.zeros((2, 3, 3), dtype=np.uint8)
    image[:] = (100, 50, 200)
    labels = np.array([[1, 0, 255], [2, 1, 1]])
    palette = [(0, 0, 0), (128, 0, 0), (0, 255, 0)]
    out = overlay(image, labels, palette, alpha=0.5, ignore_index=255, background=0)
    assert out[0, 0].tolist() == [114, 25, 100]  # round((100 + 128) / 2), 50 / 2, 200 / 2
    assert out[1, 0].tolist() == [
        50,
        152,
        100,
    ]  # (50 + 255) / 2 = 152.5: np.rint rounds half to even
    assert out[0, 1].tolist() == [100, 50, 200]  # background untouched
    assert out[0, 2].tolist() == [100, 50, 200]  # ignored untouched
    out3 = overlay(image, labels, palette, alpha=0.3, ignore_index=255)
    assert out3[0, 0].tolist() == [108, 35, 140]  # 0.7 * 100 + 0.3 * 128 = 108.4, ...
    assert out3[0, 1].tolist() == [70, 35, 140]  # no background given: class 0 (black) blends
    grey = overlay(np.full((2, 3), 100, np.uint8), labels, palette, alpha=1.0, ignore_index=255)
    assert grey[1, 0].tolist() == [0, 255, 0]
    with pytest.raises(InvalidInputError, match="label 255 has no colour"):
        overlay(image, labels, palette)  # 255 is only skipped when named as ignore_index
    with pytest.raises(InvalidInputError, match="does not match"):
        overlay(image, labels[:, :2], palette)


def test_index_png_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 21, size=(17, 23)).astype(np.uint8)
    labels[0, :5] = 255
    path = save_index_mask(tmp_path / "sub" / "mask.png", labels)
    with Image.open(path) as img:
        assert img.mode == "P"
        raw = np.asarray(img)
        rgb = np.asarray(img.convert("RGB"))
    np.testing.assert_array_equal(raw, labels)
    np.testing.assert_array_equal(load_index_mask(path), labels)
    palette = np.asarray(default_palette(256), dtype=np.uint8)
    np.testing.assert_array_equal(rgb, palette[labels])  # looks coloured in any viewer

    custom = [(1, 2, 3), (250, 251, 252)]
    small = np.array([[0, 1], [1, 0]])
    path2 = save_index_mask(tmp_path / "custom.png", small, custom)
    with Image.open(path2) as img:
        np.testing.assert_array_equal(np.asarray(img), small)
        assert np.asarray(img.convert("RGB"))[0, 1].tolist() == [250, 251, 252]


def test_save_index_mask_rejects_bad_labels(tmp_path):
    with pytest.raises(InvalidInputError, match="300"):
        save_index_mask(tmp_path / "m.png", np.array([[0, 300]]))
    with pytest.raises(InvalidInputError, match="2-D"):
        save_index_mask(tmp_path / "m.png", np.zeros((2, 2, 2), dtype=np.uint8))
    with pytest.raises(InvalidInputError, match="label 2 has no colour"):
        save_index_mask(tmp_path / "m.png", np.array([[0, 2]]), [(0, 0, 0), (1, 1, 1)])
    with pytest.raises(DataError, match="does not exist"):
        load_index_mask(tmp_path / "missing.png")
    Image.new("RGB", (2, 2)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="'RGB'"):
        load_index_mask(tmp_path / "rgb.png")
