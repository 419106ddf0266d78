"""3D augmentation declared as data, applied identically to a volume and its label, seeded.

A spec is a list of dicts, ``name`` plus options (the YAML ``augment`` list of a volumetric
task), e.g. ``[{"name": "rotate", "angle": 30}, {"name": "flip"}]``. Defaults follow
nnU-Net's 3D training. Names (:data:`AUGMENT3D_NAMES`), ``p`` the probability per sample:

Geometric (image trilinear, label nearest; all of them together resample a sample once):

- ``rotate`` ``{angle: 30, axes: [0, 1, 2], p: 0.2}``: rotate about each axis in ``axes``
  (0 = ``D``/``k``: within a slice; 1 = ``H``/``j``; 2 = ``W``/``i``) by an angle in degrees
  drawn from ``[-angle, angle]``; ``angle`` may be ``[low, high]``, or three such values,
  one per axis 0, 1, 2.
- ``scale`` ``{range: [0.85, 1.25], per_axis: false, p: 0.2}``: zoom by a factor drawn from
  ``range`` (> 1 enlarges the content), one factor or one per axis.
- ``elastic`` ``{alpha: [0, 4], sigma: [8, 12], p: 0.2}``: add a smooth random displacement
  field (batchgenerators' elastic deformation): ``sigma`` its smoothness and ``alpha`` its
  largest displacement, both in voxels (a number, or ``[low, high]`` to draw from). Voxels
  are the volume's own: resample to the target spacing first (``medical.preprocess``).

Rotation and elastic deformation work in voxel units, which equal physical units on a
resampled, near-isotropic grid; for thick slices rotate about axis 0 only.

Exact and intensity ops (after the resampling; intensity ops touch the image only):

- ``flip`` ``{axes: [0, 1, 2], p: 0.5}``: mirror each axis in ``axes`` with probability ``p``.
- ``noise`` ``{std: [0, 0.1], p: 0.1}``: add Gaussian noise of a standard deviation drawn
  from ``std``.
- ``gamma`` ``{range: [0.7, 1.5], p: 0.3, invert_p: 0.0}``: per channel, rescale to [0, 1],
  raise to a gamma drawn from ``range`` (half of the time below 1, as nnU-Net), rescale back
  and restore the mean and standard deviation; with probability ``invert_p`` on the negated
  image (nnU-Net uses a second ``gamma`` entry with ``p: 0.1, invert_p: 1``).
- ``contrast`` ``{range: [0.75, 1.25], p: 0.15}``: per channel, scale around the mean by a
  factor drawn as for ``gamma``, clipped to the channel's former range.
- ``brightness`` ``{range: [0.75, 1.25], p: 0.15}``: per channel, multiply by a factor
  drawn from ``range``.

Randomness: each op draws from its own ``torch.Generator``, so changing one op never
changes another's draws. ``set_seed(seed)`` (called by the trainer before every draw with
a seed of the run seed, epoch and index) restarts them from ``seed``; without it they
continue from the seed given at construction. Global generators are never used or touched.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from pixelseg.errors import DataError, InvalidInputError, closest_match, unknown_choice
from pixelseg.medical.augment3d_ops import (
    BrightnessOp,
    ContrastOp,
    ElasticOp,
    FlipOp,
    GammaOp,
    NoiseOp,
    RotateOp,
    ScaleOp,
)
from pixelseg.medical.resample3d import resample_pair, sampling_grid

__all__ = ["AUGMENT3D_NAMES", "Augment3D", "build_augment3d"]


def _number(value: Any, option: str, low: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(f"{option} must be a number, got {value!r}")
    if low is not None and value < low:
        raise InvalidInputError(f"{option} must be >= {low}, got {value!r}")
    return float(value)


def _probability(value: Any, option: str = "p") -> float:
    p = _number(value, option)
    if not 0.0 <= p <= 1.0:
        raise InvalidInputError(f"{option} must be a probability in [0, 1], got {value!r}")
    return p


def _range(value: Any, option: str, low: float = 0.0, scalar_is_fixed: bool = False) -> tuple:
    """``[low, high]`` (low <= high, both >= ``low``); a single number ``v`` means ``[v, v]``
    when ``scalar_is_fixed``."""
    if scalar_is_fixed and not isinstance(value, Sequence):
        v = _number(value, option, low)
        return (v, v)
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise InvalidInputError(f"{option} must be [low, high], got {value!r}")
    lo, hi = (_number(v, option, low) for v in value)
    if lo > hi:
        raise InvalidInputError(f"{option} must be [low, high] with low <= high, got {value!r}")
    return (lo, hi)


def _axes(value: Any) -> tuple[int, ...]:
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or not all(isinstance(a, int) and not isinstance(a, bool) and 0 <= a <= 2 for a in value)
        or len(set(value)) != len(value)
    ):
        raise InvalidInputError(
            f"axes must be distinct axes among 0, 1, 2 (D, H, W), got {value!r}"
        )
    return tuple(sorted(value))


def _angle_ranges(angle: Any) -> list[tuple[float, float]]:
    """Degrees: ``a`` -> ``[-a, a]`` per axis, ``[lo, hi]`` for every axis, or three of those."""
    usage = "angle must be degrees a (for [-a, a]), [low, high], or three of those (axes 0, 1, 2)"

    def one(v: Any) -> tuple[float, float]:
        if not isinstance(v, Sequence) or isinstance(v, str):
            a = _number(v, "angle", 0.0)
            return (-a, a)
        if len(v) != 2 or _number(v[0], "angle") > _number(v[1], "angle"):
            raise InvalidInputError(f"{usage}, got {angle!r}")
        return (float(v[0]), float(v[1]))

    if isinstance(angle, Sequence) and not isinstance(angle, str) and len(angle) == 3:
        return [one(v) for v in angle]
    return [one(angle)] * 3


# Builders: a spec's options are exactly their keyword arguments (errors list them).
def _rotate(*, angle: Any = 30.0, axes: Any = (0, 1, 2), p: Any = 0.2) -> RotateOp:
    ranges, chosen = _angle_ranges(angle), _axes(axes)
    degrees = tuple(ranges[a] if a in chosen else (0.0, 0.0) for a in range(3))
    return RotateOp(degrees, _probability(p))


def _scale(*, range: Any = (0.85, 1.25), per_axis: bool = False, p: Any = 0.2) -> ScaleOp:
    lo, hi = _range(range, "range")
    if lo <= 0:
        raise InvalidInputError(f"range must hold zoom factors > 0, got {range!r}")
    if not isinstance(per_axis, bool):
        raise InvalidInputError(f"per_axis must be true or false, got {per_axis!r}")
    return ScaleOp((lo, hi), per_axis, _probability(p))


def _elastic(*, alpha: Any = (0.0, 4.0), sigma: Any = (8.0, 12.0), p: Any = 0.2) -> ElasticOp:
    sigmas = _range(sigma, "sigma", scalar_is_fixed=True)
    if sigmas[0] <= 0:
        raise InvalidInputError(f"sigma must be > 0 voxels, got {sigma!r}")
    return ElasticOp(_range(alpha, "alpha", scalar_is_fixed=True), sigmas, _probability(p))


def _flip(*, axes: Any = (0, 1, 2), p: Any = 0.5) -> FlipOp:
    return FlipOp(_axes(axes), _probability(p))


def _noise(*, std: Any = (0.0, 0.1), p: Any = 0.1) -> NoiseOp:
    return NoiseOp(_range(std, "std", scalar_is_fixed=True), _probability(p))


def _gamma(*, range: Any = (0.7, 1.5), p: Any = 0.3, invert_p: Any = 0.0) -> GammaOp:
    lo, hi = _range(range, "range")
    if lo <= 0:
        raise InvalidInputError(f"range must hold gammas > 0, got {range!r}")
    return GammaOp((lo, hi), _probability(p), _probability(invert_p, "invert_p"))


def _contrast(*, range: Any = (0.75, 1.25), p: Any = 0.15) -> ContrastOp:
    return ContrastOp(_range(range, "range"), _probability(p))


def _brightness(*, range: Any = (0.75, 1.25), p: Any = 0.15) -> BrightnessOp:
    return BrightnessOp(_range(range, "range"), _probability(p))


_BUILDERS: dict[str, Callable[..., Any]] = {
    "rotate": _rotate,
    "scale": _scale,
    "elastic": _elastic,
    "flip": _flip,
    "noise": _noise,
    "gamma": _gamma,
    "contrast": _contrast,
    "brightness": _brightness,
}

#: Every name a 3D augmentation spec may use.
AUGMENT3D_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def _build_op(index: int, entry: Any) -> Any:
    """Build spec entry ``index``; errors name the entry, the bad option and the valid ones."""
    where = f"augment3d[{index}]"
    if not isinstance(entry, Mapping) or "name" not in entry:
        raise InvalidInputError(
            f"{where} must be a mapping with a 'name' key, got {entry!r}; valid names: "
            f"{', '.join(AUGMENT3D_NAMES)}"
        )
    name = str(entry["name"])
    if name not in _BUILDERS:
        raise InvalidInputError(f"{where}: {unknown_choice('3D augmentation', name, _BUILDERS)}")
    params = inspect.signature(_BUILDERS[name]).parameters
    options = {k: v for k, v in entry.items() if k != "name"}
    for key in options:
        if key not in params:
            hint = closest_match(str(key), params)
            did_you_mean = f" Did you mean {hint!r}?" if hint else ""
            raise InvalidInputError(
                f"{where} ({name!r}): unknown option {key!r}.{did_you_mean} "
                f"Valid options: {', '.join(params)}"
            )
    try:
        return _BUILDERS[name](**options)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{where} ({name!r}): {exc}") from exc


def _check_pair(image: Any, label: Any) -> None:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or not image.is_floating_point():
        shown = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        dtype = getattr(image, "dtype", None)
        raise DataError(f"image must be a float tensor [C, D, H, W], got {shown} ({dtype})")
    if image.numel() == 0:
        raise DataError(f"image must not be empty, got shape {tuple(image.shape)}")
    if label is not None and (
        not isinstance(label, torch.Tensor)
        or label.dtype != torch.int64
        or tuple(label.shape) != tuple(image.shape[1:])
    ):
        shown = tuple(label.shape) if isinstance(label, torch.Tensor) else type(label).__name__
        raise DataError(
            f"label must be an int64 tensor [D, H, W] = {tuple(image.shape[1:])} like the "
            f"image, got {shown} ({getattr(label, 'dtype', None)})"
        )


class Augment3D:
    """The augmentation of a spec list: ``(image [C, D, H, W] float, label [D, H, W] int64)``
    -> the same shapes and dtypes (``label`` may be None).

    ``image_fill``: what the image reads outside the volume after a geometric op, ``"border"``
    (the nearest border voxel) or a number (e.g. the normalised value of air);
    ``label_fill``: the label there (0, or the ignore index so the loss skips it).
    ``seed``: the generators' seed until :meth:`set_seed` (None: fresh OS entropy).
    """

    def __init__(
        self,
        specs: Sequence[Mapping[str, Any]],
        *,
        image_fill: float | str = "border",
        label_fill: int = 0,
        seed: int | None = None,
    ) -> None:
        if isinstance(specs, Mapping | str) or not isinstance(specs, Sequence):
            raise InvalidInputError(f"augment3d must be a list of specs, got {specs!r}")
        self.ops = [_build_op(i, entry) for i, entry in enumerate(specs)]
        self.names = [str(entry["name"]) for entry in specs]
        if image_fill != "border":
            image_fill = _number(image_fill, "image_fill ('border' or a number)")
        if isinstance(label_fill, bool) or not isinstance(label_fill, int):
            raise InvalidInputError(f"label_fill must be an integer label, got {label_fill!r}")
        self.image_fill, self.label_fill = image_fill, label_fill
        self._worker_seed: int | None = None
        self.set_seed(seed)

    def set_seed(self, seed: int | None) -> None:
        """Draw the next samples from ``seed`` (None: fresh OS entropy), one stream per op."""
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0
        ):
            raise InvalidInputError(f"seed must be an integer >= 0 or None, got {seed!r}")
        self.seed = None if seed is None else int(seed)
        self._seed_generators(np.random.SeedSequence(self.seed))
        info = torch.utils.data.get_worker_info()
        if info is not None:
            # Seeded explicitly inside a worker: the worker's own reseeding must not undo it.
            self._worker_seed = info.seed

    def _seed_generators(self, sequence: np.random.SeedSequence) -> None:
        states = sequence.generate_state(max(len(self.ops), 1), dtype=np.uint64)
        self.generators = [torch.Generator().manual_seed(int(s)) for s in states]

    def _reseed_in_worker(self) -> None:
        """Without set_seed, DataLoader workers would start from copies of one state."""
        info = torch.utils.data.get_worker_info()
        if info is None or self._worker_seed == info.seed:
            return
        self._worker_seed = info.seed
        entropy = [info.seed % 2**63] + ([self.seed] if self.seed is not None else [])
        self._seed_generators(np.random.SeedSequence(entropy))

    def __call__(
        self, image: torch.Tensor, label: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        _check_pair(image, label)
        self._reseed_in_worker()
        shape = tuple(image.shape[1:])
        matrix = torch.eye(3, dtype=torch.float64)
        displacement: torch.Tensor | None = None
        moved = False
        for op, generator in zip(self.ops, self.generators, strict=False):
            if op.kind != "spatial":
                continue
            op_matrix, op_displacement = op.draw(shape, generator)
            if op_matrix is not None:
                matrix, moved = matrix @ op_matrix, True
            if op_displacement is not None:
                displacement = op_displacement + (0 if displacement is None else displacement)
                moved = True
        if moved:
            grid = sampling_grid(shape, matrix, displacement)
            image, label = resample_pair(image, label, grid, self.image_fill, self.label_fill)
        for op, generator in zip(self.ops, self.generators, strict=False):
            if op.kind == "flip":
                axes = op.draw(generator)
                if axes:
                    image = image.flip([a + 1 for a in axes])
                    label = None if label is None else label.flip(list(axes))
            elif op.kind == "intensity":
                image = op.apply(image, generator)
        return image, label

    def __repr__(self) -> str:
        return (
            f"Augment3D({self.names}, image_fill={self.image_fill!r}, label_fill={self.label_fill})"
        )


def build_augment3d(
    specs: Sequence[Mapping[str, Any]] | None,
    *,
    image_fill: float | str = "border",
    label_fill: int = 0,
    seed: int | None = None,
) -> Augment3D | None:
    """The :class:`Augment3D` of ``specs``, or None for an empty list or None. Unknown names
    or options and bad values raise :class:`InvalidInputError` naming the entry's index, the
    option, the closest valid name and all valid ones."""
    if not specs:
        return None
    return Augment3D(specs, image_fill=image_fill, label_fill=label_fill, seed=seed)
