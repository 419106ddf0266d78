"""Augmentation for panoptic samples: instances, ``semantic`` and ``panoptic`` move together.

The spec names and options are the instance ones (:mod:`pixelseg.data.instance_transforms`:
hflip, vflip, resize, scale, scale_jitter, zoom_out, crop, color) and so is the machinery:
one torchvision v2 draw moves the image, boxes, instance masks and both dense maps, which v2
treats as masks (nearest resampling, so ids and classes are never blended). Padding (crop's
``pad_if_needed``, zoom out) fills every mask with 0. That is VOID for the panoptic map; for
the semantic map, whose VOID is 255 and whose 0 means "things", the map travels shifted
(VOID -> 0, class ``c`` -> ``c + 1``) and is shifted back after, so padding comes out VOID.

After a geometric pipeline, every sample is tidied: instances whose mask vanished are
dropped and boxes refit (:func:`~pixelseg.data.instance_transforms.fit_boxes_to_masks`), and
``segments_info`` loses the segments with no pixel left, the others getting ``area`` and
``bbox`` measured on the moved panoptic map. Instance ``k`` stays the ``k``-th thing segment.

Seeding as for instances: ``set_seed(seed)`` draws the next samples from ``seed`` inside
``torch.random.fork_rng``, so the trainer's per-sample seeds reproduce a resumed run exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pixelseg.data.coco_panoptic import segment_index, segment_stats
from pixelseg.data.instance_transforms import (
    INSTANCE_TRANSFORM_NAMES,
    InstanceTransform,
    TransformedInstances,
    build_ops,
    fit_boxes_to_masks,
)
from pixelseg.data.panoptic_sample import SEMANTIC_VOID

__all__ = [
    "PANOPTIC_TRANSFORM_NAMES",
    "PanopticTransform",
    "TransformedPanoptic",
    "build_panoptic_transforms",
    "recount_segments",
]

#: Every name a panoptic transform spec may use (the instance names).
PANOPTIC_TRANSFORM_NAMES: tuple[str, ...] = INSTANCE_TRANSFORM_NAMES


def recount_segments(
    panoptic: torch.Tensor, segments_info: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """``segments_info`` without the segments absent from ``panoptic`` int ``[H, W]``, the
    others with ``area`` (pixels) and ``bbox`` ``[x, y, w, h]`` measured on it; order kept."""
    segment_ids = np.array([s["id"] for s in segments_info], dtype=np.int64)
    index = segment_index(panoptic.numpy(), segment_ids, source="panoptic")
    area, bbox = segment_stats(index, len(segments_info))
    return [
        {**seg, "area": int(a), "bbox": b.tolist()}
        for seg, a, b in zip(segments_info, area, bbox, strict=True)
        if a > 0
    ]


class PanopticTransform(InstanceTransform):
    """A v2 pipeline over a panoptic sample (keys of :mod:`pixelseg.data.panoptic_sample`).

    Returns plain tensors in the input dtypes; other keys pass through. ``tidy`` as for
    :class:`~pixelseg.data.instance_transforms.InstanceTransform`, plus ``segments_info``.
    """

    def _apply(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        semantic, panoptic = sample["semantic"], sample["panoptic"]
        shifted = torch.where(semantic == SEMANTIC_VOID, 0, semantic + 1)
        out, (shifted_t, panoptic_t) = self._transform(sample, (shifted, panoptic))
        out["semantic"] = torch.where(shifted_t == 0, SEMANTIC_VOID, shifted_t - 1)
        out["panoptic"] = panoptic_t
        if not self.tidy:
            return out
        out = fit_boxes_to_masks(out)
        out["segments_info"] = recount_segments(panoptic_t, sample["segments_info"])
        return out

    def __repr__(self) -> str:
        return f"PanopticTransform({self.pipeline.transforms}, tidy={self.tidy})"


def build_panoptic_transforms(
    specs: Sequence[Mapping[str, Any]] | None,
) -> PanopticTransform | None:
    """The transform of ``specs`` (dicts with ``name`` and options, applied in order; names as
    :data:`PANOPTIC_TRANSFORM_NAMES`), or None for an empty list. Unknown names or options
    raise :class:`~pixelseg.errors.InvalidInputError` naming them and the valid ones."""
    if not specs:
        return None
    return PanopticTransform(*build_ops(specs, "panoptic"))


class TransformedPanoptic(TransformedInstances):
    """``dataset`` (a panoptic source: SyntheticPanoptic, CocoPanoptic) with ``transform``
    applied to each sample (None: samples unchanged); the source's category attributes
    (``categories``, ``classes``, ``thing_category_ids``, ``stuff_category_ids``,
    ``stuff_classes``) are copied."""

    def __init__(
        self,
        dataset: Dataset,
        transform: Callable[[Mapping[str, Any]], dict[str, Any]] | None,
    ) -> None:
        super().__init__(dataset, transform)
        self.thing_category_ids = getattr(dataset, "thing_category_ids", None)
        self.stuff_category_ids = getattr(dataset, "stuff_category_ids", None)
        self.stuff_classes = getattr(dataset, "stuff_classes", None)

    def __repr__(self) -> str:
        return f"TransformedPanoptic({self.dataset!r}, {self.transform!r})"
