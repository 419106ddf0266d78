"""Preprocessing: windows, normalisation, resampling, lung extraction, cropping."""

from __future__ import annotations

import numpy as np
import pytest

from pixelseg.errors import InvalidInputError
from pixelseg.medical import Volume
from pixelseg.medical.preprocess import (
    WINDOW_PRESETS,
    crop,
    crop_to_foreground,
    foreground_box,
    lung_mask,
    percentile_normalize,
    resample_image,
    resample_label,
    window,
    zscore,
)

pytest.importorskip("scipy")

OBLIQUE = np.array(
    [[0.0, -0.9, 0.1, 12.5], [0.8, 0.0, 0.0, -30.0], [0.0, 0.05, 2.99, 7.0], [0, 0, 0, 1.0]]
)


def test_window_presets_and_custom_by_hand() -> None:
    assert WINDOW_PRESETS == {
        "lung": (-600.0, 1500.0),
        "mediastinum": (40.0, 400.0),
        "bone": (300.0, 1500.0),
    }
    hu = np.array([-2000.0, -1350.0, -600.0, 150.0, 1000.0])
    np.testing.assert_allclose(window(hu, "lung"), [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(
        window(np.array([-160.0, 40.0, 140.0, 240.0]), "mediastinum"), [0, 0.5, 0.75, 1]
    )
    np.testing.assert_allclose(window(np.array([-450.0, 300.0, 675.0]), "bone"), [0, 0.5, 0.75])
    out = window(np.array([[0, 50, 100]], dtype=np.int16), center=50, width=100)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0, 0.5, 1]])
    with pytest.raises(InvalidInputError, match="Did you mean 'lung'"):
        window(hu, "lungs")
    with pytest.raises(InvalidInputError, match="not both"):
        window(hu, "lung", center=1, width=2)
    with pytest.raises(InvalidInputError, match="width > 0"):
        window(hu, center=0, width=0)


def test_zscore_and_percentiles_by_hand() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    mask = x < 50
    z = zscore(x, mask)
    std = np.std([1, 2, 3, 4])
    np.testing.assert_allclose(z, (x - 2.5) / std, rtol=1e-6)
    np.testing.assert_allclose(zscore(x), (x - x.mean()) / x.std(), rtol=1e-6)
    np.testing.assert_array_equal(zscore(np.full(4, 7.0)), np.zeros(4))  # no NaN
    values = np.arange(101, dtype=np.float64)  # percentile p is the value p
    out = percentile_normalize(values, 10, 90)
    np.testing.assert_allclose(out[[0, 10, 50, 90, 100]], [0, 0, 0.5, 1, 1], atol=1e-6)
    np.testing.assert_array_equal(percentile_normalize(np.full(5, 3.0)), np.zeros(5))
    with pytest.raises(InvalidInputError, match="lower < upper"):
        percentile_normalize(values, 90, 10)
    with pytest.raises(InvalidInputError, match="no True voxel"):
        zscore(x, np.zeros(5, dtype=bool))


def _ramp_check(volume: Volume, out: Volume, border: float) -> float:
    """Largest error of ``out`` against the ramp 2i + 0.5j - 3k of ``volume``'s indices, over
    new voxels whose centres map at least ``border`` old voxels inside the input."""
    ni, nj, nk = np.meshgrid(*(np.arange(n) for n in out.shape), indexing="ij")
    world = out.affine @ np.stack([ni, nj, nk, np.ones_like(ni)]).reshape(4, -1)
    old = np.linalg.solve(volume.affine, world)[:3]
    inside = ((old >= border) & (old <= np.array(volume.shape)[:, None] - 1 - border)).all(0)
    expected = 2.0 * old[0] + 0.5 * old[1] - 3.0 * old[2]
    return float(np.abs(out.array.ravel()[inside] - expected[inside]).max())


def test_resample_image_reproduces_a_linear_ramp_and_keeps_positions() -> None:
    i, j, k = np.meshgrid(np.arange(24), np.arange(20), np.arange(16), indexing="ij")
    volume = Volume((2.0 * i + 0.5 * j - 3.0 * k).astype(np.float32), OBLIQUE, "ramp")
    old = volume.spacing
    target = (old[0] * 0.5, old[1] * 2.0, old[2] * 0.75)
    linear = resample_image(volume, target, "linear")
    assert linear.shape == (48, 10, 21) and linear.array.dtype == np.float32
    assert linear.spacing == pytest.approx(target)
    # linear interpolation of a linear function is exact, up to the array's last voxel
    assert _ramp_check(volume, linear, border=0) < 1e-4
    # cubic B-splines reproduce it away from the edges (the boundary condition bends them)
    cubic = resample_image(volume, target, "cubic")
    np.testing.assert_allclose(cubic.affine, linear.affine)
    assert _ramp_check(volume, cubic, border=5) < 1e-2
    with pytest.raises(InvalidInputError, match="Did you mean 'linear'"):
        resample_image(volume, target, "lineal")
    with pytest.raises(InvalidInputError, match="3 positive mm values"):
        resample_image(volume, (1.0, 0.0, 1.0))


def test_resample_label_is_nearest_in_world_space_and_never_interpolates() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(9, 7, 5)).astype(np.uint8)
    volume = Volume(labels, OBLIQUE, "labels")
    target = (0.37, 1.9, 1.3)
    out = resample_label(volume, target)
    assert out.array.dtype == np.uint8 and set(np.unique(out.array)) <= {0, 1, 2, 3}
    # reference: every new voxel centre, through both affines, to the nearest old voxel
    ni, nj, nk = np.meshgrid(*(np.arange(n) for n in out.shape), indexing="ij")
    world = out.affine @ np.stack([ni, nj, nk, np.ones_like(ni)]).reshape(4, -1)
    old = np.linalg.solve(volume.affine, world)[:3]
    nearest = np.minimum(
        np.floor(old + 0.5 + 1e-9).astype(int), np.array(labels.shape)[:, None] - 1
    )
    np.testing.assert_array_equal(out.array.ravel(), labels[tuple(nearest)])
    # image and label resampling land on the same grid
    image = resample_image(Volume(labels.astype(np.float32), OBLIQUE), target)
    assert image.shape == out.shape
    np.testing.assert_allclose(image.affine, out.affine)


def _chest_phantom() -> tuple[np.ndarray, np.ndarray]:
    """A CT-like [I, J, K] phantom and its true lung mask (vessels and a nodule inside)."""
    shape = (64, 56, 20)  # at (1.5, 1.5, 3.0) mm
    i, j, k = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    hu = np.full(shape, -1000.0)
    body = ((i - 32) / 28) ** 2 + ((j - 26) / 20) ** 2 <= 1
    hu[body] = 40.0
    hu[:, 50:53, :] = 200.0  # the table, with air between it and the body
    lungs = np.zeros(shape, dtype=bool)
    for ci in (19.0, 45.0):  # the left lung is cut by the first slice (k = 0)
        lungs |= ((i - ci) / 9) ** 2 + ((j - 26) / 12) ** 2 + (
            (k - (8 if ci < 30 else 10)) / 9
        ) ** 2 <= 1
    hu[lungs] = -850.0
    # a vessel along k, inside the lung (not in its end slices, where it would fill them)
    vessel = lungs & ((i - 19) ** 2 + (j - 26) ** 2 <= 2) & (k >= 2) & (k <= 14)
    hu[vessel] = 30.0
    hu[45, 24, 10] = 60.0  # a nodule
    hu[32, 40, 12] = -900.0  # a gas bubble in the body: far smaller than a lung
    hu[31:34, 39:42, 11:14] = -900.0
    rng = np.random.default_rng(0)
    hu += rng.normal(0, 15, shape)
    return hu, lungs


def test_lung_mask_finds_both_lungs_filled_and_nothing_else() -> None:
    hu, lungs = _chest_phantom()
    mask = lung_mask(hu, spacing=(1.5, 1.5, 3.0))
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, lungs)
    # the vessel is a hole in the air mask that the filling closes
    assert (hu[lungs] > -320).sum() > 0 and mask[19, 26, 8]
    # lungs joined by an airway are one component; the gas bubble, second largest now, is
    # far below min_fraction of it and stays out
    joined = hu.copy()
    joined[19:46, 25:28, 9:12] = -900.0
    mask = lung_mask(joined, spacing=(1.5, 1.5, 3.0))
    assert mask[lungs].all() and mask[19:46, 25:28, 9:12].all() and not mask[31:34, 39:42].any()
    assert lung_mask(joined, (1.5, 1.5, 3.0), min_fraction=0.0)[31:34, 39:42, 11:14].all()
    empty = lung_mask(np.full((8, 8, 4), 40.0), (1.0, 1.0, 1.0))
    assert not empty.any()


def test_lung_mask_leaves_out_a_ring_closed_around_the_mediastinum() -> None:
    hu, lungs = _chest_phantom()
    # In three slices an anterior bridge (a thin junction line the closing joins) and the
    # bronchi behind close a ring of air around the tissue between the lungs.
    hu[19:46, 17:19, 9:12] = -900.0
    hu[19:46, 34:36, 9:12] = -900.0
    between = np.zeros_like(lungs)
    between[30:35, 22:31, 9:12] = True
    assert not (between & lungs).any()
    # The phantom is small (96 mm across): a 100 mm^2 limit plays the default's 3000 mm^2.
    mask = lung_mask(hu, (1.5, 1.5, 3.0), max_slice_hole_mm2=100.0)
    assert mask[lungs].all() and not mask[between].any()
    assert lung_mask(hu, (1.5, 1.5, 3.0), max_slice_hole_mm2=1e6)[between].all()
    with pytest.raises(InvalidInputError, match="3 positive spacings"):
        lung_mask(hu, (1.5, 1.5))


def test_crop_to_foreground_keeps_world_positions() -> None:
    mask = np.zeros((20, 16, 10), dtype=bool)
    mask[5:9, 3:4, 6:8] = True
    assert foreground_box(mask, 2) == (slice(3, 11), slice(1, 6), slice(4, 10))
    assert foreground_box(mask, (0, 5, 0)) == (slice(5, 9), slice(0, 9), slice(6, 8))
    volume = Volume(np.arange(20 * 16 * 10, dtype=np.float32).reshape(20, 16, 10), OBLIQUE, "ct")
    # margin 2 mm: spacing ~ (0.8, 0.9, 3.0) mm -> 3, 3, 1 voxels
    cropped, box = crop_to_foreground(volume, mask, margin_mm=2.0)
    assert box == (slice(2, 12), slice(0, 7), slice(5, 9))
    np.testing.assert_array_equal(cropped.array, volume.array[box])
    for voxel in [(0, 0, 0), (3, 4, 2)]:
        original = np.array([b.start + v for b, v in zip(box, voxel, strict=True)] + [1.0])
        np.testing.assert_allclose(
            cropped.affine @ np.array([*voxel, 1.0]), volume.affine @ original, atol=1e-9
        )
    label = Volume(mask.astype(np.uint8), OBLIQUE, "seg")
    assert crop(label, box).array.sum() == mask.sum()
    with pytest.raises(InvalidInputError, match="empty"):
        foreground_box(np.zeros((3, 3, 3), dtype=bool))
    with pytest.raises(InvalidInputError, match="differs from volume ct"):
        crop_to_foreground(volume, mask[:5])
