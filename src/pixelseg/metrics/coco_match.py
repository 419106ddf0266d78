"""COCO matching and accumulation with pycocotools' exact semantics, vectorised in numpy.

pycocotools' ``COCOeval.evaluateImg`` and ``accumulate`` loop in Python over every image,
category, area range, threshold, detection and ground truth. Here the greedy matching loops
only over the detection rank (``d = 0 .. 99``) and does every (image, category) pair, area
range and IoU threshold at once; accumulation loops over categories and ``maxDets`` only.

The semantics reproduced (``pycocotools/cocoeval.py``, version 2.0.x):

- per (image, category) the detections are sorted by score with a stable sort
  (``np.argsort(-score, kind="mergesort")``) and cut to ``maxDets[-1] = 100``; matching is
  done once with those 100 and ``maxDets`` 1 and 10 only truncate afterwards;
- a ground truth is ignored when it is a crowd or its ``area`` field lies outside the area
  range (both ends inclusive); regular ground truths are tried first, then ignored ones, and
  among candidates with IoU >= min(t, 1 - 1e-10) the one with the highest IoU wins, ties to
  the *last* one in annotation order; a crowd can be matched any number of times;
- a detection matched to an ignored ground truth is ignored, and so is an unmatched one
  whose area lies outside the range; a detection matched to a ground truth whose ``id`` is 0
  counts as unmatched, because pycocotools stores the matched id and tests it for non-zero;
- precision is interpolated at 101 recall points with ``np.searchsorted(side="left")``,
  ``-1`` marks a category without regular ground truth in an area range.

The closed form of the greedy inner loop: with regular ground truths sorted first, the loop
keeps the last candidate whose IoU is >= the best so far and stops at the first ignored one
once it holds a regular match. So the match is the last arg-max over regular candidates, or
if there is none the last arg-max over ignored candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "AREA_RANGES",
    "IOU_THRESHOLDS",
    "MAX_DETS",
    "RECALL_THRESHOLDS",
    "STAT_NAMES",
    "PairRecord",
    "accumulate",
    "summarize",
]

# Built exactly as pycocotools.cocoeval.Params does, so float comparisons agree bit for bit.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)
#: (label, [min, max]) in pixels^2, both ends inclusive.
AREA_RANGES: tuple[tuple[str, tuple[float, float]], ...] = (
    ("all", (0**2, 1e5**2)),
    ("small", (0**2, 32**2)),
    ("medium", (32**2, 96**2)),
    ("large", (96**2, 1e5**2)),
)
STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)

# Elements of the [pairs, areas, thresholds, ground truths] work arrays per matching chunk.
_CHUNK_ELEMENTS = 1 << 21


@dataclass
class PairRecord:
    """One (image, category) pair with at least one ground truth or detection.

    ``image`` and ``category`` are indices into the sorted image and category ids.
    ``ious`` float64 ``[D, G]`` (pycocotools.mask.iou: crowd columns are intersection over
    detection area; a zero-size array when D or G is 0); detections are already sorted by score (stable) and cut to 100.
    ``gt_crowd`` bool ``[G]``, ``gt_area`` float64 ``[G]`` (the annotation's ``area`` field,
    pixels^2), ``gt_id_zero`` bool ``[G]`` (annotation id is 0), ``dt_score`` and
    ``dt_area`` float64 ``[D]``.
    """

    image: int
    category: int
    ious: np.ndarray
    gt_crowd: np.ndarray
    gt_area: np.ndarray
    gt_id_zero: np.ndarray
    dt_score: np.ndarray
    dt_area: np.ndarray


def _outside(area: np.ndarray) -> np.ndarray:
    """bool ``[A, N]``: area outside each area range (pycocotools: ``a < lo or a > hi``)."""
    lo = np.array([r[0] for _, r in AREA_RANGES], dtype=np.float64)[:, None]
    hi = np.array([r[1] for _, r in AREA_RANGES], dtype=np.float64)[:, None]
    return (area[None, :] < lo) | (area[None, :] > hi)


def _split(values: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    """Split ``[A, sum(counts)]`` into per-pair ``[A, count]`` views."""
    return np.split(values, np.cumsum(counts)[:-1], axis=1) if counts else []


def _last_argmax(values: np.ndarray) -> np.ndarray:
    """Index of the last maximum along the last axis (pycocotools keeps later ties)."""
    size = values.shape[-1]
    return size - 1 - np.argmax(values[..., ::-1], axis=-1)


def _match_chunk(
    pairs: Sequence[PairRecord],
    gt_ignored_each: Sequence[np.ndarray],
    dt_outside_each: Sequence[np.ndarray],
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Greedy matching of pairs sorted by detection count, descending.

    ``gt_ignored_each[i]`` bool ``[A, G]`` and ``dt_outside_each[i]`` bool ``[A, D]`` of pair
    ``i``. Returns per pair ``(dt_matched, dt_ignored)`` bool ``[A, T, D]``. The loop runs
    over the detection rank; at rank ``d`` the active pairs are a prefix of the chunk.
    """
    num_a, num_t = len(AREA_RANGES), len(IOU_THRESHOLDS)
    num_p = len(pairs)
    max_d = len(pairs[0].dt_score)
    max_g = max(len(p.gt_area) for p in pairs)
    ious = np.full((num_p, max_d, max_g), -1.0)
    gt_ignored = np.ones((num_p, num_a, max_g), dtype=bool)
    crowd = np.zeros((num_p, max_g), dtype=bool)
    id_zero = np.zeros((num_p, max_g), dtype=bool)
    active = np.zeros(max_d + 1, dtype=np.int64)
    for i, p in enumerate(pairs):
        d, g = p.ious.shape
        ious[i, :d, :g] = p.ious
        gt_ignored[i, :, :g] = gt_ignored_each[i]
        crowd[i, :g] = p.gt_crowd
        id_zero[i, :g] = p.gt_id_zero
        active[d] = i + 1  # pairs 0..i have at least d detections
    active = np.maximum.accumulate(active[::-1])[::-1]
    thresholds = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[None, None, :, None]
    taken = np.zeros((num_p, num_a, num_t, max_g), dtype=bool)
    matched = np.zeros((num_p, num_a, num_t, max_d), dtype=bool)
    ignored = np.zeros((num_p, num_a, num_t, max_d), dtype=bool)
    columns = np.arange(max_g)
    for d in range(max_d):
        n = active[d + 1]
        iou = ious[:n, d, None, None, :]  # [n, 1, 1, G]
        # A matched crowd stays a candidate; a matched regular ground truth does not.
        free = ~(taken[:n] & ~crowd[:n, None, None, :])
        candidate = free & (iou >= thresholds)
        ign = gt_ignored[:n, :, None, :]
        regular = candidate & ~ign
        fallback = candidate & ign
        has_regular = regular.any(axis=-1)
        has_any = has_regular | fallback.any(axis=-1)
        best = np.where(
            has_regular,
            _last_argmax(np.where(regular, iou, -np.inf)),
            _last_argmax(np.where(fallback, iou, -np.inf)),
        )  # [n, A, T]
        best_ignored = np.take_along_axis(gt_ignored[:n], best, axis=-1)
        best_zero = id_zero[np.arange(n)[:, None, None], best]
        matched[:n, :, :, d] = has_any & ~best_zero
        ignored[:n, :, :, d] = has_any & best_ignored
        taken[:n] |= (columns == best[..., None]) & has_any[..., None]
    out = []
    for i, p in enumerate(pairs):
        d = len(p.dt_score)
        m, ig = matched[i, :, :, :d], ignored[i, :, :, :d]
        # Unmatched detections outside the area range are ignored (pycocotools: dtm == 0).
        ig = ig | (~m & dt_outside_each[i][:, None, :])
        out.append((m, ig))
    return out


def _match_all(
    pairs: Sequence[PairRecord], gt_ignored: Sequence[np.ndarray], dt_outside: Sequence[np.ndarray]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Match every pair, in chunks that bound the work arrays' size."""
    order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i].dt_score))
    results: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(pairs)
    start = 0
    while start < len(order):
        # Per pair and ground truth: A * T work elements plus D_max IoUs.
        per_gt = len(AREA_RANGES) * len(IOU_THRESHOLDS) + len(pairs[order[start]].dt_score)
        stop, widest = start, 1
        while stop < len(order):
            widest = max(widest, len(pairs[order[stop]].gt_area))
            if stop > start and (stop - start + 1) * per_gt * widest > _CHUNK_ELEMENTS:
                break
            stop += 1
        members = order[start:stop]
        chunk = [pairs[i] for i in members]
        if len(chunk[0].dt_score) == 0:  # no detections left: nothing to match
            num_a, num_t = len(AREA_RANGES), len(IOU_THRESHOLDS)
            empty = np.zeros((num_a, num_t, 0), dtype=bool)
            for i in order[start:]:
                results[i] = (empty, empty)
            break
        matched = _match_chunk(
            chunk, [gt_ignored[i] for i in members], [dt_outside[i] for i in members]
        )
        for i, res in zip(members, matched, strict=True):
            results[i] = res
        start = stop
    return results  # type: ignore[return-value]


def accumulate(pairs: Sequence[PairRecord], num_categories: int) -> dict[str, np.ndarray]:
    """Precision ``[T, R, K, A, M]`` and recall ``[T, K, A, M]`` as ``COCOeval.eval`` has them.

    ``pairs`` in any order; ``num_categories`` K counts every category in the ground truth's
    ``categories`` (those without ground truth stay -1).
    """
    num_t, num_r = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
    num_a, num_m = len(AREA_RANGES), len(MAX_DETS)
    precision = -np.ones((num_t, num_r, num_categories, num_a, num_m))
    recall = -np.ones((num_t, num_categories, num_a, num_m))
    gt_ignored = _split(
        np.concatenate([p.gt_crowd for p in pairs] or [np.zeros(0, bool)])[None, :]
        | _outside(np.concatenate([p.gt_area for p in pairs] or [np.zeros(0)])),
        [len(p.gt_area) for p in pairs],
    )
    dt_outside = _split(
        _outside(np.concatenate([p.dt_area for p in pairs] or [np.zeros(0)])),
        [len(p.dt_area) for p in pairs],
    )
    matches = _match_all(pairs, gt_ignored, dt_outside)
    by_category: dict[int, list[int]] = {}
    for i in sorted(range(len(pairs)), key=lambda i: (pairs[i].category, pairs[i].image)):
        by_category.setdefault(pairs[i].category, []).append(i)
    for k, members in by_category.items():
        npig = (~np.concatenate([gt_ignored[i] for i in members], axis=1)).sum(axis=1)  # [A]
        if not npig.any():
            continue
        scores = np.concatenate([pairs[i].dt_score for i in members])
        rank = np.concatenate([np.arange(len(pairs[i].dt_score)) for i in members])
        dt_matched = np.concatenate([matches[i][0] for i in members], axis=2)
        dt_ignored = np.concatenate([matches[i][1] for i in members], axis=2)
        for m, max_det in enumerate(MAX_DETS):
            keep = rank < max_det
            order = np.argsort(-scores[keep], kind="mergesort")
            hit = dt_matched[:, :, keep][:, :, order]
            skip = dt_ignored[:, :, keep][:, :, order]
            tp_sum = np.cumsum(hit & ~skip, axis=2).astype(float)
            fp_sum = np.cumsum(~hit & ~skip, axis=2).astype(float)
            _precision_recall(tp_sum, fp_sum, npig, precision[:, :, k, :, m], recall[:, k, :, m])
    return {"precision": precision, "recall": recall}


def _precision_recall(
    tp_sum: np.ndarray,
    fp_sum: np.ndarray,
    npig: np.ndarray,
    precision: np.ndarray,
    recall: np.ndarray,
) -> None:
    """Fill ``precision [T, R, A]`` and ``recall [T, A]`` (views) from cumulative counts
    ``[A, T, N]``, for the area ranges with regular ground truth, as pycocotools does."""
    nd = tp_sum.shape[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        rc = tp_sum / npig[:, None, None]
    pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    # pycocotools makes precision non-increasing from the right: pr[i] = max(pr[i:]).
    pr = np.maximum.accumulate(pr[:, :, ::-1], axis=2)[:, :, ::-1]
    for a in np.flatnonzero(npig):
        recall[:, a] = rc[a, :, -1] if nd else 0.0
        for t in range(tp_sum.shape[1]):
            inds = np.searchsorted(rc[a, t], RECALL_THRESHOLDS, side="left")
            inside = inds < nd
            q = np.zeros(len(RECALL_THRESHOLDS))
            q[inside] = pr[a, t, inds[inside]]
            precision[t, :, a] = q


def summarize(precision: np.ndarray, recall: np.ndarray) -> dict[str, float]:
    """The twelve ``COCOeval.stats`` by name, computed as ``COCOeval.summarize`` does."""
    labels = [label for label, _ in AREA_RANGES]

    def mean(ap: bool, iou: float | None = None, area: str = "all", max_det: int = 100) -> float:
        a, m = labels.index(area), MAX_DETS.index(max_det)
        s = precision if ap else recall
        if iou is not None:
            s = s[np.where(iou == IOU_THRESHOLDS)[0]]
        s = s[:, :, :, a, m] if ap else s[:, :, a, m]
        valid = s[s > -1]
        return float(np.mean(valid)) if len(valid) else -1.0

    values = [
        mean(True),
        mean(True, iou=0.5),
        mean(True, iou=0.75),
        mean(True, area="small"),
        mean(True, area="medium"),
        mean(True, area="large"),
        mean(False, max_det=1),
        mean(False, max_det=10),
        mean(False),
        mean(False, area="small"),
        mean(False, area="medium"),
        mean(False, area="large"),
    ]
    return dict(zip(STAT_NAMES, values, strict=True))
