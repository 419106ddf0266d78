"""Augmentation declared as data, built on albumentations, ending in normalised tensors.

A spec is a list of dicts such as ``[{"name": "scale_crop", "size": [256, 256]},
{"name": "hflip", "p": 0.5}]`` (the YAML ``data.augment`` list). :func:`build_transforms` turns
it into a :class:`SegmentationTransform` (the vocabulary of names lives in ``augmentations``): ``(image uint8 [H, W, C], mask int [H, W]) ->
(image float32 [C, H, W], mask int64 [H, W])``.

Geometric ops resample the mask with nearest-neighbour interpolation. Pixels that a geometric
op invents (padding, rotation corners) are filled with 0 in the image and with the dataset's
``ignore_index`` in the mask, so the loss and the metrics skip them; a dataset without an
ignore index gets class 0 there (usually background).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pixelseg._optional import lazy_import
from pixelseg.data.augmentations import EVAL_KEPT, TRANSFORM_NAMES, build_op, resize_op
from pixelseg.errors import InvalidInputError, unknown_choice

if TYPE_CHECKING:
    import albumentations as A
else:  # loaded when the first op is built: see pixelseg._optional
    A = lazy_import("albumentations")

__all__ = [
    "NORMALIZATIONS",
    "TRANSFORM_NAMES",
    "SegmentationTransform",
    "build_transforms",
    "channel_stats",
    "denormalize",
    "normalize_image",
    "resolve_normalization",
    "to_tensors",
]

logger = logging.getLogger(__name__)

#: Named normalisations: (mean, std) per channel in 0..1 units. ``none`` only scales to 0..1.
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "none": ((0.0,), (1.0,)),
    "half": ((0.5,), (0.5,)),
}


def resolve_normalization(
    mean: str | float | Sequence[float] = "imagenet", std: float | Sequence[float] | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Turn a name from :data:`NORMALIZATIONS` or explicit values into ``(mean, std)`` tuples.

    Values are in 0..1 units (a pixel ``v`` becomes ``(v / 255 - mean) / std``), one per channel
    or a single value for all channels.
    """
    if isinstance(mean, str):
        if mean not in NORMALIZATIONS:
            raise unknown_choice("normalization", mean, NORMALIZATIONS)
        if std is not None:
            raise InvalidInputError(f"std must be omitted when mean names a preset ({mean!r})")
        return NORMALIZATIONS[mean]
    if std is None:
        raise InvalidInputError(f"std is required with explicit mean values {mean!r}")
    m = tuple(float(v) for v in np.atleast_1d(np.asarray(mean, dtype=float)))
    s = tuple(float(v) for v in np.atleast_1d(np.asarray(std, dtype=float)))
    if len(m) != len(s) or not m:
        raise InvalidInputError(f"mean {m!r} and std {s!r} must have the same length")
    if any(v <= 0 or not np.isfinite(v) for v in s):
        raise InvalidInputError(f"std values must be positive, got {s!r}")
    return m, s


def channel_stats(values: Sequence[float], channels: int, what: str = "stats") -> list[float]:
    """Per-channel stats for a ``channels``-channel image: as given, one value broadcast, or
    RGB stats averaged (for grey or other non-RGB inputs, e.g. ImageNet stats on greyscale)."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == channels:
        return arr.tolist()
    if arr.size == 1:
        return np.repeat(arr, channels).tolist()
    if arr.size == 3:
        return [float(arr.mean())] * channels
    raise InvalidInputError(f"{what} has {arr.size} values but the image has {channels} channels")


def _stats_tensor(values: tuple[float, ...], channels: int, what: str) -> torch.Tensor:
    """:func:`channel_stats` as a ``[C, 1, 1]`` float32 tensor that broadcasts over an image."""
    return torch.tensor(channel_stats(values, channels, what), dtype=torch.float32).view(-1, 1, 1)


def _mask_for_cv2(mask: np.ndarray, fill_mask: int) -> np.ndarray:
    """OpenCV warps uint8/uint16 but not int64: pick the smallest type that holds the labels
    and the fill value."""
    lo, hi = (int(mask.min()), int(mask.max())) if mask.size else (0, 0)
    if lo < 0 or hi > 65535:
        raise InvalidInputError(f"mask values must be in 0..65535, got range [{lo}, {hi}]")
    dtype = np.uint8 if max(hi, fill_mask) < 256 else np.uint16
    return mask if mask.dtype == dtype else mask.astype(dtype)


def to_tensors(
    image: np.ndarray, mask: np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``uint8 [H, W, C]`` -> ``float32 [C, H, W]`` in 0..1, mask -> ``int64 [H, W]``."""
    if image.ndim == 2:
        image = image[:, :, None]
    # astype copies, so the tensor never shares a read-only buffer decoded by PIL.
    img = torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32)).div_(255.0)
    target = None if mask is None else torch.from_numpy(np.asarray(mask).astype(np.int64))
    return img, target


class SegmentationTransform:
    """Augment an image/mask pair, then normalise and convert to tensors.

    Call as ``transform(image, mask)`` with ``image`` ``uint8 [H, W, C]`` (or ``[H, W]``) and
    ``mask`` integer ``[H, W]`` (or ``None`` for prediction); returns ``(float32 [C, H, W],
    int64 [H, W] or None)``. Randomness comes from one generator seeded by ``seed``; inside a
    DataLoader worker it is reseeded from the worker's torch seed (different per worker and
    epoch, reproducible under ``torch.manual_seed``). ``fill_mask``: the mask value the ops
    write into invented pixels (the dataset's ignore index, or 0).
    """

    def __init__(
        self,
        ops: list[A.BasicTransform | A.BaseCompose],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        seed: int | None = None,
        fill_mask: int = 0,
    ) -> None:
        self.ops = ops
        self.mean = mean
        self.std = std
        self.fill_mask = fill_mask
        self.compose = A.Compose(ops) if ops else None
        self._worker_seed: int | None = None
        self.set_seed(seed)

    def set_seed(self, seed: int | None) -> None:
        """Restart the augmentation random stream (one stream shared by all ops)."""
        self.seed = seed
        if self.compose is not None:
            # One shared generator: albumentations' own set_random_seed gives every op the same
            # stream, so e.g. hflip and vflip would always fire together.
            self.compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
        info = torch.utils.data.get_worker_info()
        if info is not None:
            # Seeded explicitly inside a worker (the engine seeds every draw for exact
            # resume): the worker's own reseeding must not override it.
            self._worker_seed = info.seed

    def _reseed_in_worker(self) -> None:
        info = torch.utils.data.get_worker_info()
        if info is None or self.compose is None or self._worker_seed == info.seed:
            return
        self._worker_seed = info.seed
        entropy = [info.seed % 2**63] + ([self.seed] if self.seed is not None else [])
        rng = np.random.default_rng(np.random.SeedSequence(entropy))
        self.compose.set_random_state(rng, random.Random(int(rng.integers(2**63))))

    def __call__(
        self, image: np.ndarray, mask: np.ndarray | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if image.ndim == 2:
            image = image[:, :, None]
        if self.compose is not None:
            self._reseed_in_worker()
            if mask is None:
                image = self.compose(image=image)["image"]
            else:
                out = self.compose(
                    image=image, mask=_mask_for_cv2(np.asarray(mask), self.fill_mask)
                )
                image, mask = out["image"], out["mask"]
            if image.ndim == 2:  # some OpenCV ops drop a single channel axis
                image = image[:, :, None]
        tensor, target = to_tensors(image, mask)
        channels = tensor.shape[0]
        mean = _stats_tensor(self.mean, channels, "mean")
        std = _stats_tensor(self.std, channels, "std")
        return (tensor - mean) / std, target

    def denormalize(self, image: torch.Tensor) -> np.ndarray:
        """Invert the normalisation for display: ``[C, H, W]`` tensor -> ``uint8 [H, W, C]``."""
        return denormalize(image, self.mean, self.std)

    def __repr__(self) -> str:
        names = [type(op).__name__ for op in self.ops]
        return f"SegmentationTransform(ops={names}, mean={self.mean}, std={self.std})"


def build_transforms(
    spec: Sequence[dict[str, Any]] | None,
    *,
    mean: str | float | Sequence[float] = "imagenet",
    std: float | Sequence[float] | None = None,
    train: bool = True,
    size: int | tuple[int, int] | None = None,
    ignore_index: int | None = None,
    seed: int | None = None,
) -> SegmentationTransform:
    """Build the transform for a dataset split from a list of spec dicts.

    ``mean``: a :data:`NORMALIZATIONS` name or per-channel values (0..1 units, with ``std``).
    ``train=False`` keeps only the deterministic entries (resize, center_crop, pad) so the same
    spec serves validation. ``size`` ``(height, width)``: a final resize so batches stack.
    ``ignore_index``: mask value for invented pixels (else 0). Unknown names or arguments raise
    :class:`InvalidInputError` naming them and the valid choices.
    """
    m, s = resolve_normalization(mean, std)
    fill_mask = 0 if ignore_index is None else int(ignore_index)
    if not 0 <= fill_mask <= 65535:
        raise InvalidInputError(
            f"ignore_index must be a mask value in 0..65535 (e.g. 255), got {ignore_index}"
        )
    ops: list[A.BasicTransform | A.BaseCompose] = []
    for i, entry in enumerate(spec or []):
        op = build_op(i, entry, fill_mask)  # validate every entry, even those eval drops
        if train or entry["name"] in EVAL_KEPT:
            ops.append(op)
        else:
            logger.debug("eval transforms: dropping random op %r", entry["name"])
    if size is not None:
        ops.append(resize_op(size))
    return SegmentationTransform(ops, m, s, seed=seed, fill_mask=fill_mask)


def normalize_image(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``uint8 [H, W, C]`` -> normalised float32 ``[C, H, W]`` as the transforms make it."""
    tensor, _ = to_tensors(image)
    channels = tensor.shape[0]
    return (tensor - _stats_tensor(tuple(mean), channels, "mean")) / _stats_tensor(
        tuple(std), channels, "std"
    )


def denormalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Invert the normalisation for display: ``[C, H, W]`` tensor -> ``uint8 [H, W, C]``."""
    channels = image.shape[0]
    pixels = (
        image.detach().cpu().float() * _stats_tensor(tuple(std), channels, "std")
        + _stats_tensor(tuple(mean), channels, "mean")
    ) * 255.0
    return pixels.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
