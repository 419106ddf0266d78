"""The panoptic training sample: thing instances, a semantic map and the panoptic id map.

Every panoptic source (:class:`~pixelseg.data.SyntheticPanoptic`,
:class:`~pixelseg.data.CocoPanoptic`) builds its samples here from one id map and its
``segments_info``, so the keys, dtypes and conventions are the same for all of them:

- thing instances as the instance sources give them: ``boxes`` float32 ``[N, 4]`` xyxy tight
  around the masks (``x2`` = last column + 1), ``labels`` int64 ``[N]`` in ``1..T`` (label
  ``k`` is ``thing_category_ids[k - 1]``), ``masks`` uint8 ``[N, H, W]``, ``iscrowd`` int64
  ``[N]`` (crowd things included, flagged 1), ``area`` float64 ``[N]`` pixel counts;
  instance ``k`` is the ``k``-th thing segment of ``segments_info``;
- ``semantic`` int64 ``[H, W]``: :data:`SEMANTIC_THINGS` (0) on every thing pixel, crowd
  included, ``s`` in ``1..S`` for stuff (``stuff_category_ids[s - 1]``), :data:`SEMANTIC_VOID`
  (255) where the id map is VOID;
- ``panoptic`` int64 ``[H, W]`` the segment ids (0 = VOID) and ``segments_info``: dicts with
  ``id``, ``category_id`` (the dataset's own id), ``iscrowd``, ``isthing``, ``area`` (pixels)
  and ``bbox`` ``[x, y, w, h]``, both measured on the id map (as the COCO reference
  evaluation does), in the order given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pixelseg.data.coco_panoptic import check_categories, segment_index, segment_stats
from pixelseg.errors import DataError

__all__ = ["SEMANTIC_THINGS", "SEMANTIC_VOID", "PanopticCategories", "panoptic_targets"]

#: ``semantic`` value of thing pixels (the stuff classes count from 1).
SEMANTIC_THINGS = 0
#: ``semantic`` value of VOID pixels (unlabelled, padding): ignored by losses and metrics.
SEMANTIC_VOID = 255


@dataclass(frozen=True)
class PanopticCategories:
    """A dataset's panoptic categories split into things and stuff, each in id order.

    Thing label ``k`` (1..T) is ``thing_category_ids[k - 1]``, stuff class ``s`` (1..S) is
    ``stuff_category_ids[s - 1]``; ``classes`` and ``stuff_classes`` are their names.
    """

    categories: list[dict[str, Any]]
    thing_category_ids: list[int]
    stuff_category_ids: list[int]
    classes: list[str]
    stuff_classes: list[str]

    @classmethod
    def from_list(cls, categories: Sequence[Mapping[str, Any]], where: str) -> PanopticCategories:
        """Validate ``categories`` (``id``, ``isthing``, optional ``name``); ``where`` names the
        file in errors. At most 254 stuff categories fit the semantic map beside VOID."""
        cats = sorted((dict(c) for c in check_categories(categories, where)), key=lambda c: c["id"])
        things = [c for c in cats if c["isthing"] == 1]
        stuff = [c for c in cats if c["isthing"] == 0]
        if len(stuff) >= SEMANTIC_VOID:
            raise DataError(
                f"{where}: {len(stuff)} stuff categories; the semantic map holds at most "
                f"{SEMANTIC_VOID - 1} (value {SEMANTIC_VOID} is VOID)"
            )
        return cls(
            categories=cats,
            thing_category_ids=[c["id"] for c in things],
            stuff_category_ids=[c["id"] for c in stuff],
            classes=[str(c.get("name", c["id"])) for c in things],
            stuff_classes=[str(c.get("name", c["id"])) for c in stuff],
        )

    def check_segments(self, segments: Sequence[Mapping[str, Any]], where: str) -> None:
        """Refuse a segment whose ``category_id`` is not one of the categories."""
        known = set(self.thing_category_ids) | set(self.stuff_category_ids)
        for seg in segments:
            if seg["category_id"] not in known:
                raise DataError(
                    f"{where}: segment with ID {seg['id']} has unknown category_id "
                    f"{seg['category_id']}; categories: {sorted(known)}"
                )


def panoptic_targets(
    ids: np.ndarray,
    segments: Sequence[Mapping[str, Any]],
    categories: PanopticCategories,
    *,
    where: str,
) -> dict[str, Any]:
    """The sample keys (see the module docstring) of id map ``ids`` int ``[H, W]`` and its
    ``segments`` (``id``, ``category_id``, optional ``iscrowd``; checked beforehand, e.g. by
    :func:`~pixelseg.data.coco_panoptic.check_segments`).

    An id in the map but not in ``segments``, a listed segment with no pixel or an unknown
    category raises :class:`DataError` starting with ``where`` (the file and the image).
    """
    categories.check_segments(segments, where)
    segment_ids = np.array([s["id"] for s in segments], dtype=np.int64)
    try:
        index = segment_index(ids, segment_ids, source="panoptic")
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from exc
    area, bbox = segment_stats(index, len(segments))
    if (area == 0).any():
        absent = segment_ids[area == 0].tolist()
        raise DataError(
            f"{where}: segment(s) with ID {absent} are listed in segments_info but absent "
            "from the PNG"
        )
    thing_label = {cid: k for k, cid in enumerate(categories.thing_category_ids, start=1)}
    stuff_class = {cid: s for s, cid in enumerate(categories.stuff_category_ids, start=1)}
    category = [int(s["category_id"]) for s in segments]
    rows = np.array([k for k, c in enumerate(category) if c in thing_label], dtype=np.int64)
    # Row 0 of the index is VOID; row k + 1 is segment k.
    semantic_of_row = np.array(
        [SEMANTIC_VOID] + [stuff_class.get(c, SEMANTIC_THINGS) for c in category], dtype=np.int64
    )
    masks = index[None] == (rows + 1)[:, None, None]
    boxes = bbox[rows].astype(np.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
    crowd = [int(s.get("iscrowd", 0)) for s in segments]
    infos = [
        {
            "id": int(segment_ids[k]),
            "category_id": category[k],
            "iscrowd": crowd[k],
            "isthing": int(category[k] in thing_label),
            "area": int(area[k]),
            "bbox": bbox[k].tolist(),
        }
        for k in range(len(segments))
    ]
    return {
        "boxes": torch.from_numpy(boxes),
        "labels": torch.tensor([thing_label[category[k]] for k in rows], dtype=torch.int64),
        "masks": torch.from_numpy(masks.astype(np.uint8)),
        "iscrowd": torch.tensor([crowd[k] for k in rows], dtype=torch.int64),
        "area": torch.from_numpy(area[rows].astype(np.float64)),
        "semantic": torch.from_numpy(semantic_of_row[index]),
        "panoptic": torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)),
        "segments_info": infos,
    }
