"""Synthetic chest CT phantoms: the embedded default data of the volumetric task.

A phantom is drawn in millimetres first (:func:`draw_phantom`, from the seed alone) and then
rendered on a voxel grid (:func:`render_phantom`: shape, spacing, orientation), so one seed is
one physical object whatever the grid: a 12 mm nodule is 12 mm across at 0.7 or 3 mm spacing.
:func:`make_phantom` does both.

The object, in RAS+ mm around the phantom's centre (which the grid's centre lands on):

- air, -1000 HU, around the body;
- the body, an elliptic cylinder along z (superior), ``body_mm`` wide (left-right) and deep
  (anterior-posterior): a fat shell (-100 HU, 4-8 mm) around soft tissue (+40 HU), and a
  spine (a +400 HU cylinder behind the mediastinum);
- two lungs (-800 HU), ellipsoids left and right, about 0.85 x ``body_mm[0]`` tall;
- vessels (+40 HU), tubes of 0.9-2.2 mm radius branching from each hilum, inside the lungs;
- nodules, ``num_nodules`` ellipsoids inside the lungs, -30..+30 HU, ``nodule_mm`` across
  along their longest axis (the other two 0.8-1.0 of it), randomly rotated, not touching.

Partial volume: each voxel is the mean of ``supersample ** 3`` point samples spread evenly
inside it, so voxels on an edge take mixed values, as a scanner's do. Gaussian noise of
``noise_hu`` is added last. Labels (uint8): 0 background, 1 nodule (the voxels more than half
inside a nodule), and with ``label_lungs=True`` 2 lung (more than half inside a lung,
vessels included, nodule voxels excepted).

:mod:`pixelseg.medical.phantom_dataset` writes phantoms as NIfTI pairs or an MSD-layout
dataset, :mod:`pixelseg.medical.dicom_writer` as a CT DICOM series.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pixelseg.errors import InvalidInputError
from pixelseg.medical.volume import Volume

__all__ = [
    "PHANTOM_CLASSES",
    "TISSUE_HU",
    "Ellipsoid",
    "PhantomSpec",
    "Tube",
    "draw_phantom",
    "make_phantom",
    "orientation_matrix",
    "phantom_affine",
    "render_phantom",
]

TISSUE_HU: dict[str, float] = {
    "air": -1000.0,
    "fat": -100.0,
    "soft_tissue": 40.0,
    "bone": 400.0,
    "lung": -800.0,
    "vessel": 40.0,
}
NODULE_HU = (-30.0, 30.0)
PHANTOM_CLASSES = ("background", "nodule", "lung")
NODULE_MARGIN_MM = 2.0  # between a nodule and the lung wall or another nodule
_AXIS_CODES = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0)}
_AXIS_CODES |= {"S": (2, 1.0), "I": (2, -1.0)}

Triple = tuple[float, float, float]


@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid in mm: ``rotation``'s columns are the directions of ``semi_axes``."""

    centre: Triple
    semi_axes: Triple
    hu: float
    rotation: tuple[Triple, Triple, Triple] = ((1.0, 0, 0), (0, 1.0, 0), (0, 0, 1.0))

    @property
    def diameter_mm(self) -> float:
        """Length of the longest axis."""
        return 2 * max(self.semi_axes)

    @property
    def equivalent_diameter_mm(self) -> float:
        """Diameter of the sphere of the same volume."""
        return 2 * math.prod(self.semi_axes) ** (1 / 3)

    @property
    def volume_mm3(self) -> float:
        return 4 / 3 * math.pi * math.prod(self.semi_axes)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        rotation = np.asarray(self.rotation)
        half = np.sqrt(((rotation * np.asarray(self.semi_axes)) ** 2).sum(axis=1))
        return np.asarray(self.centre) - half, np.asarray(self.centre) + half

    def inside(self, xyz: Sequence[np.ndarray]) -> np.ndarray:
        rotation = np.asarray(self.rotation)
        offset = [c - m for c, m in zip(xyz, self.centre, strict=True)]
        total = 0.0
        for axis, semi in enumerate(self.semi_axes):  # coordinates along the ellipsoid's axes
            local = sum(rotation[r, axis] * offset[r] for r in range(3))
            total = total + (local / semi) ** 2
        return total <= 1.0


@dataclass(frozen=True)
class Tube:
    """A segment from ``start`` to ``end`` (mm) thickened to ``radius`` mm."""

    start: Triple
    end: Triple
    radius: float

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        ends = np.array([self.start, self.end])
        return ends.min(axis=0) - self.radius, ends.max(axis=0) + self.radius

    def inside(self, xyz: Sequence[np.ndarray]) -> np.ndarray:
        start, axis = np.asarray(self.start), np.subtract(self.end, self.start)
        offset = [c - s for c, s in zip(xyz, start, strict=True)]
        t = sum(o * a for o, a in zip(offset, axis, strict=True)) / float(axis @ axis)
        t = np.clip(t, 0.0, 1.0)
        distance2 = sum((o - t * a) ** 2 for o, a in zip(offset, axis, strict=True))
        return distance2 <= self.radius**2


@dataclass(frozen=True)
class PhantomSpec:
    """One phantom in mm, independent of any voxel grid (see the module docstring)."""

    seed: int
    body_semi_axes: tuple[float, float]  # x (left-right), y (anterior-posterior), mm
    fat_mm: float
    spine: tuple[float, float, float]  # centre x, y and radius, mm; a cylinder along z
    lungs: tuple[Ellipsoid, Ellipsoid]
    vessels: tuple[Tube, ...]
    nodules: tuple[Ellipsoid, ...]


def _pair(value: Sequence[float], name: str, *, integer: bool = False) -> tuple[Any, Any]:
    pair = tuple(value)
    ok = len(pair) == 2 and all(math.isfinite(v) and v >= 0 for v in pair)
    if integer:
        ok = ok and all(float(v).is_integer() for v in pair)
    if not ok or pair[0] > pair[1] or (not integer and pair[0] <= 0):
        kind = "non-negative integers" if integer else "positive numbers"
        raise InvalidInputError(f"{name} must be two {kind} (min, max), got {value!r}")
    return (int(pair[0]), int(pair[1])) if integer else (float(pair[0]), float(pair[1]))


def _in_ball(rng: np.random.Generator, min_radius: float = 0.0) -> np.ndarray:
    while True:
        point = rng.uniform(-1.0, 1.0, 3)
        if min_radius <= np.linalg.norm(point) <= 1.0:
            return point


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def _vessels(rng: np.random.Generator, lung: Ellipsoid) -> list[Tube]:
    centre, semi = np.asarray(lung.centre), np.asarray(lung.semi_axes)
    medial = -math.copysign(1.0, centre[0])
    hilum = centre + semi * np.array([0.55 * medial, 0.1, 0.05])
    tubes = []
    for _ in range(3):
        target = centre + semi * 0.85 * _in_ball(rng, 0.5)
        radius = float(rng.uniform(1.4, 2.2))
        tubes.append(Tube(tuple(hilum), tuple(target), radius))
        for _ in range(2):
            start = hilum + rng.uniform(0.35, 0.7) * (target - hilum)
            end = centre + semi * 0.85 * _in_ball(rng, 0.4)
            tubes.append(Tube(tuple(start), tuple(end), 0.65 * radius))
    return tubes


def _nodules(
    rng: np.random.Generator, lungs: Sequence[Ellipsoid], count: int, size: tuple[float, float]
) -> list[Ellipsoid]:
    nodules: list[Ellipsoid] = []
    for _ in range(count):
        diameter = float(rng.uniform(*size))
        semi = diameter / 2 * np.array([1.0, *rng.uniform(0.8, 1.0, 2)])
        rotation, hu = _rotation(rng), float(rng.uniform(*NODULE_HU))
        for _attempt in range(200):
            lung = lungs[int(rng.integers(len(lungs)))]
            room = np.asarray(lung.semi_axes) - diameter / 2 - NODULE_MARGIN_MM
            if (room <= 0).any():
                raise InvalidInputError(
                    f"a nodule {diameter:.3g} mm across does not fit in lungs with semi-axes "
                    f"{np.round(lung.semi_axes, 1).tolist()} mm: lower nodule_mm or raise body_mm"
                )
            centre = np.asarray(lung.centre) + room * _in_ball(rng)
            if all(
                np.linalg.norm(centre - np.asarray(n.centre))
                >= diameter / 2 + n.diameter_mm / 2 + NODULE_MARGIN_MM
                for n in nodules
            ):
                break
        else:
            raise InvalidInputError(
                f"cannot place {count} nodules up to {size[1]} mm apart in the lungs: "
                "lower num_nodules or nodule_mm"
            )
        nodules.append(
            Ellipsoid(tuple(centre), tuple(semi), hu, tuple(map(tuple, rotation.tolist())))
        )
    return nodules


def draw_phantom(
    seed: int,
    *,
    num_nodules: Sequence[int] = (1, 4),
    nodule_mm: Sequence[float] = (4.0, 20.0),
    body_mm: Sequence[float] = (130.0, 100.0),
) -> PhantomSpec:
    """Draw the phantom of ``seed`` in mm (the same for every voxel grid).

    ``num_nodules`` and ``nodule_mm`` are (min, max) ranges, drawn uniformly; ``body_mm`` is
    the body's (width, depth) in mm, which the lungs scale with.
    """
    count_range = _pair(num_nodules, "num_nodules", integer=True)
    size = _pair(nodule_mm, "nodule_mm")
    body = tuple(float(v) for v in body_mm)
    if len(body) != 2 or not all(math.isfinite(v) and v > 0 for v in body):
        raise InvalidInputError(f"body_mm must be (width, depth) > 0 in mm, got {body_mm!r}")
    width, depth = body
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
    a, b = width / 2 * rng.uniform(0.95, 1.05), depth / 2 * rng.uniform(0.95, 1.05)
    lungs = tuple(
        Ellipsoid(
            centre=(side * 0.46 * a * rng.uniform(0.97, 1.03), -0.05 * b, 0.0),
            semi_axes=tuple(
                float(v)
                for v in np.array([0.3 * a, 0.64 * b, 0.42 * width]) * rng.uniform(0.95, 1.05, 3)
            ),
            hu=TISSUE_HU["lung"],
        )
        for side in (1.0, -1.0)  # the right lung (+x in RAS), then the left
    )
    vessels = [tube for lung in lungs for tube in _vessels(rng, lung)]
    count = int(rng.integers(count_range[0], count_range[1] + 1))
    return PhantomSpec(
        seed=int(seed),
        body_semi_axes=(float(a), float(b)),
        fat_mm=float(rng.uniform(4.0, 8.0)),
        spine=(0.0, -0.7 * float(b), 0.12 * float(b)),
        lungs=lungs,  # type: ignore[arg-type]
        vessels=tuple(vessels),
        nodules=tuple(_nodules(rng, lungs, count, size)),
    )


def orientation_matrix(orientation: str | Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """The 3x3 direction matrix (columns: the RAS+ unit vectors of i, j, k).

    ``orientation`` is three axis codes as nibabel writes them (``"RAS"``: i runs to the
    patient's right, j anterior, k superior; ``"LPS"`` is DICOM's; ``"LAS"`` the radiological
    convention), or the matrix itself, which must be orthonormal (oblique grids are fine).
    """
    if isinstance(orientation, str):
        codes = orientation.upper()
        axes = [_AXIS_CODES.get(c, (None, 0.0))[0] for c in codes]
        if len(codes) != 3 or None in axes or sorted(axes) != [0, 1, 2]:  # type: ignore[type-var]
            raise InvalidInputError(
                f"orientation {orientation!r} must be three axis codes, one of R/L, A/P and "
                "S/I each (e.g. 'RAS', 'LPS', 'LAS')"
            )
        matrix = np.zeros((3, 3))
        for column, code in enumerate(codes):
            row, sign = _AXIS_CODES[code]
            matrix[row, column] = sign
        return matrix
    matrix = np.asarray(orientation, dtype=np.float64)
    if matrix.shape != (3, 3) or not np.allclose(matrix.T @ matrix, np.eye(3), atol=1e-6):
        raise InvalidInputError(
            f"an orientation matrix must be 3x3 with orthonormal columns, got {matrix.tolist()}"
        )
    return matrix


def _grid(shape: Sequence[int], spacing: Sequence[float]) -> tuple[tuple[int, ...], np.ndarray]:
    shape_t = tuple(int(n) for n in shape)
    if (
        len(shape_t) != 3
        or min(shape_t) < 1
        or any(n != s for n, s in zip(shape_t, shape, strict=True))
    ):
        raise InvalidInputError(f"shape must be 3 positive integers (i, j, k), got {shape!r}")
    spacing_a = np.asarray(spacing, dtype=np.float64)
    if spacing_a.shape != (3,) or not (np.isfinite(spacing_a).all() and (spacing_a > 0).all()):
        raise InvalidInputError(f"spacing must be 3 positive mm values, got {spacing!r}")
    return shape_t, spacing_a


def phantom_affine(
    shape: Sequence[int], spacing: Sequence[float], orientation: Any = "RAS"
) -> np.ndarray:
    """The voxel -> RAS+ mm affine of a grid whose centre is the phantom's centre (0, 0, 0)."""
    shape_t, spacing_a = _grid(shape, spacing)
    linear = orientation_matrix(orientation) * spacing_a
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = -linear @ ((np.asarray(shape_t) - 1) / 2)
    return affine


def _box(
    affine: np.ndarray, shape: tuple[int, ...], lo: np.ndarray, hi: np.ndarray
) -> tuple[slice, ...] | None:
    """The voxel index box holding the mm box [lo, hi] (corners mapped back to the grid)."""
    corners = np.array(list(itertools.product(*zip(lo, hi, strict=True))))
    index = np.linalg.solve(affine[:3, :3], (corners - affine[:3, 3]).T)
    first = np.maximum(np.floor(index.min(axis=1)).astype(int) - 1, 0)
    last = np.minimum(np.ceil(index.max(axis=1)).astype(int) + 2, shape)
    if (first >= last).any():
        return None
    return tuple(slice(int(f), int(t)) for f, t in zip(first, last, strict=True))


def _paint(
    spec: PhantomSpec, affine: np.ndarray, shape: tuple[int, ...], offset: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HU, nodule and lung masks at one point per voxel, ``offset`` voxels from its centre."""
    index = np.ogrid[tuple(slice(0, n) for n in shape)]
    index = [ix + o for ix, o in zip(index, offset, strict=True)]
    xyz = [sum(affine[r, c] * index[c] for c in range(3)) + affine[r, 3] for r in range(3)]
    xyz = [np.broadcast_to(v, shape) for v in xyz]
    x, y = xyz[0], xyz[1]
    a, b = spec.body_semi_axes
    hu = np.full(shape, TISSUE_HU["air"])
    hu[(x / a) ** 2 + (y / b) ** 2 <= 1] = TISSUE_HU["fat"]
    f = spec.fat_mm
    hu[(x / (a - f)) ** 2 + (y / (b - f)) ** 2 <= 1] = TISSUE_HU["soft_tissue"]
    sx, sy, sr = spec.spine
    hu[(x - sx) ** 2 + (y - sy) ** 2 <= sr**2] = TISSUE_HU["bone"]
    lung = np.zeros(shape, dtype=bool)
    nodule = np.zeros(shape, dtype=bool)
    for shape_mm, value, mask in (
        *((s, s.hu, lung) for s in spec.lungs),
        *((s, TISSUE_HU["vessel"], None) for s in spec.vessels),
        *((s, s.hu, nodule) for s in spec.nodules),
    ):
        box = _box(affine, shape, *shape_mm.bounds())
        if box is None:
            continue
        inside = shape_mm.inside([v[box] for v in xyz])
        if mask is None:  # vessels run inside the lungs only
            inside &= lung[box]
        else:
            mask[box] |= inside
        hu[box][inside] = value
    return hu, nodule, lung


def render_phantom(
    spec: PhantomSpec,
    shape: Sequence[int] = (96, 96, 64),
    spacing: Sequence[float] = (1.5, 1.5, 2.0),
    *,
    orientation: Any = "RAS",
    noise_hu: float = 25.0,
    supersample: int = 2,
    label_lungs: bool = False,
) -> tuple[Volume, Volume]:
    """Render ``spec`` on a grid of ``shape`` (i, j, k) voxels of ``spacing`` mm.

    Returns ``(image, label)``: float32 HU and uint8 labels ``[I, J, K]`` with the same
    affine (:func:`phantom_affine`). The noise is drawn from the spec's seed and the shape.
    """
    shape_t, _ = _grid(shape, spacing)
    if not (math.isfinite(noise_hu) and noise_hu >= 0):
        raise InvalidInputError(f"noise_hu must be >= 0, got {noise_hu}")
    if int(supersample) != supersample or supersample < 1:
        raise InvalidInputError(f"supersample must be an integer >= 1, got {supersample!r}")
    supersample = int(supersample)
    affine = phantom_affine(shape_t, spacing, orientation)
    steps = (np.arange(supersample) + 0.5) / supersample - 0.5
    hu = np.zeros(shape_t)
    nodule = np.zeros(shape_t, dtype=np.int32)
    lung = np.zeros(shape_t, dtype=np.int32)
    for offset in itertools.product(steps, repeat=3):
        point_hu, point_nodule, point_lung = _paint(spec, affine, shape_t, offset)
        hu += point_hu
        nodule += point_nodule
        lung += point_lung
    samples = supersample**3
    image = (hu / samples).astype(np.float32)
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 1]))
    image += np.float32(noise_hu) * rng.standard_normal(shape_t, dtype=np.float32)
    label = (2 * nodule > samples).astype(np.uint8)
    if label_lungs:
        label[(2 * lung > samples) & (label == 0)] = 2
    source = f"phantom:seed={spec.seed}"
    return Volume(image, affine, source), Volume(label, affine.copy(), source + ":label")


def make_phantom(
    seed: int,
    shape: Sequence[int] = (96, 96, 64),
    spacing: Sequence[float] = (1.5, 1.5, 2.0),
    *,
    noise_hu: float = 25.0,
    num_nodules: Sequence[int] = (1, 4),
    nodule_mm: Sequence[float] = (4.0, 20.0),
    body_mm: Sequence[float] = (130.0, 100.0),
    orientation: Any = "RAS",
    supersample: int = 2,
    label_lungs: bool = False,
) -> tuple[Volume, Volume]:
    """A chest CT phantom: ``(image, label)``, float32 HU and uint8 ``[I, J, K]`` volumes.

    Deterministic per ``seed``; the physical object depends on the seed, ``num_nodules``,
    ``nodule_mm`` and ``body_mm`` only (see :func:`draw_phantom`, :func:`render_phantom`).
    The default grid (96 x 96 x 64 voxels of 1.5 x 1.5 x 2 mm, 144 x 144 x 128 mm) holds the
    default body whole; a smaller field of view cuts it, as a scanner's would.
    """
    spec = draw_phantom(seed, num_nodules=num_nodules, nodule_mm=nodule_mm, body_mm=body_mm)
    return render_phantom(
        spec,
        shape,
        spacing,
        orientation=orientation,
        noise_hu=noise_hu,
        supersample=supersample,
        label_lungs=label_lungs,
    )
