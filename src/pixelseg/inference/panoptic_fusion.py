"""Panoptic fusion: a Panoptic FPN's instance and semantic outputs become one panoptic map.

:func:`fuse_panoptic` follows detectron2's ``combine_semantic_and_instance_outputs``
(``detectron2/modeling/meta_arch/panoptic_fpn.py``), the heuristic of the panoptic paper's
section 7 as panopticapi's ``combine_semantic_and_instance_predictions.py`` implements it.
Rules taken from it, in its order:

1. instances are visited by descending score (a *stable* sort here, so equal scores keep the
   input order; detectron2's ``argsort(-scores)`` leaves ties unspecified);
2. the first instance with ``score < score_threshold`` ends the visit (equal is kept);
3. an instance whose binary mask is empty is skipped;
4. an instance is skipped entirely when ``intersection / mask_area > overlap_threshold``,
   the intersection being its pixels already assigned; otherwise only its unassigned
   pixels are pasted, under the next segment id;
5. stuff comes from the semantic argmax, on the pixels still unassigned, in ascending
   class order; class 0 is the "things" class and never becomes stuff;
6. a stuff class whose leftover area is ``< stuff_area_threshold`` is dropped.

Masks are binarised with ``prob >= mask_threshold``, as detectron2's ``paste_masks_in_image``
does before the fusion. Two deviations, both only reachable at edge settings: a segment
with no pixels is never emitted (detectron2 emits one for an instance fully covered at
``overlap_threshold=1`` or a stuff class with no leftover at ``stuff_area_threshold=0``;
panopticapi then rejects the prediction), and ``category_id`` is the COCO id (through
``thing_category_ids`` / ``stuff_category_ids``), not the contiguous label. Additions:
``area`` for every segment, ``instance_index`` for things, and a stuff ``score``: the mean
softmax probability of its class over its pixels.

:func:`naive_paste` is the baseline the fusion is measured against: every instance over the
score threshold in input order, later ones overwriting earlier ones, then stuff on every
pixel left, with no overlap or area rules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pixelseg.errors import InvalidInputError, NonFiniteError

__all__ = ["FusionSettings", "fuse_panoptic", "naive_paste"]


@dataclass(frozen=True)
class FusionSettings:
    """The fusion's thresholds (detectron2's defaults), validated once where config is read.

    Pass them on as ``fuse_panoptic(..., **dataclasses.asdict(settings))``.
    """

    score_threshold: float = 0.5
    overlap_threshold: float = 0.5
    stuff_area_threshold: int = 4096
    mask_threshold: float = 0.5

    def __post_init__(self) -> None:
        for name in ("score_threshold", "overlap_threshold", "mask_threshold"):
            _check_fraction(name, getattr(self, name))
        area = self.stuff_area_threshold
        if isinstance(area, bool) or not isinstance(area, int) or area < 0:
            raise InvalidInputError(
                f"stuff_area_threshold must be an integer number of pixels >= 0, got {area!r}"
            )


def _check_fraction(name: str, value: Any) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidInputError(f"{name} must be a number in [0, 1], got {value!r}")


def _check_category_ids(thing_ids: Sequence[int], stuff_ids: Sequence[int]) -> None:
    seen: set[int] = set()
    for kind, ids in (("thing_category_ids", thing_ids), ("stuff_category_ids", stuff_ids)):
        for cid in ids:
            if isinstance(cid, bool) or not isinstance(cid, int):
                raise InvalidInputError(f"{kind} must hold integer COCO ids, got {cid!r}")
            if cid in seen:
                raise InvalidInputError(
                    f"category id {cid} appears twice in thing_category_ids + stuff_category_ids"
                )
            seen.add(cid)


def _prepare(
    masks: Tensor,
    scores: Tensor,
    labels: Tensor,
    semantic_logits: Tensor,
    thing_ids: Sequence[int],
    stuff_ids: Sequence[int],
    mask_threshold: float,
) -> tuple[Tensor, list[float], list[int], Tensor, Tensor]:
    """Validate the inputs; returns bool masks ``[N, H, W]`` on the logits' device, scores
    and labels as lists, the semantic argmax ``[H, W]`` and its softmax probability."""
    thing_ids, stuff_ids = list(thing_ids), list(stuff_ids)
    _check_category_ids(thing_ids, stuff_ids)
    if semantic_logits.ndim != 3 or not semantic_logits.is_floating_point():
        raise InvalidInputError(
            f"semantic_logits must be float [S + 1, H, W], got {semantic_logits.dtype} "
            f"{tuple(semantic_logits.shape)}"
        )
    if semantic_logits.shape[0] != len(stuff_ids) + 1:
        raise InvalidInputError(
            f"semantic_logits has {semantic_logits.shape[0]} classes; expected "
            f"len(stuff_category_ids) + 1 = {len(stuff_ids) + 1} (class 0 is 'things')"
        )
    if not bool(torch.isfinite(semantic_logits).all()):
        raise NonFiniteError("semantic_logits hold NaN or Inf")
    size = tuple(semantic_logits.shape[1:])
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.ndim != 3 or tuple(masks.shape[1:]) != size:
        raise InvalidInputError(
            f"masks must be [N, {size[0]}, {size[1]}] or [N, 1, {size[0]}, {size[1]}] to match "
            f"semantic_logits, got {tuple(masks.shape)}"
        )
    if masks.dtype != torch.bool and not masks.is_floating_point():
        raise InvalidInputError(f"masks must be bool or float probabilities, got {masks.dtype}")
    count = masks.shape[0]
    if scores.shape != (count,) or labels.shape != (count,):
        raise InvalidInputError(
            f"scores and labels must be [{count}] like masks, got {tuple(scores.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise InvalidInputError(f"labels must be integers 1..T, got dtype {labels.dtype}")
    score_list = [float(s) for s in scores.detach().cpu().tolist()]
    label_list = [int(v) for v in labels.detach().cpu().tolist()]
    for i, score in enumerate(score_list):
        if not math.isfinite(score):
            raise NonFiniteError(f"scores[{i}] is {score}; scores must be finite")
    for i, label in enumerate(label_list):
        if not 1 <= label <= len(thing_ids):
            raise InvalidInputError(
                f"labels[{i}] is {label}; thing labels run 1..{len(thing_ids)} "
                f"(one per thing_category_ids entry)"
            )
    masks = masks.to(semantic_logits.device)
    binary = masks if masks.dtype == torch.bool else masks >= mask_threshold
    semantic = semantic_logits.argmax(dim=0)
    logits = semantic_logits.float()
    # The softmax probability of the argmax class, without materialising the softmax.
    top = logits.gather(0, semantic[None])[0]
    probability = torch.exp(top - torch.logsumexp(logits, dim=0))
    return binary, score_list, label_list, semantic, probability


def _paste_stuff(
    panoptic: Tensor,
    semantic: Tensor,
    probability: Tensor,
    stuff_ids: Sequence[int],
    area_threshold: int,
    segments: list[dict[str, Any]],
) -> None:
    """Stuff on the unassigned pixels, one segment per class with ``area >= area_threshold``
    (and > 0), in ascending class order; ``panoptic`` and ``segments`` grow in place."""
    leftover = torch.where(panoptic == 0, semantic, torch.zeros_like(semantic))
    areas = torch.bincount(leftover.reshape(-1), minlength=len(stuff_ids) + 1).tolist()
    for cls in range(1, len(stuff_ids) + 1):  # 0 is the "things" class
        area = int(areas[cls])
        if area == 0 or area < area_threshold:
            continue
        region = leftover == cls
        segment_id = len(segments) + 1
        panoptic[region] = segment_id
        segments.append(
            {
                "id": segment_id,
                "category_id": int(stuff_ids[cls - 1]),
                "isthing": False,
                "score": float(probability[region].mean()),
                "area": area,
            }
        )


def _thing_segment(
    segment_id: int, index: int, score: float, label: int, area: int, thing_ids: Sequence[int]
) -> dict[str, Any]:
    return {
        "id": segment_id,
        "category_id": int(thing_ids[label - 1]),
        "isthing": True,
        "score": score,
        "area": area,
        "instance_index": index,
    }


def fuse_panoptic(
    masks: Tensor,
    scores: Tensor,
    labels: Tensor,
    semantic_logits: Tensor,
    *,
    thing_category_ids: Sequence[int],
    stuff_category_ids: Sequence[int],
    score_threshold: float = 0.5,
    overlap_threshold: float = 0.5,
    stuff_area_threshold: int = 4096,
    mask_threshold: float = 0.5,
) -> tuple[Tensor, list[dict[str, Any]]]:
    """One image's panoptic map from instance and semantic outputs (rules: module docstring).

    ``masks`` ``[N, H, W]`` or ``[N, 1, H, W]``: probabilities (torchvision's Mask R-CNN) or
    bool; ``scores`` ``[N]``; ``labels`` int ``[N]`` in ``1..T``, label ``k`` being COCO id
    ``thing_category_ids[k - 1]``; ``semantic_logits`` float ``[S + 1, H, W]``, class 0 =
    things, class ``s`` = COCO id ``stuff_category_ids[s - 1]``. Returns the id map int64
    ``[H, W]`` on the logits' device (0 = VOID, segment ids 1..n in paste order) and
    ``segments_info``: dicts ``id``, ``category_id``, ``isthing``, ``score``, ``area`` (+
    ``instance_index`` for things).
    """
    FusionSettings(score_threshold, overlap_threshold, stuff_area_threshold, mask_threshold)
    binary, score_list, label_list, semantic, probability = _prepare(
        masks,
        scores,
        labels,
        semantic_logits,
        thing_category_ids,
        stuff_category_ids,
        mask_threshold,
    )
    panoptic = torch.zeros(semantic.shape, dtype=torch.int64, device=semantic.device)
    segments: list[dict[str, Any]] = []
    mask_areas = binary.sum(dim=(1, 2)).tolist() if len(score_list) else []
    order = torch.sort(torch.tensor(score_list, dtype=torch.float64), descending=True, stable=True)
    for index in order.indices.tolist():
        score = score_list[index]
        if score < score_threshold:
            break
        mask, mask_area = binary[index], int(mask_areas[index])
        if mask_area == 0:
            continue
        free = mask & (panoptic == 0)
        area = int(free.sum())
        intersect_area = mask_area - area  # its pixels already taken
        if intersect_area * 1.0 / mask_area > overlap_threshold or area == 0:
            continue
        segment_id = len(segments) + 1
        panoptic[free] = segment_id
        segments.append(
            _thing_segment(segment_id, index, score, label_list[index], area, thing_category_ids)
        )
    _paste_stuff(
        panoptic, semantic, probability, stuff_category_ids, stuff_area_threshold, segments
    )
    return panoptic, segments


def naive_paste(
    masks: Tensor,
    scores: Tensor,
    labels: Tensor,
    semantic_logits: Tensor,
    *,
    thing_category_ids: Sequence[int],
    stuff_category_ids: Sequence[int],
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
) -> tuple[Tensor, list[dict[str, Any]]]:
    """The baseline: instances with ``score >= score_threshold`` pasted in input order, a
    later one overwriting earlier ones, then stuff (argmax, classes 1..S) on every pixel
    left; no overlap or area rules. Inputs and outputs as :func:`fuse_panoptic`; segments
    left with no pixels are dropped and the ids stay consecutive (things in input order,
    then stuff by class)."""
    _check_fraction("score_threshold", score_threshold)
    _check_fraction("mask_threshold", mask_threshold)
    binary, score_list, label_list, semantic, probability = _prepare(
        masks,
        scores,
        labels,
        semantic_logits,
        thing_category_ids,
        stuff_category_ids,
        mask_threshold,
    )
    # Paste under instance index + 1, then renumber the survivors consecutively.
    pasted = torch.zeros(semantic.shape, dtype=torch.int64, device=semantic.device)
    kept = [i for i, score in enumerate(score_list) if score >= score_threshold]
    for index in kept:
        pasted[binary[index]] = index + 1
    areas = torch.bincount(pasted.reshape(-1), minlength=len(score_list) + 1).tolist()
    renumber = torch.zeros(len(score_list) + 1, dtype=torch.int64)
    segments: list[dict[str, Any]] = []
    for index in kept:
        if areas[index + 1] == 0:
            continue
        segment_id = len(segments) + 1
        renumber[index + 1] = segment_id
        segments.append(
            _thing_segment(
                segment_id,
                index,
                score_list[index],
                label_list[index],
                int(areas[index + 1]),
                thing_category_ids,
            )
        )
    panoptic = renumber.to(pasted.device)[pasted]
    _paste_stuff(panoptic, semantic, probability, stuff_category_ids, 0, segments)
    return panoptic, segments
