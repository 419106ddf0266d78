"""Conversion between semantic + instance annotations and panoptic (id map + segments_info).

A semantic map holds a category id per pixel; instances are boolean masks with a thing
category each. Panoptic takes every instance as one segment and every stuff category present
in the semantic map as one segment (stuff has no instances), in the COCO panoptic layout of
:mod:`pixelseg.data.coco_panoptic`. The reverse gives the semantic map (category id per
pixel, VOID as ``ignore_index``) and the thing segments as instance masks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from pixelseg.data.coco_panoptic import (
    VOID_ID,
    check_categories,
    check_segments,
    segment_index,
    segment_stats,
)
from pixelseg.errors import DataError, InvalidInputError

__all__ = ["panoptic_to_semantic_instances", "semantic_instances_to_panoptic"]


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def semantic_instances_to_panoptic(
    semantic: Any,
    instance_masks: Any,
    instance_labels: Any,
    categories: Sequence[Mapping[str, Any]],
    *,
    instance_crowd: Any = None,
    ignore_index: int = 255,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Build a panoptic annotation from a semantic map and instance masks.

    ``semantic`` int ``[H, W]`` of category ids: each stuff category present becomes one
    segment; thing-category pixels left uncovered by an instance, ``ignore_index`` and ``0``
    (unless 0 is a category id) become VOID. ``instance_masks`` bool ``[N, H, W]`` (they must
    not overlap; an empty mask makes no segment) with ``instance_labels`` int ``[N]`` thing
    category ids and optional ``instance_crowd`` bool ``[N]``. An instance wins over stuff
    pixels it covers.

    Returns ``ids`` int64 ``[H, W]`` (0 = VOID; instances ``1..``, then stuff in category
    order) and ``segments_info`` (``id``, ``category_id``, ``iscrowd``, ``area`` in pixels,
    ``bbox`` ``[x, y, w, h]``). Bad input raises naming the instance index or value.
    """
    by_id = {int(c["id"]): c for c in check_categories(list(categories), "categories")}
    sem = _numpy(semantic)
    if sem.ndim != 2 or not np.issubdtype(sem.dtype, np.integer):
        raise InvalidInputError(
            f"semantic must be an integer [H, W] map, got {sem.dtype} {sem.shape}"
        )
    raw_masks = _numpy(instance_masks)
    if raw_masks.ndim != 3 or raw_masks.shape[1:] != sem.shape:
        raise InvalidInputError(
            f"instance masks must be [N, H, W] = [N, {sem.shape[0]}, {sem.shape[1]}] like the "
            f"semantic map, got {raw_masks.shape}"
        )
    masks = raw_masks.astype(bool)
    labels = _numpy(instance_labels).astype(np.int64).reshape(-1)
    crowd = np.zeros(len(masks), bool) if instance_crowd is None else _numpy(instance_crowd)
    crowd = crowd.astype(bool).reshape(-1)
    if not len(labels) == len(crowd) == len(masks):
        raise InvalidInputError(
            f"{len(masks)} instance masks but {len(labels)} labels and {len(crowd)} crowd flags"
        )
    for k, label in enumerate(labels.tolist()):
        if label not in by_id or by_id[label]["isthing"] != 1:
            things = sorted(c for c, v in by_id.items() if v["isthing"] == 1)
            raise DataError(f"instance {k} has label {label}, not a thing category {things}")
    void_values = {ignore_index} | ({0} if 0 not in by_id else set())
    present = np.unique(sem).tolist()
    unknown = [v for v in present if v not in by_id and v not in void_values]
    if unknown:
        raise DataError(
            f"semantic map holds values {unknown[:10]} that are neither category ids "
            f"{sorted(by_id)} nor void ({sorted(void_values)})"
        )
    stacked = masks.sum(0)
    if (stacked > 1).any():
        y, x = np.argwhere(stacked > 1)[0]
        raise DataError(
            f"instances {np.flatnonzero(masks[:, y, x]).tolist()} overlap (first at pixel y={y}, "
            f"x={x}); a panoptic map gives each pixel one segment"
        )
    keep = masks.any(axis=(1, 2))
    masks, labels, crowd = masks[keep], labels[keep], crowd[keep]
    covered = stacked > 0
    ids = np.where(covered, masks.argmax(0) + 1, VOID_ID).astype(np.int64)
    category = labels.tolist()
    for cid in sorted(c for c in present if c in by_id and by_id[c]["isthing"] != 1):
        region = (sem == cid) & ~covered
        if region.any():
            category.append(cid)
            ids[region] = len(category)
    area, bbox = segment_stats(ids, len(category))
    iscrowd = crowd.tolist() + [False] * (len(category) - len(crowd))
    segments = [
        {"id": k + 1, "category_id": c, "iscrowd": int(z), "area": int(a), "bbox": b.tolist()}
        for k, (c, z, a, b) in enumerate(zip(category, iscrowd, area, bbox, strict=True))
    ]
    return ids, segments


def panoptic_to_semantic_instances(
    ids: Any,
    segments_info: Sequence[Mapping[str, Any]],
    categories: Sequence[Mapping[str, Any]],
    *,
    ignore_index: int = 255,
) -> dict[str, np.ndarray]:
    """Split a panoptic annotation into a semantic map and thing instances.

    ``ids`` int ``[H, W]`` (0 = VOID) with its ``segments_info``. Returns ``semantic`` int64
    ``[H, W]`` (each pixel's category id, ``ignore_index`` on VOID), ``masks`` bool
    ``[N, H, W]``, ``labels`` int64 ``[N]``, ``iscrowd`` bool ``[N]`` and ``segment_ids``
    int64 ``[N]`` for the N thing segments in ``segments_info`` order.
    """
    by_id = {int(c["id"]): c for c in check_categories(list(categories), "categories")}
    id_map = _numpy(ids)
    if id_map.ndim != 2 or not np.issubdtype(id_map.dtype, np.integer):
        raise InvalidInputError(
            f"ids must be an integer [H, W] map, got {id_map.dtype} {id_map.shape}"
        )
    check_segments(segments_info, "panoptic_to_semantic_instances")
    for seg in segments_info:
        if seg["category_id"] not in by_id:
            raise DataError(
                f"segment with ID {seg['id']} has unknown category_id {seg['category_id']}"
            )
    segment_ids = np.array([s["id"] for s in segments_info], dtype=np.int64)
    index = segment_index(id_map, segment_ids, source="panoptic")
    category_of_row = np.array([ignore_index] + [s["category_id"] for s in segments_info])
    things = np.array([by_id[s["category_id"]]["isthing"] == 1 for s in segments_info], bool)
    rows = np.flatnonzero(things)
    return {
        "semantic": category_of_row.astype(np.int64)[index],
        "masks": index[None] == (rows + 1)[:, None, None],
        "labels": category_of_row[rows + 1].astype(np.int64),
        "iscrowd": np.array([segments_info[k].get("iscrowd", 0) == 1 for k in rows], bool),
        "segment_ids": segment_ids[rows],
    }
