"""CT/MR preprocessing: windowing, normalisation, resampling, lung extraction, cropping.

Arrays are ``[I, J, K]`` as :func:`pixelseg.medical.read_volume` returns them; functions that
change the grid (resampling, cropping) take and return a :class:`Volume` so the affine follows
and a prediction made on the result can be placed back on the scanner's grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from pixelseg._optional import import_optional
from pixelseg.errors import InvalidInputError, unknown_choice
from pixelseg.medical.volume import Volume

__all__ = [
    "WINDOW_PRESETS",
    "crop",
    "crop_to_foreground",
    "foreground_box",
    "lung_mask",
    "percentile_normalize",
    "resample_image",
    "resample_label",
    "window",
    "zscore",
]

# (centre, width) in Hounsfield units, the radiology reading windows.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "bone": (300.0, 1500.0),
}


def window(
    hu: np.ndarray,
    preset: str | None = None,
    *,
    center: float | None = None,
    width: float | None = None,
) -> np.ndarray:
    """Clip Hounsfield units to a reading window and scale it to [0, 1] (float32).

    Give a ``preset`` (``lung`` -600/1500, ``mediastinum`` 40/400, ``bone`` 300/1500) or both
    ``center`` and ``width`` (HU). ``center - width/2`` maps to 0 and ``center + width/2`` to 1.
    """
    if preset is not None:
        if center is not None or width is not None:
            raise InvalidInputError("give a window preset or center/width, not both")
        if preset not in WINDOW_PRESETS:
            raise unknown_choice("window preset", preset, WINDOW_PRESETS)
        center, width = WINDOW_PRESETS[preset]
    if center is None or width is None:
        raise InvalidInputError(
            f"give a window preset ({', '.join(WINDOW_PRESETS)}) or both center and width"
        )
    if not (math.isfinite(center) and math.isfinite(width) and width > 0):
        raise InvalidInputError(
            f"window needs a finite center and width > 0, got {center}, {width}"
        )
    low = center - width / 2
    out = (np.asarray(hu, dtype=np.float32) - np.float32(low)) / np.float32(width)
    return np.clip(out, 0.0, 1.0, out=out)


def _values(array: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if mask is None:
        return array
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != array.shape:
        raise InvalidInputError(f"mask shape {mask.shape} differs from the array's {array.shape}")
    if not mask.any():
        raise InvalidInputError("mask has no True voxel: no values to compute statistics from")
    return array[mask]


def zscore(array: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """``(array - mean) / std`` (float32), the statistics over ``mask`` (e.g. the body) if given.

    A constant region (std 0) gives zeros rather than NaN. For MR, whose intensities have no
    absolute scale; CT is better windowed or percentile-normalised with fixed HU.
    """
    array = np.asarray(array, dtype=np.float32)
    values = _values(array, mask).astype(np.float64)
    mean, std = float(values.mean()), float(values.std())
    return (array - np.float32(mean)) / np.float32(std if std > 0 else 1.0)


def percentile_normalize(
    array: np.ndarray, lower: float = 0.5, upper: float = 99.5, mask: np.ndarray | None = None
) -> np.ndarray:
    """Map the ``lower`` and ``upper`` percentiles to 0 and 1 and clip (float32).

    Outliers (metal, air) stop dominating the scale; statistics over ``mask`` if given. Equal
    percentiles (a constant region) give zeros.
    """
    if not 0 <= lower < upper <= 100:
        raise InvalidInputError(f"need 0 <= lower < upper <= 100, got {lower}, {upper}")
    array = np.asarray(array, dtype=np.float32)
    lo, hi = np.percentile(_values(array, mask), [lower, upper])
    out = (array - np.float32(lo)) / np.float32(hi - lo if hi > lo else 1.0)
    return np.clip(out, 0.0, 1.0, out=out)


def _target_grid(volume: Volume, spacing: Sequence[float]) -> tuple[np.ndarray, tuple[int, ...]]:
    target = np.asarray(spacing, dtype=np.float64)
    if target.shape != (3,) or not (np.isfinite(target).all() and (target > 0).all()):
        raise InvalidInputError(f"target spacing must be 3 positive mm values, got {spacing!r}")
    scale = target / np.asarray(volume.spacing)  # old voxels per new voxel, per axis
    shape = tuple(max(1, math.floor(n / s + 0.5)) for n, s in zip(volume.shape, scale, strict=True))
    return scale, shape


def _rescaled(volume: Volume, array: np.ndarray, scale: np.ndarray) -> Volume:
    # Voxel 0's centre stays where it was; each axis' step becomes the target spacing.
    affine = volume.affine @ np.diag([*scale, 1.0])
    return Volume(array, affine, volume.source)


def resample_image(
    volume: Volume, spacing: Sequence[float], interpolation: str = "linear"
) -> Volume:
    """Resample an image to ``spacing`` (mm per i, j, k) with linear or cubic interpolation.

    The new shape is ``round(shape * old_spacing / spacing)``; voxel (0, 0, 0)'s centre stays
    fixed and the affine's columns are rescaled, so the result overlays the input. Samples past
    the last input voxel repeat the edge value. Returns float32. Never use it on labels:
    interpolation invents classes between neighbours (use :func:`resample_label`).
    """
    orders = {"linear": 1, "cubic": 3}
    if interpolation not in orders:
        raise unknown_choice("interpolation", interpolation, orders)
    ndimage = import_optional("scipy.ndimage", "medical")
    scale, shape = _target_grid(volume, spacing)
    out = ndimage.affine_transform(
        np.asarray(volume.array, dtype=np.float32),
        scale,  # a diagonal matrix given as its diagonal: new index * scale = old index
        output_shape=shape,
        order=orders[interpolation],
        mode="nearest",
        output=np.float32,
    )
    return _rescaled(volume, out, scale)


def resample_label(volume: Volume, spacing: Sequence[float]) -> Volume:
    """Resample a label volume to ``spacing`` by nearest neighbour, on the same grid as
    :func:`resample_image`. Every output voxel copies one input voxel (ties round up), so the
    values and dtype are the input's: no class is ever interpolated or invented.
    """
    scale, shape = _target_grid(volume, spacing)
    index = [
        np.minimum(np.floor(np.arange(m) * s + 0.5).astype(np.intp), n - 1)
        for m, s, n in zip(shape, scale, volume.shape, strict=True)
    ]
    return _rescaled(volume, volume.array[np.ix_(*index)], scale)


def _ball(radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """A boolean ellipsoid that is a ball of ``radius_mm`` in physical space."""
    half = [math.floor(radius_mm / s) for s in spacing]
    grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    return sum((g * s / radius_mm) ** 2 for g, s in zip(grids, spacing, strict=True)) <= 1.0


def lung_mask(
    hu: np.ndarray,
    spacing: Sequence[float],
    threshold: float = -320.0,
    closing_mm: float = 2.0,
    min_fraction: float = 0.1,
    max_slice_hole_mm2: float = 3000.0,
) -> np.ndarray:
    """Both lungs of a chest CT ``hu [I, J, K]`` (k along the body axis) as a bool mask.

    Steps: voxels below ``threshold`` HU are air; their 6-connected components that touch the
    in-plane border (an i or j face) are the air around the patient and are dropped (the k
    faces do not count: a scan range often cuts the lung apex or base); the two largest
    remaining components are kept (lungs joined through the trachea form one, so the second
    is kept only if at least ``min_fraction`` of the first, which leaves bowel gas out); a
    closing with a ball of ``closing_mm`` smooths the wall, and holes are filled in 3D and in
    each k slice, which brings the vessels and nodules inside the lung into the mask. A
    hole of one slice is filled only up to ``max_slice_hole_mm2`` (3000 mm^2, a disc about
    6 cm across): where the bronchi and a thin anterior junction line close a ring around
    the mediastinum, that ring's inside is the heart and great vessels, not lung.
    """
    ndimage = import_optional("scipy.ndimage", "medical")
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise InvalidInputError(f"lung_mask needs a 3D [I, J, K] volume, got shape {hu.shape}")
    spacing_ijk = [float(s) for s in spacing]
    if len(spacing_ijk) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing_ijk):
        raise InvalidInputError(f"lung_mask needs 3 positive spacings in mm, got {spacing!r}")
    labels, count = ndimage.label(hu < threshold)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    outside = np.unique(np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel()]))
    sizes[outside] = 0
    sizes[0] = 0
    largest = np.argsort(sizes)[::-1][:2]
    keep = [c for c in largest if sizes[c] > 0 and sizes[c] >= min_fraction * sizes[largest[0]]]
    mask = np.isin(labels, keep)
    if closing_mm > 0 and mask.any():
        ball = _ball(closing_mm, spacing)
        pad = [(h, h) for h in np.array(ball.shape) // 2]
        # Edge padding: lung cut by the first or last slice is not eroded by the border.
        padded = ndimage.binary_closing(np.pad(mask, pad, mode="edge"), structure=ball)
        mask = padded[tuple(slice(p, p + n) for (p, _), n in zip(pad, mask.shape, strict=True))]
    mask = ndimage.binary_fill_holes(mask)
    in_slice = np.zeros((3, 3, 3), dtype=bool)
    in_slice[:, :, 1] = ndimage.generate_binary_structure(2, 1)  # no links along k
    holes, count = ndimage.label(
        ndimage.binary_fill_holes(mask, structure=in_slice) & ~mask, in_slice
    )
    if count:
        # Each hole lies in one slice (no links along k): its area is voxels x pixel area.
        areas = np.bincount(holes.ravel(), minlength=count + 1) * spacing_ijk[0] * spacing_ijk[1]
        small = areas <= max_slice_hole_mm2
        small[0] = False
        mask |= small[holes]
    return mask


def foreground_box(mask: np.ndarray, margin: int | Sequence[int] = 0) -> tuple[slice, ...]:
    """The bounding box of ``mask``'s True voxels grown by ``margin`` voxels per axis, clipped
    to the array: a tuple of slices that indexes the array and any volume on its grid."""
    mask = np.asarray(mask, dtype=bool)
    margins = [int(margin)] * mask.ndim if np.isscalar(margin) else [int(m) for m in margin]
    if len(margins) != mask.ndim or min(margins) < 0:
        raise InvalidInputError(f"margin must be {mask.ndim} non-negative ints, got {margin!r}")
    if not mask.any():
        raise InvalidInputError("the foreground mask is empty: there is no box to crop to")
    box = []
    for axis, m in enumerate(margins):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(int(hits[0]) - m, 0), min(int(hits[-1]) + 1 + m, mask.shape[axis])))
    return tuple(box)


def crop(volume: Volume, box: Sequence[slice]) -> Volume:
    """``volume`` cut to ``box`` (from :func:`foreground_box`), its affine moved so each voxel
    keeps its position in mm."""
    starts = [s.start or 0 for s in box]
    affine = volume.affine.copy()
    affine[:3, 3] = (volume.affine @ np.array([*starts, 1.0]))[:3]
    return Volume(volume.array[tuple(box)], affine, volume.source)


def crop_to_foreground(
    volume: Volume, mask: np.ndarray, margin_mm: float = 10.0
) -> tuple[Volume, tuple[slice, ...]]:
    """Crop ``volume`` to ``mask``'s box grown by ``margin_mm`` (rounded up to whole voxels
    per axis). Returns the cropped volume and the box, to crop labels alike or paste back."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != volume.shape:
        raise InvalidInputError(
            f"mask shape {mask.shape} differs from volume {volume.source or ''} {volume.shape}"
        )
    if not (math.isfinite(margin_mm) and margin_mm >= 0):
        raise InvalidInputError(f"margin_mm must be >= 0, got {margin_mm}")
    margin = [math.ceil(margin_mm / s - 1e-9) for s in volume.spacing]
    box = foreground_box(mask, margin)
    return crop(volume, box), box
