"""CT phantoms: tissue HU, noise, physical sizes across spacings, partial volume, geometry."""

from __future__ import annotations

import numpy as np
import pytest

from pixelseg.errors import InvalidInputError
from pixelseg.medical.phantom import (
    TISSUE_HU,
    draw_phantom,
    make_phantom,
    orientation_matrix,
    phantom_affine,
    render_phantom,
)

ndimage = pytest.importorskip("scipy.ndimage")

# 144 x 144 x 128 mm, the default field of view, on coarse grids to stay fast
COARSE = ((48, 48, 32), (3.0, 3.0, 4.0))
FINE = ((72, 72, 48), (2.0, 2.0, 128 / 48))


def _voxel(affine: np.ndarray, xyz_mm: tuple[float, float, float]) -> tuple[int, ...]:
    index = np.linalg.solve(affine[:3, :3], np.asarray(xyz_mm) - affine[:3, 3])
    return tuple(int(v) for v in np.round(index))


def _cube(array: np.ndarray, centre: tuple[int, ...], half: int = 2) -> np.ndarray:
    return array[tuple(slice(c - half, c + half + 1) for c in centre)]


@pytest.fixture(scope="module")
def phantom() -> tuple:
    spec = draw_phantom(5, num_nodules=(3, 3), nodule_mm=(10.0, 16.0))
    image, label = render_phantom(spec, (64, 64, 40), (2.25, 2.25, 3.2), label_lungs=True)
    return spec, image, label


def test_tissues_have_their_hounsfield_units(phantom) -> None:
    spec, image, label = phantom
    hu, affine = image.array, image.affine
    assert image.array.dtype == np.float32 and label.array.dtype == np.uint8
    assert set(np.unique(label.array).tolist()) == {0, 1, 2}
    air = hu[:4, :4, :]
    assert abs(air.mean() - TISSUE_HU["air"]) < 3
    lungs = ndimage.binary_erosion(label.array == 2, iterations=2)
    assert abs(np.median(hu[lungs]) - TISSUE_HU["lung"]) < 40
    nodules = ndimage.binary_erosion(label.array == 1)
    assert nodules.sum() > 10 and abs(hu[nodules].mean()) < 60
    b = spec.body_semi_axes[1]
    mediastinum = _cube(hu, _voxel(affine, (0.0, 0.5 * b, 0.0)))
    assert abs(mediastinum.mean() - TISSUE_HU["soft_tissue"]) < 15
    spine = _cube(hu, _voxel(affine, (*spec.spine[:2], 0.0)), half=1)
    assert abs(spine.mean() - TISSUE_HU["bone"]) < 30
    a = spec.body_semi_axes[0]
    fat = hu[_voxel(affine, (0.0, b - spec.fat_mm / 2, 0.0))]
    assert -200 < fat < 0
    assert abs(hu[_voxel(affine, (a + 4.0, 0.0, 0.0))] - TISSUE_HU["air"]) < 100


def test_noise_is_at_least_20_hu_and_gaussian_in_flat_regions(phantom) -> None:
    spec, image, _ = phantom
    b = spec.body_semi_axes[1]
    air = image.array[:6, :6, :]
    assert 23 < air.std() < 27  # the default noise_hu is 25
    tissue = _cube(image.array, _voxel(image.affine, (0.0, 0.5 * b, 0.0)))
    assert 20 <= tissue.std() < 30
    quiet, _ = render_phantom(spec, (64, 64, 40), (2.25, 2.25, 3.2), noise_hu=0.0)
    assert np.all(quiet.array[:6, :6, :] == TISSUE_HU["air"])
    noisy, _ = render_phantom(spec, (64, 64, 40), (2.25, 2.25, 3.2), noise_hu=60.0)
    assert 57 < noisy.array[:6, :6, :].std() < 63


def _measured_nodules(spec, label) -> list[tuple[float, np.ndarray]]:
    """(volume mm3, centroid mm) of each labelled nodule, in the order of spec.nodules."""
    components, count = ndimage.label(label.array == 1)
    assert count == len(spec.nodules)
    voxel_mm3 = float(np.prod(label.spacing))
    index = np.arange(1, count + 1)
    sizes = ndimage.sum_labels(np.ones_like(components), components, index)
    centroids = np.array(ndimage.center_of_mass(components > 0, components, index))
    world = (label.affine[:3, :3] @ centroids.T).T + label.affine[:3, 3]
    out = []
    for nodule in spec.nodules:
        nearest = int(np.argmin(np.linalg.norm(world - np.asarray(nodule.centre), axis=1)))
        out.append((float(sizes[nearest]) * voxel_mm3, world[nearest]))
    return out


def test_nodules_keep_their_size_in_mm_whatever_the_spacing() -> None:
    spec = draw_phantom(11, num_nodules=(3, 3), nodule_mm=(8.0, 18.0))
    for nodule in spec.nodules:
        assert 8.0 <= nodule.diameter_mm <= 18.0
        assert 0.8 * 8.0 <= nodule.equivalent_diameter_mm <= nodule.diameter_mm
    volumes = []
    for shape, spacing in (COARSE, FINE):
        _, label = render_phantom(spec, shape, spacing, noise_hu=0.0)
        measured = _measured_nodules(spec, label)
        for nodule, (volume, centroid) in zip(spec.nodules, measured, strict=True):
            assert volume == pytest.approx(nodule.volume_mm3, rel=0.3)
            diameter = 2 * (3 * volume / (4 * np.pi)) ** (1 / 3)
            assert 0.8 * 8.0 - 1.0 <= diameter <= 18.0 + 1.0
            assert np.linalg.norm(centroid - np.asarray(nodule.centre)) < max(spacing)
        volumes.append([v for v, _ in measured])
    # same physical object: the two grids agree on every nodule's volume
    np.testing.assert_allclose(volumes[0], volumes[1], rtol=0.25)
    # and make_phantom draws the same object whatever grid it renders on
    _, coarse = make_phantom(11, *COARSE, num_nodules=(3, 3), nodule_mm=(8.0, 18.0))
    _, fine = make_phantom(11, *FINE, num_nodules=(3, 3), nodule_mm=(8.0, 18.0))
    for a, b in zip(_measured_nodules(spec, coarse), _measured_nodules(spec, fine), strict=True):
        assert np.linalg.norm(a[1] - b[1]) < 3.0


def test_edges_have_partial_volume_values_only_when_supersampled() -> None:
    spec = draw_phantom(2, num_nodules=(2, 2), nodule_mm=(10.0, 14.0))
    pure = set(TISSUE_HU.values()) | {n.hu for n in spec.nodules}
    sharp, _ = render_phantom(spec, *COARSE, noise_hu=0.0, supersample=1)
    assert set(np.unique(sharp.array).tolist()) <= {np.float32(v) for v in pure}
    soft, label = render_phantom(spec, *COARSE, noise_hu=0.0, supersample=3)
    hu = soft.array
    mixed = ~np.isin(hu, np.array(sorted(pure), dtype=np.float32))
    assert mixed.sum() > 0.01 * hu.size
    # around every nodule: a shell of voxels between lung and nodule values
    nodule = label.array == 1
    shell = ndimage.binary_dilation(nodule) & ~nodule
    between = (hu[shell] > TISSUE_HU["lung"] + 50) & (hu[shell] < -50)
    assert between.mean() > 0.3
    # the label is the voxels more than half inside: their HU is nearer the nodule's
    assert np.median(hu[nodule]) > -400 > np.median(hu[shell])


def test_same_seed_same_phantom_other_seed_other_phantom() -> None:
    small = ((32, 32, 16), (4.5, 4.5, 8.0))
    a_image, a_label = make_phantom(3, *small)
    b_image, b_label = make_phantom(3, *small)
    np.testing.assert_array_equal(a_image.array, b_image.array)
    np.testing.assert_array_equal(a_label.array, b_label.array)
    np.testing.assert_array_equal(a_image.affine, b_image.affine)
    c_image, _ = make_phantom(4, *small)
    assert not np.array_equal(a_image.array, c_image.array)
    assert draw_phantom(3) == draw_phantom(3) and draw_phantom(3) != draw_phantom(4)


def test_affine_encodes_spacing_orientation_and_centres_the_grid() -> None:
    affine = phantom_affine((10, 20, 5), (1.5, 2.0, 3.0), "LPS")
    np.testing.assert_allclose(affine[:3, :3], np.diag([-1.5, -2.0, 3.0]))
    np.testing.assert_allclose(affine @ [4.5, 9.5, 2.0, 1.0], [0, 0, 0, 1.0], atol=1e-12)
    np.testing.assert_array_equal(
        orientation_matrix("PIR"), [[0, 0, 1.0], [-1.0, 0, 0], [0, -1.0, 0]]
    )
    spec = draw_phantom(8, num_nodules=(2, 2), nodule_mm=(10.0, 12.0))
    ras, ras_label = render_phantom(spec, *COARSE, noise_hu=0.0)
    lps, lps_label = render_phantom(spec, *COARSE, noise_hu=0.0, orientation="LPS")
    assert lps.spacing == pytest.approx(ras.spacing)
    # the same object: LPS voxel (i, j, k) is RAS voxel (I-1-i, J-1-j, k)
    np.testing.assert_allclose(lps.array, ras.array[::-1, ::-1, :], atol=1e-3)
    np.testing.assert_array_equal(lps_label.array, ras_label.array[::-1, ::-1, :])
    tilted = orientation_matrix(
        [[np.cos(0.3), -np.sin(0.3), 0], [np.sin(0.3), np.cos(0.3), 0], [0, 0, 1.0]]
    )
    image, _ = render_phantom(spec, *COARSE, orientation=tilted)
    assert image.spacing == pytest.approx(COARSE[1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_nodules": (3, 1)}, "num_nodules"),
        ({"num_nodules": (1.5, 2)}, "num_nodules"),
        ({"nodule_mm": (0.0, 5.0)}, "nodule_mm"),
        ({"nodule_mm": (40.0, 60.0)}, "does not fit"),
        ({"body_mm": (130.0,)}, "body_mm"),
        ({"shape": (10, 10)}, "shape"),
        ({"shape": (10, 10, 0)}, "shape"),
        ({"spacing": (1.0, -1.0, 1.0)}, "spacing"),
        ({"supersample": 0}, "supersample"),
        ({"noise_hu": -1.0}, "noise_hu"),
        ({"orientation": "RAR"}, "RAR"),
        ({"orientation": np.eye(3) * 2}, "orthonormal"),
    ],
)
def test_bad_options_name_the_value(kwargs: dict, message: str) -> None:
    options = {"shape": (8, 8, 4), "spacing": (18.0, 18.0, 32.0), **kwargs}
    with pytest.raises(InvalidInputError, match=message):
        make_phantom(0, **options)


def test_nodules_lie_inside_the_lungs() -> None:
    for seed in range(4):
        _, label = make_phantom(seed, *COARSE, label_lungs=True, num_nodules=(4, 4))
        nodules = label.array == 1
        assert nodules.any()
        around = ndimage.binary_dilation(nodules) & ~nodules
        assert set(np.unique(label.array[around]).tolist()) <= {2}
