"""Training patches from 3D volumes, with nnU-Net's foreground oversampling.

Axis order. Volumes are read as ``[I, J, K]`` (NIfTI voxel order, :class:`Volume`); models
take ``[C, D, H, W]`` with ``D = K`` (slices), ``H = J`` (rows), ``W = I`` (columns), the
order a DICOM slice is displayed in and torch's ``Conv3d`` expects. :func:`volume_to_model`
reverses the last three axes (``[..., I, J, K] -> [..., K, J, I]``) and
:func:`model_to_volume` undoes it, so a prediction goes back onto the volume's affine.

Sampling (:class:`PatchSampler`). With probability ``foreground_fraction`` a patch is drawn
around foreground: a class is picked uniformly among the foreground classes present in the
case (so a rare class is sampled as often as a common one), then one of its voxels, and the
patch is placed so the voxel lies in its central half (a random shift of up to a quarter
patch either way, so the object is not always centred). Otherwise the patch's centre is a
uniformly random voxel of the volume. Either way a patch hangs over a border by at most half
its size; what lies outside the volume is ``pad_image`` / ``pad_label``, and a volume smaller
than the patch is padded the same way. Class locations are found once per case
(:func:`class_locations`, at most 10 000 voxels kept per class, spread evenly), never by
scanning the volume per draw.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pixelseg.errors import InvalidInputError, NonFiniteError

__all__ = [
    "PatchDataset",
    "PatchSampler",
    "PatchTransform",
    "class_locations",
    "model_to_volume",
    "volume_to_model",
]

MAX_LOCATIONS_PER_CLASS = 10_000
Array = np.ndarray | torch.Tensor


def volume_to_model(array: Array) -> Array:
    """``[..., I, J, K]`` (volume order) -> ``[..., K, J, I]`` = ``[..., D, H, W]``, contiguous."""
    if array.ndim < 3:
        raise InvalidInputError(f"need at least 3 axes [..., I, J, K], got shape {array.shape}")
    axes = (*range(array.ndim - 3), array.ndim - 1, array.ndim - 2, array.ndim - 3)
    if isinstance(array, torch.Tensor):
        return array.permute(axes).contiguous()
    return np.ascontiguousarray(np.transpose(array, axes))


def model_to_volume(array: Array) -> Array:
    """``[..., D, H, W]`` (model order) -> ``[..., I, J, K]``: the inverse of
    :func:`volume_to_model` (the same axis reversal)."""
    return volume_to_model(array)


def class_locations(
    label: Array, max_per_class: int = MAX_LOCATIONS_PER_CLASS
) -> dict[int, np.ndarray]:
    """Flat indices into ``label`` of the voxels of each foreground class (value > 0) present.

    At most ``max_per_class`` per class, taken evenly along the raster order (deterministic,
    spread over the whole object), which bounds the memory a large organ takes.
    """
    flat = (label.numpy() if isinstance(label, torch.Tensor) else np.asarray(label)).ravel()
    where = np.flatnonzero(flat > 0)
    if where.size == 0:
        return {}
    values = flat[where]
    order = np.argsort(values, kind="stable")  # raster order kept within each class
    where, values = where[order], values[order]
    classes, starts = np.unique(values, return_index=True)
    out = {}
    for value, part in zip(classes.tolist(), np.split(where, starts[1:]), strict=True):
        if len(part) > max_per_class:
            part = part[np.linspace(0, len(part) - 1, max_per_class).astype(np.intp)]
        out[int(value)] = part
    return out


def _crop(array: Array, start: Sequence[int], size: Sequence[int], fill: float) -> Array:
    """``array[..., start:start+size]`` over the last three axes, ``fill`` outside, a copy."""
    spatial = array.shape[-3:]
    src = tuple(
        slice(max(s, 0), min(s + p, n)) for s, p, n in zip(start, size, spatial, strict=True)
    )
    dst = tuple(slice(a.start - s, a.stop - s) for a, s in zip(src, start, strict=True))
    shape = (*array.shape[:-3], *size)
    if isinstance(array, torch.Tensor):
        out = array.new_full(shape, fill)
    else:
        out = np.full(shape, fill, dtype=array.dtype)
    out[(..., *dst)] = array[(..., *src)]
    return out


class _MappedArray:
    """A read-only memmap of a whole file, pickled as where it lives (reopened on unpickling)."""

    def __init__(self, array: np.memmap) -> None:
        self.filename, self.offset = str(array.filename), int(array.offset)
        self.dtype, self.shape = array.dtype.str, tuple(array.shape)

    @classmethod
    def of(cls, array: np.ndarray) -> _MappedArray | np.ndarray:
        """``array`` by reference when it maps a whole file (as ``np.load(mmap_mode="r")``
        gives), else ``array`` itself (pickled by value)."""
        if (
            isinstance(array, np.memmap)
            and array.filename is not None
            and array.flags.c_contiguous
            and os.path.getsize(array.filename) == array.offset + array.nbytes
        ):
            return cls(array)
        return array

    def open(self) -> np.memmap:
        return np.memmap(
            self.filename, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape
        )


class PatchSampler:
    """Draws ``patch_size`` (D, H, W) patches from ``image [C, D, H, W]`` / ``label [D, H, W]``.

    See the module docstring for the rule. ``pad_image`` fills image voxels outside the
    volume (use the value of air after your normalisation: -1000 for raw HU, 0 after a
    window), ``pad_label`` label voxels (0, background, by default).
    """

    def __init__(
        self,
        patch_size: Sequence[int],
        foreground_fraction: float = 0.33,
        *,
        pad_image: float = 0.0,
        pad_label: int = 0,
    ) -> None:
        size = tuple(patch_size)
        if len(size) != 3 or not all(isinstance(p, int | np.integer) and p >= 1 for p in size):
            raise InvalidInputError(
                f"patch_size must be 3 integers >= 1 (D, H, W), got {patch_size!r}"
            )
        if not (math.isfinite(foreground_fraction) and 0.0 <= foreground_fraction <= 1.0):
            raise InvalidInputError(
                f"foreground_fraction must be in [0, 1], got {foreground_fraction!r}"
            )
        self.patch_size = tuple(int(p) for p in size)
        self.foreground_fraction = float(foreground_fraction)
        self.pad_image, self.pad_label = float(pad_image), int(pad_label)

    def start(
        self,
        shape: Sequence[int],
        rng: np.random.Generator,
        locations: dict[int, np.ndarray] | None = None,
    ) -> tuple[tuple[int, int, int], bool]:
        """The patch's first voxel (may be negative) in a volume of ``shape`` (D, H, W), and
        whether it was a foreground draw. ``locations`` from :func:`class_locations`."""
        size, shape_a = np.asarray(self.patch_size), np.asarray(shape)
        lowest, highest = -(size // 2), shape_a - 1 - size // 2  # centre inside the volume
        foreground = bool(rng.random() < self.foreground_fraction) and bool(locations)
        if foreground:
            classes = sorted(locations)  # type: ignore[arg-type]
            voxels = locations[classes[int(rng.integers(len(classes)))]]  # type: ignore[index]
            voxel = np.unravel_index(int(voxels[rng.integers(len(voxels))]), tuple(shape))
            shift = rng.integers(-(size // 4), size // 4 + 1)
            first = np.clip(np.asarray(voxel) - size // 2 - shift, lowest, highest)
        else:
            first = rng.integers(lowest, highest + 1)
        return tuple(int(v) for v in first), foreground  # type: ignore[return-value]

    def sample(
        self,
        image: Array,
        label: Array,
        rng: np.random.Generator,
        locations: dict[int, np.ndarray] | None = None,
    ) -> tuple[Array, Array]:
        """``(image [C, *patch_size], label [*patch_size])``, copies of the input types.

        Pass ``locations`` (:func:`class_locations` of ``label``, computed once per case);
        without them the label is scanned on every call.
        """
        if image.ndim != 4 or label.ndim != 3 or tuple(image.shape[1:]) != tuple(label.shape):
            raise InvalidInputError(
                f"need image [C, D, H, W] and label [D, H, W] of the same D, H, W, got "
                f"{tuple(image.shape)} and {tuple(label.shape)}"
            )
        if locations is None:
            locations = class_locations(label)
        first, _ = self.start(label.shape, rng, locations)
        return (
            _crop(image, first, self.patch_size, self.pad_image),
            _crop(label, first, self.patch_size, self.pad_label),
        )


class PatchTransform:
    """:class:`PatchDataset`'s ``transform``: one seed drives the patch draw and ``augment``.

    ``set_seed(seed)`` (the trainer calls it before every draw, see
    :class:`pixelseg.engine.sampling.SeededDataset`) splits ``seed`` into a generator for the
    patch position and a seed for ``augment.set_seed`` when it has one, so a resumed run
    draws the same patches and augmentations. Unseeded (``None``), every draw takes fresh
    entropy: random, not reproducible, and never repeated across DataLoader workers.
    ``augment(image [C, D, H, W] float32, mask [D, H, W] int64) -> (image, mask)``.
    """

    def __init__(self, augment: Callable[[torch.Tensor, torch.Tensor], Any] | None = None):
        self.augment = augment
        self._rng: np.random.Generator | None = None

    def set_seed(self, seed: int | None) -> None:
        set_augment_seed = getattr(self.augment, "set_seed", None)
        if seed is None:
            self._rng = None
            if set_augment_seed is not None:
                set_augment_seed(None)
            return
        patch, augment = np.random.SeedSequence(int(seed)).spawn(2)
        self._rng = np.random.default_rng(patch)
        if set_augment_seed is not None:
            set_augment_seed(int(augment.generate_state(1)[0]))

    def rng(self) -> np.random.Generator:
        """The generator of the next patch draw."""
        return self._rng if self._rng is not None else np.random.default_rng()

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.augment is None:
            return image, mask
        return self.augment(image, mask)


class PatchDataset(Dataset):
    """``samples_per_epoch`` random patches from ``cases``, as training samples.

    ``cases`` are ``(image [C, D, H, W] float, label [D, H, W] integer)`` pairs in model
    order (:func:`volume_to_model`), numpy or CPU torch. Sample ``index`` is a patch of case
    ``index % len(cases)`` (every case equally often per epoch, whatever the shuffling),
    named ``f"{names[case]}_{index}"``; it is a dict ``{"image": float32 [C, *patch_size],
    "mask": int64 [*patch_size], "name": str}``. The ``transform`` argument (augmentation,
    ``(image, mask) -> (image, mask)`` on those tensors, optionally with ``set_seed``) is
    wrapped in a :class:`PatchTransform`, the ``transform`` attribute, whose ``set_seed``
    seeds the patch position and the augmentation together.

    Cases may be read-only memory maps (:mod:`pixelseg.medical.case_cache`): a draw copies
    only its patch. Give their stored ``locations`` (one :func:`class_locations` dict per
    case) and ``check_values=False`` (the cache checked the values when it wrote them) so
    that construction reads no volume whole; otherwise every case is checked for NaN and
    its class locations are found here.
    """

    def __init__(
        self,
        cases: Sequence[tuple[Array, Array]],
        patch_size: Sequence[int],
        samples_per_epoch: int,
        foreground_fraction: float = 0.33,
        transform: Callable[[torch.Tensor, torch.Tensor], Any] | None = None,
        *,
        names: Sequence[str] | None = None,
        pad_image: float = 0.0,
        pad_label: int = 0,
        locations: Sequence[dict[int, np.ndarray]] | None = None,
        check_values: bool = True,
    ) -> None:
        self.sampler = PatchSampler(
            patch_size, foreground_fraction, pad_image=pad_image, pad_label=pad_label
        )
        if len(cases) < 1:
            raise InvalidInputError("PatchDataset needs at least one case")
        if int(samples_per_epoch) != samples_per_epoch or samples_per_epoch < 1:
            raise InvalidInputError(f"samples_per_epoch must be >= 1, got {samples_per_epoch!r}")
        self.names = [f"case_{i:03d}" for i in range(len(cases))] if names is None else list(names)
        if len(self.names) != len(cases) or len(set(self.names)) != len(self.names):
            raise InvalidInputError(
                f"names must be {len(cases)} distinct strings, one per case, got {self.names!r}"
            )
        self.images: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        for name, case in zip(self.names, cases, strict=True):
            image, label = self._check(name, case, check_values)
            self.images.append(image)
            self.labels.append(label)
        if locations is not None and len(locations) != len(cases):
            raise InvalidInputError(
                f"locations must hold one dict per case ({len(cases)}), got {len(locations)}"
            )
        self.locations = (
            [class_locations(label) for label in self.labels]
            if locations is None
            else [dict(found) for found in locations]
        )
        self.samples_per_epoch = int(samples_per_epoch)
        self.transform = PatchTransform(transform)

    @staticmethod
    def _check(
        name: str, case: tuple[Array, Array], check_values: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        # asanyarray: a memmap stays a memmap (no copy, and visible as one)
        image, label = (
            c.numpy() if isinstance(c, torch.Tensor) else np.asanyarray(c) for c in case
        )
        if image.ndim != 4 or label.ndim != 3 or image.shape[1:] != label.shape:
            raise InvalidInputError(
                f"case {name}: need image [C, D, H, W] and label [D, H, W] of the same D, H, "
                f"W, got {image.shape} and {label.shape}"
            )
        if label.dtype.kind not in "iub":
            raise InvalidInputError(f"case {name}: label must be integer, got {label.dtype}")
        image = image.astype(np.float32, copy=False)  # a float32 memmap stays one
        if check_values and not np.isfinite(image).all():
            raise NonFiniteError(f"case {name}: image holds NaN or infinite values")
        return image, label

    def __getstate__(self) -> dict[str, Any]:
        # Pickling a memmap copies its data: DataLoader workers started by ``spawn`` (macOS,
        # Windows) would each get every case. Send whole-file memmaps by file name instead.
        state = self.__dict__.copy()
        state["images"] = [_MappedArray.of(a) for a in self.images]
        state["labels"] = [_MappedArray.of(a) for a in self.labels]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key in ("images", "labels"):
            state[key] = [a.open() if isinstance(a, _MappedArray) else a for a in state[key]]
        self.__dict__.update(state)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < self.samples_per_epoch:
            raise IndexError(f"sample {index} is out of range 0..{self.samples_per_epoch - 1}")
        case = index % len(self.images)
        image, label = self.sampler.sample(
            self.images[case], self.labels[case], self.transform.rng(), self.locations[case]
        )
        image_t = torch.from_numpy(image)
        mask_t = torch.from_numpy(label.astype(np.int64, copy=False))
        image_t, mask_t = self.transform(image_t, mask_t)
        return {"image": image_t, "mask": mask_t, "name": f"{self.names[case]}_{index}"}
