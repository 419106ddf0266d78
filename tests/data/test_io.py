from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pixelseg.data import list_images, read_image, read_mask
from pixelseg.errors import DataError, InvalidInputError


def test_read_image_grey_to_three_channels_repeats(tmp_path, save_image, rng):
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    path = save_image(tmp_path / "g.png", grey)
    out = read_image(path, in_channels=3)
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], grey)
    np.testing.assert_array_equal(read_image(path, in_channels=1)[:, :, 0], grey)


def test_read_image_rgb_to_grey_uses_luminance(tmp_path, save_image, rng):
    rgb = rng.integers(0, 256, (6, 4, 3), dtype=np.uint8)
    path = save_image(tmp_path / "c.bmp", rgb)
    out = read_image(path, in_channels=1)
    assert out.shape == (6, 4, 1)
    # ITU-R 601 luma, as PIL computes it (integer rounding within 1).
    expected = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    assert np.abs(out[:, :, 0].astype(float) - expected).max() <= 1.0
    np.testing.assert_array_equal(read_image(path, 3), rgb)


def test_read_image_16bit_tiff_is_scaled(tmp_path):
    arr = np.array([[0, 257, 65535], [1000, 30000, 65280]], dtype=np.uint16)
    path = tmp_path / "deep.tif"
    Image.fromarray(arr).save(path)
    out = read_image(path, in_channels=1)[:, :, 0]
    np.testing.assert_array_equal(out, np.round(arr / 257.0).astype(np.uint8))


def test_read_image_rgba_drops_alpha(tmp_path, rng):
    rgba = rng.integers(0, 256, (3, 3, 4), dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    np.testing.assert_array_equal(read_image(path, 3), rgba[..., :3])


def test_read_image_corrupt_names_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"definitely not a png")
    with pytest.raises(DataError, match=r"broken\.png"):
        read_image(bad)
    with pytest.raises(InvalidInputError, match="in_channels"):
        read_image(bad, in_channels=2)


def test_read_image_truncated_png_names_file(tmp_path, save_image, rng):
    path = save_image(tmp_path / "trunc.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"trunc\.png"):
        read_image(path)


def test_read_mask_palette_returns_indices_not_colours(tmp_path, save_image):
    idx = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253
    path = save_image(tmp_path / "p.png", idx, palette=palette)
    np.testing.assert_array_equal(read_mask(path, "index"), idx)
    np.testing.assert_array_equal(read_mask(path, "palette"), idx)
    grey = save_image(tmp_path / "l.png", idx)
    with pytest.raises(DataError, match=r"l\.png.*mode 'L'"):
        read_mask(grey, "palette")


def test_read_mask_colour_image_as_index_is_an_error(tmp_path, save_image):
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (10, 20, 30)
    path = save_image(tmp_path / "c.png", rgb)
    with pytest.raises(DataError, match="mask_format='rgb'"):
        read_mask(path, "index")
    same = save_image(tmp_path / "s.png", np.repeat(np.array([[3, 4]], np.uint8)[..., None], 3, 2))
    np.testing.assert_array_equal(read_mask(same, "index"), [[3, 4]])


def test_list_images_files_folders_globs(tmp_path, save_image):
    px = np.zeros((2, 2), np.uint8)
    for name in ["b.png", "a.JPG", "c.tiff", "notes.txt"]:
        if name.endswith(".txt"):
            (tmp_path / "dir" / name).write_text("x")
        else:
            save_image(tmp_path / "dir" / name, px)
    save_image(tmp_path / "other" / "z.bmp", px)
    save_image(tmp_path / "other" / "deep" / "y.png", px)
    single = save_image(tmp_path / "single.png", px)

    got = list_images([str(single), tmp_path / "dir", str(tmp_path / "other" / "**" / "*.png")])
    names = [p.name for p in got]
    assert names == ["single.png", "a.JPG", "b.png", "c.tiff", "y.png"]
    # Duplicates from overlapping inputs appear once.
    assert len(list_images([tmp_path / "dir", tmp_path / "dir" / "b.png"])) == 3


def test_list_images_errors_name_the_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"'.*empty'.*'.*nothing\*\.png'"):
        list_images([tmp_path / "empty", str(tmp_path / "nothing*.png")])
    txt = tmp_path / "a.txt"
    txt.write_text("x")
    with pytest.raises(DataError, match=r"a\.txt.*not an image"):
        list_images([txt])
