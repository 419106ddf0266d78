"""Panoptic quality (PQ = SQ x RQ) with the rules of the COCO reference, panopticapi ``pq_compute``.

Per image, a predicted and a ground-truth segment of the same category match when their
IoU > 0.5, where the union leaves out the prediction's pixels on VOID (id 0) of the ground
truth. Matches are unique by construction (two segments cannot both overlap a third by more
than half). Crowd ground-truth segments (``iscrowd`` 1) never match and are never false
negatives; they only excuse predictions: an unmatched prediction is not a false positive
when more than half of its area lies on VOID plus the crowd region of its own category.
Per category, ``pq = sum IoU / (TP + FP/2 + FN/2)``, ``sq = sum IoU / TP``, ``rq = TP /
(TP + FP/2 + FN/2)``; ``All`` / ``Things`` / ``Stuff`` average over the ``n`` categories
with any TP, FP or FN. Scores are on the 0-1 scale like the reference.

Two details follow the reference to the letter: the crowd region of a category is the last
crowd segment of that category in ``segments_info`` (COCO lists at most one per category
and image), and IoUs are summed in the order a single-process reference run sums them (by
ground-truth id, then predicted id), so results agree with it to the last bit on the COCO
sample, not just within rounding.

Per image the work is one ``bincount`` over paired segment rows (an intersection matrix
``[G + 1, P + 1]``, row and column 0 for VOID) and array arithmetic on that small matrix;
no loop over pixels or segment pairs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelseg.errors import DataError, InvalidInputError

__all__ = ["PanopticQuality", "panoptic_quality"]

logger = logging.getLogger(__name__)


def _id_map(ids: Any, what: str, image: object) -> np.ndarray:
    """An integer ``[H, W]`` numpy id map from a numpy array or a (CPU or GPU) tensor."""
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    ids = np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise InvalidInputError(
            f"in the image with ID {image!r} the {what} id map must be an integer [H, W] array, "
            f"got {ids.dtype} {ids.shape}"
        )
    return ids


class PanopticQuality:
    """Streaming PQ / SQ / RQ over images, one :meth:`update` per image.

    ``categories``: COCO categories (dicts with ``id`` and ``isthing``), as in a panoptic
    JSON; ``per_class`` lists them in this order. State is four ``[K]`` arrays (sum of IoU,
    TP, FP, FN per category), so images can be streamed, merged and all-reduced.

    Example::

        pq = PanopticQuality(categories)
        for gt_ids, gt_segments, pred_ids, pred_segments in data:   # ids int [H, W], 0 = VOID
            pq.update(gt_ids, gt_segments, pred_ids, pred_segments)
        pq.all_reduce()                 # no-op unless torch.distributed is initialised
        pq.compute()["All"]["pq"]
    """

    def __init__(self, categories: Sequence[Mapping[str, Any]]) -> None:
        # The format helpers live in pixelseg.data, whose package import pulls in
        # albumentations; importing them where needed keeps `import pixelseg.metrics` light.
        from pixelseg.data.coco_panoptic import check_categories

        categories = check_categories(list(categories), "PanopticQuality categories")
        self._category_ids = [int(c["id"]) for c in categories]
        self._isthing = np.array([int(c["isthing"]) == 1 for c in categories])
        self._row = {cid: k for k, cid in enumerate(self._category_ids)}
        k = len(categories)
        self._iou = np.zeros(k, dtype=np.float64)
        self._tp = np.zeros(k, dtype=np.int64)
        self._fp = np.zeros(k, dtype=np.int64)
        self._fn = np.zeros(k, dtype=np.int64)
        self.num_images = 0

    def __repr__(self) -> str:
        return f"PanopticQuality({len(self._category_ids)} categories, {self.num_images} images)"

    def _table(
        self, segments: Any, what: str, image: object
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Segment ids, category rows and crowd flags of one ``segments_info`` list."""
        from pixelseg.data.coco_panoptic import check_segments

        check_segments(segments, f"the image with ID {image!r} ({what})")
        ids = np.array([s["id"] for s in segments], dtype=np.int64)
        rows = []
        for s in segments:
            if s["category_id"] not in self._row:
                raise DataError(
                    f"in the image with ID {image!r} {what} segment with ID {s['id']} has "
                    f"unknown category_id {s['category_id']}"
                )
            rows.append(self._row[s["category_id"]])
        crowd = np.array([s.get("iscrowd", 0) == 1 for s in segments], dtype=bool)
        return ids, np.array(rows, dtype=np.intp), crowd

    def update(
        self,
        gt_ids: Any,
        gt_segments: Sequence[Mapping[str, Any]],
        pred_ids: Any,
        pred_segments: Sequence[Mapping[str, Any]],
        image: object = None,
    ) -> None:
        """Add one image: ground-truth and predicted id maps ``int [H, W]`` (0 = VOID) and
        their ``segments_info`` lists (``id``, ``category_id``; ``iscrowd`` for the ground
        truth). ``image`` (its id or name) appears in error messages.

        Raises :class:`DataError` for ids in a map missing from its list or the reverse, an
        unknown category, repeated segment ids, maps of different sizes, or a ground-truth
        ``area`` that disagrees with its map (the reference trusts the JSON's area).
        """
        from pixelseg.data.coco_panoptic import segment_index

        gt = _id_map(gt_ids, "ground truth", image)
        pred = _id_map(pred_ids, "prediction", image)
        if gt.shape != pred.shape:
            raise DataError(
                f"in the image with ID {image!r} the prediction is {pred.shape[0]}x"
                f"{pred.shape[1]} (HxW) but the ground truth is {gt.shape[0]}x{gt.shape[1]}"
            )
        g_id, g_cat, g_crowd = self._table(gt_segments, "ground truth", image)
        p_id, p_cat, _ = self._table(pred_segments, "prediction", image)
        g_row = segment_index(gt, g_id, image=image, source="ground truth")
        p_row = segment_index(pred, p_id, image=image, source="prediction")
        cols = len(p_id) + 1
        inter = np.bincount((g_row * cols + p_row).ravel(), minlength=(len(g_id) + 1) * cols)
        inter = inter.reshape(len(g_id) + 1, cols)
        g_area, p_area = inter.sum(1)[1:], inter.sum(0)[1:]
        self._check_areas(g_id, g_area, gt_segments, p_id, p_area, image)

        pair = inter[1:, 1:]  # [G, P] pixels in both segments
        on_void = inter[0, 1:]  # [P] prediction pixels on ground-truth VOID
        union = g_area[:, None] + p_area[None, :] - pair - on_void[None, :]
        candidate = (pair > 0) & (g_cat[:, None] == p_cat[None, :]) & ~g_crowd[:, None]
        iou = np.zeros(pair.shape, dtype=np.float64)
        np.divide(pair, union, out=iou, where=candidate)
        g_match, p_match = np.nonzero(candidate & (iou > 0.5))
        order = np.lexsort((p_id[p_match], g_id[g_match]))  # the reference's summation order
        g_match, p_match = g_match[order], p_match[order]
        np.add.at(self._iou, g_cat[g_match], iou[g_match, p_match])
        np.add.at(self._tp, g_cat[g_match], 1)

        g_free = np.ones(len(g_id), dtype=bool)
        g_free[g_match] = False
        np.add.at(self._fn, g_cat[g_free & ~g_crowd], 1)

        crowd_of = {int(g_cat[k]): k for k in np.flatnonzero(g_crowd)}  # last one wins
        crowd_row = np.array([crowd_of.get(int(c), -1) for c in p_cat], dtype=np.intp)
        has_crowd = crowd_row >= 0
        ignored = on_void.copy()
        ignored[has_crowd] += pair[crowd_row[has_crowd], np.flatnonzero(has_crowd)]
        p_free = np.ones(len(p_id), dtype=bool)
        p_free[p_match] = False
        false_positive = p_free & ~(ignored / p_area > 0.5)
        np.add.at(self._fp, p_cat[false_positive], 1)
        self.num_images += 1

    @staticmethod
    def _check_areas(
        g_id: np.ndarray,
        g_area: np.ndarray,
        gt_segments: Sequence[Mapping[str, Any]],
        p_id: np.ndarray,
        p_area: np.ndarray,
        image: object,
    ) -> None:
        for what, ids, area in (("prediction", p_id, p_area), ("ground truth", g_id, g_area)):
            if (area == 0).any():
                raise DataError(
                    f"in the image with ID {image!r} the following {what} segment IDs "
                    f"{ids[area == 0].tolist()} are in segments_info but not in the PNG"
                )
        for seg, area in zip(gt_segments, g_area.tolist(), strict=True):
            if "area" in seg and seg["area"] != area:
                raise DataError(
                    f"in the image with ID {image!r} ground truth segment with ID {seg['id']} "
                    f"has area {seg['area']} in segments_info but {area} pixels in the PNG"
                )

    def reset(self) -> None:
        """Forget every image seen so far."""
        for state in (self._iou, self._tp, self._fp, self._fn):
            state.fill(0)
        self.num_images = 0

    def merge(self, other: PanopticQuality) -> PanopticQuality:
        """Add ``other``'s counts (same categories in the same order) into this one."""
        if other._category_ids != self._category_ids:
            raise InvalidInputError("cannot merge PanopticQuality over different categories")
        self._iou += other._iou
        self._tp += other._tp
        self._fp += other._fp
        self._fn += other._fn
        self.num_images += other.num_images
        return self

    def all_reduce(self, group: object | None = None) -> None:
        """Sum the counts over all processes (one ``torch.distributed.all_reduce``).

        A no-op unless torch.distributed is initialised. Counts travel as float64, exact up
        to 2^53. Uses the CPU, so pick a group whose backend supports it (gloo).
        """
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            return
        k = len(self._tp)
        packed = torch.from_numpy(
            np.concatenate([self._iou, self._tp, self._fp, self._fn, [self.num_images]])
        ).to(torch.float64)
        dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=group)
        counts = packed.round().long().numpy()
        self._iou = packed[:k].numpy().copy()
        self._tp, self._fp, self._fn = (
            counts[k : 2 * k],
            counts[2 * k : 3 * k],
            counts[3 * k : 4 * k],
        )
        self.num_images = int(counts[4 * k])

    @property
    def counts(self) -> dict[int, dict[str, float | int]]:
        """Per category id: ``iou`` (sum over true positives), ``tp``, ``fp``, ``fn``."""
        return {
            cid: {
                "iou": float(self._iou[k]),
                "tp": int(self._tp[k]),
                "fp": int(self._fp[k]),
                "fn": int(self._fn[k]),
            }
            for k, cid in enumerate(self._category_ids)
        }

    def compute(self) -> dict[str, Any]:
        """Scores as the reference reports them (0-1 scale).

        ``{"All" | "Things" | "Stuff": {"pq", "sq", "rq", "n"}, "per_class": {category_id:
        {"pq", "sq", "rq"}}}``. A category without TP, FP or FN scores 0 in ``per_class`` and
        is left out of the averages; a group with ``n == 0`` averages to NaN (the reference
        divides by zero there).
        """
        per_class: dict[int, dict[str, float]] = {}
        results: dict[str, Any] = {}
        for name, wanted in (("All", None), ("Things", True), ("Stuff", False)):
            pq = sq = rq = 0.0
            n = 0
            for k, cid in enumerate(self._category_ids):
                if wanted is not None and bool(self._isthing[k]) != wanted:
                    continue
                iou, tp = float(self._iou[k]), int(self._tp[k])
                fp, fn = int(self._fp[k]), int(self._fn[k])
                if tp + fp + fn == 0:
                    per_class[cid] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
                    continue
                n += 1
                denominator = tp + 0.5 * fp + 0.5 * fn
                scores = {"pq": iou / denominator, "sq": iou / tp if tp else 0.0}
                scores["rq"] = tp / denominator
                per_class[cid] = scores
                pq, sq, rq = pq + scores["pq"], sq + scores["sq"], rq + scores["rq"]
            nan = math.nan
            results[name] = {
                "pq": pq / n if n else nan,
                "sq": sq / n if n else nan,
                "rq": rq / n if n else nan,
                "n": n,
            }
        results["per_class"] = per_class
        return results


def panoptic_quality(
    gt_json: str | Path,
    pred_json: str | Path,
    gt_folder: str | Path | None = None,
    pred_folder: str | Path | None = None,
) -> dict[str, Any]:
    """PQ of COCO panoptic predictions against ground truth, as panopticapi ``pq_compute``.

    ``gt_json`` needs ``categories``; each of its annotations needs a prediction with the
    same ``image_id`` in ``pred_json`` (predictions for other images are ignored, as in the
    reference). The PNG folders default to the JSON paths without ``.json``. Returns
    :meth:`PanopticQuality.compute`'s dict. Bad input raises :class:`DataError` naming the
    file, image and segment id.
    """
    from pixelseg.data.coco_panoptic import load_panoptic_json, read_panoptic_png

    gt_json, pred_json = Path(gt_json), Path(pred_json)
    gt_folder = Path(gt_folder) if gt_folder is not None else gt_json.with_suffix("")
    pred_folder = Path(pred_folder) if pred_folder is not None else pred_json.with_suffix("")
    for folder in (gt_folder, pred_folder):
        if not folder.is_dir():
            raise DataError(f"panoptic PNG folder {str(folder)!r} does not exist")
    gt = load_panoptic_json(gt_json, require_categories=True)
    pred = load_panoptic_json(pred_json)
    predictions = {ann["image_id"]: ann for ann in pred["annotations"]}
    metric = PanopticQuality(gt["categories"])
    for gt_ann in gt["annotations"]:
        image_id = gt_ann["image_id"]
        if image_id not in predictions:
            raise DataError(
                f"{str(pred_json)!r} has no prediction for the image with ID {image_id}"
            )
        pred_ann = predictions[image_id]
        metric.update(
            read_panoptic_png(gt_folder / gt_ann["file_name"], image_id),
            gt_ann["segments_info"],
            read_panoptic_png(pred_folder / pred_ann["file_name"], image_id),
            pred_ann["segments_info"],
            image=image_id,
        )
    extra = len(set(predictions) - {ann["image_id"] for ann in gt["annotations"]})
    if extra:
        logger.warning("%s: %d predicted images are not in the ground truth", pred_json, extra)
    return metric.compute()
