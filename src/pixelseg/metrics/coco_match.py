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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np

__all__ = [
    "AREA_RANGES",
    "IOU_THRESHOLDS",
    "MAX_DETS",
    "RECALL_THRESHOLDS",
    "STAT_NAMES",
    "PairTable",
    "accumulate",
    "pair_table",
    "ranges",
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
class PairTable:
    """Every (image, category) pair with a ground truth or a detection, as flat arrays.

    Per pair ``[P]``: ``image`` (any int that orders images, e.g. the COCO id),
    ``category`` (index into the sorted category ids), ``num_gt`` and ``num_dt``. Ground
    truths ``[G]`` are grouped by pair in pair order, in annotation order within a pair:
    ``gt_crowd`` bool, ``gt_area`` float64 (the annotation's ``area`` field, pixels^2),
    ``gt_id_zero`` bool (annotation id is 0). Detections ``[D]`` are grouped the same way,
    sorted by score with a stable sort and cut to 100 within a pair: ``dt_score``,
    ``dt_area`` float64. ``ious`` float64 holds each pair's ``[num_dt, num_gt]`` block
    row-major, blocks in pair order (pycocotools.mask.iou values: crowd columns are
    intersection over detection area).

    Flat arrays instead of one object per pair: building, gathering across processes and
    matching are then a handful of numpy calls however many pairs there are.
    """

    image: np.ndarray
    category: np.ndarray
    num_gt: np.ndarray
    num_dt: np.ndarray
    gt_crowd: np.ndarray
    gt_area: np.ndarray
    gt_id_zero: np.ndarray
    dt_score: np.ndarray
    dt_area: np.ndarray
    ious: np.ndarray

    @staticmethod
    def concat(tables: Sequence[PairTable]) -> PairTable:
        """One table holding the pairs of ``tables`` (which must not share images)."""
        names = [f.name for f in fields(PairTable)]
        if not tables:
            empty = {
                n: np.zeros(0, dtype=bool if "crowd" in n or "zero" in n else np.float64)
                for n in names
            }
            for n in ("image", "category", "num_gt", "num_dt"):
                empty[n] = np.zeros(0, dtype=np.int64)
            return PairTable(**empty)
        return PairTable(**{n: np.concatenate([getattr(t, n) for t in tables]) for n in names})


def _stable_order(*keys: np.ndarray) -> np.ndarray:
    """Indices sorting by ``keys[0]``, then ``keys[1]``, ...; ties keep the input order."""
    order = np.arange(len(keys[0]))
    for key in reversed(keys):
        order = order[np.argsort(key[order], kind="stable")]
    return order


def ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + c) for s, c in zip(starts, counts)])`` without a loop."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(counts)
    return np.repeat(np.asarray(starts, dtype=np.int64) - ends + counts, counts) + np.arange(total)


def _group_starts(keys: np.ndarray, pair_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For sorted ``keys``: where each of ``pair_keys`` starts and how many it has."""
    lo = np.searchsorted(keys, pair_keys, side="left")
    return lo, np.searchsorted(keys, pair_keys, side="right") - lo


def pair_table(
    gt: Mapping[str, np.ndarray],
    dt: Mapping[str, np.ndarray],
    iou: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> PairTable:
    """Group ground truths and detections of any number of images into a :class:`PairTable`.

    ``gt``: ``image``, ``category``, ``crowd``, ``area``, ``id_zero`` ``[G]`` in annotation
    order; ``dt``: ``image``, ``category``, ``score``, ``area`` ``[D]`` in result order.
    ``iou(d, g)`` returns the IoU of each (detection ``d[i]``, ground truth ``g[i]``) combo
    (indices into the arrays given; every combo shares image and category), float64.
    """
    g_order = _stable_order(gt["image"], gt["category"])
    d_order = _stable_order(dt["image"], dt["category"], -dt["score"])
    num_categories = int(max(gt["category"].max(initial=0), dt["category"].max(initial=0))) + 1
    g_key = gt["image"][g_order].astype(np.int64) * num_categories + gt["category"][g_order]
    d_key = dt["image"][d_order].astype(np.int64) * num_categories + dt["category"][d_order]
    if len(d_key):  # keep the best 100 of each pair, as COCOeval's maxDets[-1]
        first = np.flatnonzero(np.r_[True, d_key[1:] != d_key[:-1]])
        rank = np.arange(len(d_key)) - np.repeat(first, np.diff(np.r_[first, len(d_key)]))
        d_order, d_key = d_order[rank < MAX_DETS[-1]], d_key[rank < MAX_DETS[-1]]
    keys = np.union1d(g_key, d_key)
    g_start, num_gt = _group_starts(g_key, keys)
    _, num_dt = _group_starts(d_key, keys)
    # Each kept detection against the ground truths of its pair, row-major per pair.
    per_dt = np.repeat(num_gt, num_dt)
    combo_d = np.repeat(d_order, per_dt)
    combo_g = g_order[ranges(np.repeat(g_start, num_dt), per_dt)]
    ious = np.asarray(iou(combo_d, combo_g), dtype=np.float64) if len(combo_d) else np.zeros(0)
    return PairTable(
        image=keys // num_categories,
        category=keys % num_categories,
        num_gt=num_gt,
        num_dt=num_dt,
        gt_crowd=gt["crowd"][g_order].astype(bool),
        gt_area=gt["area"][g_order].astype(np.float64),
        gt_id_zero=gt["id_zero"][g_order].astype(bool),
        dt_score=dt["score"][d_order].astype(np.float64),
        dt_area=dt["area"][d_order].astype(np.float64),
        ious=ious,
    )


def _outside(area: np.ndarray) -> np.ndarray:
    """bool ``[N, A]``: area outside each area range (pycocotools: ``a < lo or a > hi``)."""
    lo = np.array([r[0] for _, r in AREA_RANGES], dtype=np.float64)
    hi = np.array([r[1] for _, r in AREA_RANGES], dtype=np.float64)
    return (area[:, None] < lo) | (area[:, None] > hi)


def _offsets(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)


def _match_chunk(
    table: PairTable, pairs: np.ndarray, gt_ignored: np.ndarray, offsets: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy matching of ``pairs`` (indices, sorted by detection count, descending).

    Returns the detections' flat indices and their ``matched``, ``ignored`` (by a match to
    an ignored ground truth) bool ``[n, A, T]``. The loop runs over the detection rank; at
    rank ``d`` the active pairs are a prefix of the chunk.
    """
    num_a, num_t = len(AREA_RANGES), len(IOU_THRESHOLDS)
    num_p = len(pairs)
    nd, ng = table.num_dt[pairs], table.num_gt[pairs]
    max_d, max_g = int(nd[0]), max(int(ng.max()), 1)
    local = np.arange(num_p)
    ious = np.full((num_p, max_d, max_g), -1.0)
    blocks = nd * ng
    where = ranges(offsets["iou"][pairs], blocks)
    within = where - np.repeat(offsets["iou"][pairs], blocks)
    cols = np.repeat(ng, blocks)
    ious[np.repeat(local, blocks), within // np.maximum(cols, 1), within % np.maximum(cols, 1)] = (
        table.ious[where]
    )
    g = ranges(offsets["gt"][pairs], ng)
    g_pair, g_col = np.repeat(local, ng), g - np.repeat(offsets["gt"][pairs], ng)
    ignored_gt = np.ones((num_p, num_a, max_g), dtype=bool)
    ignored_gt[g_pair, :, g_col] = gt_ignored[g]
    crowd = np.zeros((num_p, max_g), dtype=bool)
    crowd[g_pair, g_col] = table.gt_crowd[g]
    id_zero = np.zeros((num_p, max_g), dtype=bool)
    id_zero[g_pair, g_col] = table.gt_id_zero[g]
    active = np.searchsorted(-nd, -np.arange(1, max_d + 1), side="right")  # pairs with > d dets
    thresholds = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)
    # pycocotools keeps the last ground truth of highest IoU, regular ones before ignored
    # ones. Rank each row's columns by (IoU, column): the last arg-max among candidates is
    # then the candidate of highest rank, and adding G to the regular ones' ranks puts
    # them first, so one integer max over the columns picks the match.
    by_iou = np.argsort(ious, axis=-1, kind="stable")  # [P, D, G] (IoU, column) order
    rank = np.empty_like(by_iou)
    np.put_along_axis(rank, by_iou, np.arange(max_g), axis=-1)
    # Work arrays put the ground truths first: the max over them is then an elementwise max
    # of G slabs, which numpy does far faster than reducing a short last axis.
    key_type = np.int16 if 2 * max_g < np.iinfo(np.int16).max else np.int32
    # key + 1: 1..G for ignored candidates, G+1..2G for regular ones, 0 for no candidate.
    key = (rank.transpose(2, 0, 1)[:, :, :, None] + 1).astype(key_type)  # [G, P, D, 1]
    key = key + np.where(ignored_gt, 0, max_g).astype(key_type).transpose(2, 0, 1)[:, :, None, :]
    ious_g = np.ascontiguousarray(ious.transpose(2, 0, 1))  # [G, P, D]
    taken = np.zeros((max_g, num_p, num_a, num_t), dtype=bool)  # regular matches only
    matched = np.zeros((num_p, max_d, num_a, num_t), dtype=bool)
    ignored = np.zeros((num_p, max_d, num_a, num_t), dtype=bool)
    columns = np.arange(max_g)[:, None, None, None]
    for d in range(max_d):
        n = int(active[d])
        over = ious_g[:, :n, d, None] >= thresholds  # [G, n, T]
        # A matched crowd stays a candidate (crowds are never marked taken).
        candidate = over[:, :, None, :] & ~taken[:, :n]  # [G, n, A, T]
        best_key = (candidate * key[:, :n, d, :, None]).max(axis=0)  # [n, A, T]
        has_any = best_key > 0
        rows = np.arange(n)[:, None, None]
        best = by_iou[rows, d, (np.maximum(best_key, 1) - 1) % max_g]
        matched[:n, d] = has_any & ~id_zero[rows, best]
        ignored[:n, d] = has_any & (best_key <= max_g)
        takes = has_any & ~crowd[rows, best]
        taken[:, :n] |= (columns == best) & takes
    dets = ranges(offsets["dt"][pairs], nd)
    d_pair, d_rank = np.repeat(local, nd), dets - np.repeat(offsets["dt"][pairs], nd)
    return dets, matched[d_pair, d_rank], ignored[d_pair, d_rank]


def _match_all(table: PairTable, gt_ignored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``matched`` and ``ignored`` bool ``[D, A, T]`` of every detection, matching in chunks
    that bound the work arrays' size."""
    num_a, num_t = len(AREA_RANGES), len(IOU_THRESHOLDS)
    offsets = {
        "dt": _offsets(table.num_dt),
        "gt": _offsets(table.num_gt),
        "iou": _offsets(table.num_dt * table.num_gt),
    }
    matched = np.zeros((len(table.dt_score), num_a, num_t), dtype=bool)
    ignored = np.zeros_like(matched)
    order = np.argsort(-table.num_dt, kind="stable")
    order = order[table.num_dt[order] > 0]
    num_dt, num_gt = table.num_dt[order].tolist(), table.num_gt[order].tolist()
    start = 0
    while start < len(order):
        # Per pair and ground truth: A * T work elements plus D_max IoUs.
        per_gt = num_a * num_t + num_dt[start]
        stop, widest = start, 1
        while stop < len(order):
            widest = max(widest, num_gt[stop])
            if stop > start and (stop - start + 1) * per_gt * widest > _CHUNK_ELEMENTS:
                break
            stop += 1
        dets, m, ig = _match_chunk(table, order[start:stop], gt_ignored, offsets)
        matched[dets], ignored[dets] = m, ig
        start = stop
    return matched, ignored


def accumulate(table: PairTable, num_categories: int) -> dict[str, np.ndarray]:
    """Precision ``[T, R, K, A, M]`` and recall ``[T, K, A, M]`` as ``COCOeval.eval`` has them.

    ``table``'s pairs in any order; ``num_categories`` K counts every category in the ground
    truth's ``categories`` (those without ground truth stay -1).
    """
    num_t, num_r = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
    num_a, num_m = len(AREA_RANGES), len(MAX_DETS)
    precision = -np.ones((num_t, num_r, num_categories, num_a, num_m))
    recall = -np.ones((num_t, num_categories, num_a, num_m))
    gt_ignored = table.gt_crowd[:, None] | _outside(table.gt_area)  # [G, A]
    matched, ignored = _match_all(table, gt_ignored)
    # Unmatched detections outside the area range are ignored (pycocotools: dtm == 0).
    ignored |= ~matched & _outside(table.dt_area)[:, :, None]
    gt_category = np.repeat(table.category, table.num_gt)
    npig = np.stack(
        [
            np.bincount(gt_category[~gt_ignored[:, a]], minlength=num_categories)
            for a in range(num_a)
        ],
        axis=1,
    )  # [K, A] regular ground truths
    dt_category = np.repeat(table.category, table.num_dt)
    dt_rank = np.arange(len(dt_category)) - np.repeat(_offsets(table.num_dt), table.num_dt)
    # COCOeval concatenates a category's images in id order, each best-first, then sorts by
    # score with a stable sort: one sort by (category, -score, image, rank) does it all.
    order = _stable_order(
        dt_category, -table.dt_score, np.repeat(table.image, table.num_dt), dt_rank
    )
    bounds = np.searchsorted(dt_category[order], np.arange(num_categories + 1))
    for k in np.flatnonzero(npig.any(axis=1)):
        members = order[bounds[k] : bounds[k + 1]]
        for m, max_det in enumerate(MAX_DETS):
            keep = members[dt_rank[members] < max_det]
            hit = matched[keep].transpose(1, 2, 0)  # [A, T, N]
            skip = ignored[keep].transpose(1, 2, 0)
            tp_sum = np.cumsum(hit & ~skip, axis=2).astype(float)
            fp_sum = np.cumsum(~hit & ~skip, axis=2).astype(float)
            _precision_recall(tp_sum, fp_sum, npig[k], precision[:, :, k, :, m], recall[:, k, :, m])
    return {"precision": precision, "recall": recall}


def _precision_recall(
    tp_sum: np.ndarray,
    fp_sum: np.ndarray,
    npig: np.ndarray,
    precision: np.ndarray,
    recall: np.ndarray,
) -> None:
    """Fill ``precision [T, R, A]`` and ``recall [T, A]`` (views) from cumulative counts
    ``[A, T, N]``, for the area ranges with regular ground truth, as pycocotools does.

    pycocotools finds each recall point with ``np.searchsorted(rc, recThrs, side="left")``
    per (area, threshold) row, ``rc = tp_sum / npig``. Division by a positive number is
    monotonic, so ``rc[i] >= r`` exactly when ``tp_sum[i] >= v(r)``, the least count ``v``
    with ``v / npig >= r`` in float64; counts are integers, so every row is searched at
    once in one integer array, each row shifted past the previous one.
    """
    _, num_t, nd = tp_sum.shape
    num_r = len(RECALL_THRESHOLDS)
    with np.errstate(divide="ignore", invalid="ignore"):
        rc = tp_sum / npig[:, None, None]
    pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    # pycocotools makes precision non-increasing from the right: pr[i] = max(pr[i:]).
    pr = np.maximum.accumulate(pr[:, :, ::-1], axis=2)[:, :, ::-1]
    areas = np.flatnonzero(npig)
    if not nd:
        recall[:, areas] = 0.0
        precision[:, :, areas] = 0.0
        return
    recall[:, areas] = rc[areas, :, -1].T
    need = np.stack(  # [A', R]: least count reaching each recall point
        [
            np.searchsorted(np.arange(npig[a] + 1) / npig[a], RECALL_THRESHOLDS, side="left")
            for a in areas
        ]
    )
    counts = tp_sum[areas].astype(np.int64).reshape(-1, nd)  # [A' * T, N] non-decreasing rows
    shift = (np.arange(len(counts)) * (nd + int(npig.max()) + 2))[:, None]
    targets = (np.repeat(need, num_t, axis=0) + shift).reshape(-1)
    inds = (
        np.searchsorted((counts + shift).reshape(-1), targets, side="left").reshape(
            len(counts), num_r
        )
        - np.arange(len(counts))[:, None] * nd
    )
    q = np.where(
        inds < nd, np.take_along_axis(pr[areas].reshape(-1, nd), np.minimum(inds, nd - 1), 1), 0.0
    )
    precision[:, :, areas] = q.reshape(len(areas), num_t, num_r).transpose(1, 2, 0)


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
