"""Augmentation for instance samples: boxes and masks move with the image.

Built on ``torchvision.transforms.v2``, the field's own library for detection targets: the
image, boxes and masks travel as ``tv_tensors.Image``, ``BoundingBoxes`` (XYXY, with their
canvas size) and ``Mask``, and v2 resizes, flips, crops and pads each the right way (images
bilinear with antialiasing, masks nearest, boxes by coordinate arithmetic). None of that is
written here; this module only turns config specs into v2 ops and tidies the targets after.

Spec names (one dict each, ``name`` plus options; :data:`INSTANCE_TRANSFORM_NAMES`):

- ``hflip`` / ``vflip`` ``{p: 0.5}``: horizontal / vertical flip with probability ``p``.
- ``resize`` ``{size, max_size: null}``: ``size`` an int (shorter side, aspect kept) or
  ``[H, W]``; ``max_size`` caps the longer side.
- ``scale`` ``{sizes, max_size: null}``: shorter side drawn from ``sizes`` (a list), longer
  side capped at ``max_size``: Mask R-CNN's multi-scale training.
- ``scale_jitter`` ``{size, scale: [0.1, 2.0]}``: large-scale jitter (Ghiasi et al. 2021, as
  in torchvision's detection references): fit into ``size`` ``[H, W]``, then scale by a
  factor drawn from ``scale``; usually followed by ``crop`` to ``size``.
- ``zoom_out`` ``{max_scale: 2.0, fill: 0.0, p: 0.5}``: place the image on a canvas up to
  ``max_scale`` times larger filled with ``fill`` (SSD's zoom out).
- ``crop`` ``{size, fill: 0.0}``: random crop of ``size`` (int or ``[H, W]``); an image
  smaller than that is padded with ``fill`` first, so every output has the size.
- ``color`` ``{brightness: 0, contrast: 0, saturation: 0, hue: 0}``: colour jitter (factors
  as ``v2.ColorJitter``); the image only.

After a pipeline holding any geometric op, every sample is tidied:

- an instance whose mask became empty (cropped away, or too thin to survive a downscale) is
  dropped, with its box, label, iscrowd and area, so all per-instance keys stay in step;
- boxes are recomputed tight around their masks (``x2`` = last column + 1): v2 clips a box
  to the crop, but a clipped box of a cut non-rectangular object is looser than what is
  left of it, and a box must agree with its mask exactly for box and mask heads to learn the
  same object;
- ``area`` becomes the visible mask pixel count, crowds included: COCO defines the area of
  every annotation, crowd regions too, as its segmentation's pixel area, and the evaluator's
  small/medium/large ranges read it; after a resize the source's value would be in the old
  image's pixels. (A pipeline of colour ops alone leaves boxes and areas as they were, e.g.
  COCO's polygon areas.)

Randomness: every v2 op draws from torch's global generator. ``set_seed(seed)`` (which the
trainer calls before each draw with a seed of the run seed, epoch and index) makes the
next draws come from that seed inside ``torch.random.fork_rng``, so a sample's augmentation
is the same in every run, worker count and resume, and the global stream is left as it was.
Without it, ``torch.manual_seed`` before a call reproduces the draw.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes
from torchvision.transforms import v2

from pixelseg.errors import DataError, InvalidInputError, closest_match, unknown_choice

__all__ = [
    "INSTANCE_TRANSFORM_NAMES",
    "PER_INSTANCE_KEYS",
    "InstanceTransform",
    "TransformedInstances",
    "build_instance_transforms",
    "build_ops",
    "fit_boxes_to_masks",
]

#: Sample keys holding one entry per instance, kept in step when instances are dropped.
PER_INSTANCE_KEYS: tuple[str, ...] = ("boxes", "labels", "masks", "iscrowd", "area")


def _size(value: Any, what: str) -> list[int]:
    """``256`` -> ``[256]`` (shorter side) and ``[256, 320]`` -> ``[256, 320]`` (H, W)."""
    values = [value] if isinstance(value, int) else value
    if (
        not isinstance(values, Sequence)
        or not 1 <= len(values) <= 2
        or not all(isinstance(v, int) and v > 0 for v in values)
    ):
        raise InvalidInputError(f"{what} must be a positive int or [height, width], got {value!r}")
    return list(values)


def _probability(p: Any) -> float:
    if not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
        raise InvalidInputError(f"p must be a probability in [0, 1], got {p!r}")
    return float(p)


def _fill(fill: Any) -> dict[type, float]:
    """Padding value for the image (0..1 units); masks are always padded with 0 (no object)."""
    if not isinstance(fill, int | float) or not 0.0 <= fill <= 1.0:
        raise InvalidInputError(f"fill must be an image value in [0, 1], got {fill!r}")
    return {tv_tensors.Image: float(fill), tv_tensors.Mask: 0}


def _hflip(*, p: float = 0.5) -> v2.Transform:
    return v2.RandomHorizontalFlip(p=_probability(p))


def _vflip(*, p: float = 0.5) -> v2.Transform:
    return v2.RandomVerticalFlip(p=_probability(p))


def _resize(*, size: Any, max_size: int | None = None) -> v2.Transform:
    return v2.Resize(_size(size, "size"), max_size=max_size, antialias=True)


def _scale(*, sizes: Any, max_size: int | None = None) -> v2.Transform:
    sizes = [sizes] if isinstance(sizes, int) else sizes
    if (
        not isinstance(sizes, Sequence)
        or not sizes
        or not all(isinstance(s, int) and s > 0 for s in sizes)
    ):
        raise InvalidInputError(
            f"sizes must be a list of positive shorter-side lengths, got {sizes!r}"
        )
    return v2.RandomShortestSize(list(sizes), max_size=max_size, antialias=True)


def _scale_jitter(*, size: Any, scale: Any = (0.1, 2.0)) -> v2.Transform:
    target = _size(size, "size")
    if len(target) == 1:
        target = target * 2
    if (
        not isinstance(scale, Sequence)
        or len(scale) != 2
        or not all(isinstance(v, int | float) for v in scale)
        or not 0 < scale[0] <= scale[1]
    ):
        raise InvalidInputError(f"scale must be [low, high] with 0 < low <= high, got {scale!r}")
    return v2.ScaleJitter(tuple(target), scale_range=tuple(float(v) for v in scale))


def _zoom_out(*, max_scale: float = 2.0, fill: float = 0.0, p: float = 0.5) -> v2.Transform:
    if not isinstance(max_scale, int | float) or max_scale < 1.0:
        raise InvalidInputError(f"max_scale must be a number >= 1, got {max_scale!r}")
    return v2.RandomZoomOut(fill=_fill(fill), side_range=(1.0, float(max_scale)), p=_probability(p))


def _crop(*, size: Any, fill: float = 0.0) -> v2.Transform:
    return v2.RandomCrop(_size(size, "size"), pad_if_needed=True, fill=_fill(fill))


def _color(
    *, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0
) -> v2.Transform:
    return v2.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)


_BUILDERS: dict[str, Callable[..., v2.Transform]] = {
    "hflip": _hflip,
    "vflip": _vflip,
    "resize": _resize,
    "scale": _scale,
    "scale_jitter": _scale_jitter,
    "zoom_out": _zoom_out,
    "crop": _crop,
    "color": _color,
}

#: Every name an instance transform spec may use.
INSTANCE_TRANSFORM_NAMES: tuple[str, ...] = tuple(sorted(_BUILDERS))

# Ops that leave boxes and masks untouched, so no tidying is needed after them.
_PHOTOMETRIC = frozenset({"color"})


def _build_op(index: int, entry: Any, what: str) -> v2.Transform:
    """Build spec entry number ``index``; errors name the entry, the bad key and the valid ones."""
    where = f"{what} transforms[{index}]"
    if not isinstance(entry, Mapping) or "name" not in entry:
        raise InvalidInputError(
            f"{where} must be a mapping with a 'name' key, got {entry!r}; "
            f"valid names: {', '.join(INSTANCE_TRANSFORM_NAMES)}"
        )
    name = str(entry["name"])
    if name not in _BUILDERS:
        raise InvalidInputError(
            f"{where}: {unknown_choice(f'{what} transform', name, INSTANCE_TRANSFORM_NAMES)}"
        )
    builder = _BUILDERS[name]
    params = inspect.signature(builder).parameters
    args = {k: v for k, v in entry.items() if k != "name"}
    for key in args:
        if key not in params:
            hint = closest_match(key, params)
            did_you_mean = f" Did you mean {hint!r}?" if hint else ""
            raise InvalidInputError(
                f"{where} ({name!r}): unknown option {key!r}.{did_you_mean} "
                f"Valid options: {', '.join(params)}"
            )
    missing = [
        k for k, v in params.items() if v.default is inspect.Parameter.empty and k not in args
    ]
    if missing:
        raise InvalidInputError(f"{where} ({name!r}): missing option(s) {', '.join(missing)}")
    try:
        return builder(**args)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{where} ({name!r}): {exc}") from exc
    except (TypeError, ValueError) as exc:  # torchvision's own argument checks
        raise InvalidInputError(f"{where} ({name!r}): invalid options {args!r}: {exc}") from exc


def fit_boxes_to_masks(sample: Mapping[str, Any]) -> dict[str, Any]:
    """``sample`` without instances whose mask is empty, boxes tight around the masks.

    Boxes become float32 ``(x1, y1, x2, y2)`` with ``x2`` = last column + 1 (as
    ``pycocotools.mask.toBbox`` measures a mask) and ``area`` float64 the mask pixel count;
    every key of :data:`PER_INSTANCE_KEYS` present keeps the same instances.
    """
    masks = sample["masks"]
    keep = (masks.flatten(1) != 0).any(dim=1)
    out = dict(sample)
    for key in PER_INSTANCE_KEYS:
        if key in out:
            out[key] = out[key][keep]
    boxes = masks_to_boxes(out["masks"]).to(torch.float32).reshape(-1, 4)
    boxes[:, 2:] += 1.0  # masks_to_boxes gives the last column itself
    out["boxes"] = boxes
    out["area"] = out["masks"].flatten(1).sum(dim=1).to(torch.float64)
    return out


class InstanceTransform:
    """A v2 pipeline over an instance sample dict (keys as ``CocoInstances`` samples).

    ``image`` float ``[3, H, W]``, ``boxes`` ``[N, 4]`` XYXY pixels and ``masks`` ``[N, H, W]``
    go through ``ops`` together; other keys pass through. With ``tidy`` (any geometric op),
    :func:`fit_boxes_to_masks` runs after. Returns plain tensors in the input dtypes, so the
    result collates and feeds torchvision models like an untransformed sample.
    """

    def __init__(self, ops: Sequence[v2.Transform], tidy: bool = True) -> None:
        self.pipeline = v2.Compose(list(ops))
        self.tidy = tidy
        self.seed: int | None = None

    def set_seed(self, seed: int | None) -> None:
        """Draw the next samples' augmentation from ``seed`` (None: the global generator)."""
        self.seed = None if seed is None else int(seed)

    def __call__(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        if self.seed is None:
            return self._apply(sample)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return self._apply(sample)

    def _apply(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        out, _ = self._transform(sample, ())
        return fit_boxes_to_masks(out) if self.tidy else out

    def _transform(
        self, sample: Mapping[str, Any], maps: Sequence[torch.Tensor]
    ) -> tuple[dict[str, Any], list[torch.Tensor]]:
        """Run the pipeline over the sample's image, boxes and masks and the label ``maps``
        (``[H, W]`` each: resized nearest, padded with 0, like the masks) in one draw; returns
        the sample with the moved image, boxes and masks (untidied) and the moved maps."""
        image, masks = sample["image"], sample["masks"]
        size = tuple(image.shape[-2:])
        if (
            image.ndim != 3
            or masks.ndim != 3
            or masks.shape[-2:] != size
            or any(m.shape != size for m in maps)
        ):
            raise DataError(
                f"sample {sample.get('name', '?')!r}: image {tuple(image.shape)}, masks "
                f"{tuple(masks.shape)} and maps {[tuple(m.shape) for m in maps]} must be "
                "[C, H, W], [N, H, W] and [H, W] of the same H, W"
            )
        boxes = tv_tensors.BoundingBoxes(sample["boxes"], format="XYXY", canvas_size=size)
        image_t, boxes_t, masks_t, *maps_t = self.pipeline(
            tv_tensors.Image(image), boxes, tv_tensors.Mask(masks), *map(tv_tensors.Mask, maps)
        )
        out = dict(sample)
        out["image"] = image_t.as_subclass(torch.Tensor)
        out["boxes"] = boxes_t.as_subclass(torch.Tensor).to(sample["boxes"].dtype)
        out["masks"] = masks_t.as_subclass(torch.Tensor)
        return out, [m.as_subclass(torch.Tensor) for m in maps_t]

    def __repr__(self) -> str:
        return f"InstanceTransform({self.pipeline.transforms}, tidy={self.tidy})"


def build_instance_transforms(
    specs: Sequence[Mapping[str, Any]] | None,
) -> Callable[[Mapping[str, Any]], dict[str, Any]] | None:
    """The transform of ``specs`` (dicts with ``name`` and options, applied in order), or None
    for an empty list. Unknown names or options raise :class:`InvalidInputError` naming them,
    the closest valid one and all valid ones."""
    if not specs:
        return None
    return InstanceTransform(*build_ops(specs, "instance"))


def build_ops(specs: Sequence[Mapping[str, Any]], what: str) -> tuple[list[v2.Transform], bool]:
    """The v2 ops of ``specs`` and whether any is geometric (so targets need tidying).
    ``what`` ("instance", "panoptic") names the spec list in errors."""
    ops = [_build_op(i, entry, what) for i, entry in enumerate(specs)]
    return ops, any(entry["name"] not in _PHOTOMETRIC for entry in specs)


class TransformedInstances(Dataset):
    """``dataset`` (any instance source: CocoInstances, PennFudan, SyntheticInstances) with
    ``transform`` applied to each sample (None: samples unchanged). ``classes`` and
    ``categories`` are the source's, when it has them."""

    def __init__(
        self,
        dataset: Dataset,
        transform: Callable[[Mapping[str, Any]], dict[str, Any]] | None,
    ) -> None:
        self.dataset = dataset
        self.transform = transform
        self.classes = getattr(dataset, "classes", None)
        self.categories = getattr(dataset, "categories", None)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.dataset[index]
        return dict(sample) if self.transform is None else self.transform(sample)

    def __repr__(self) -> str:
        return f"TransformedInstances({self.dataset!r}, {self.transform!r})"
