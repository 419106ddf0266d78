"""COCO detection and instance-segmentation AP, equal to pycocotools' ``COCOeval.stats``.

``coco_evaluate(gt_json, results_json, iou_type)`` reads the two COCO files (or their parsed
contents) and returns the twelve stats by name. The IoUs come from ``pycocotools.mask.iou``
(C, per image and category, as COCOeval computes them): reusing the reference's own IoU
keeps the numbers identical bit for bit, and it is already fast; the Python-loop-heavy part
of COCOeval (matching and accumulation) is replaced by the vectorised
:mod:`pixelseg.metrics.coco_match`. :class:`pixelseg.metrics.coco_stream.CocoEvaluator` is
the streaming form fed batch by batch.

Where pycocotools silently misbehaves on bad input this module is explicit: results on
images not in the ground truth, non-finite scores, masks of the wrong size and duplicate
annotation ids raise :class:`~pixelseg.errors.DataError` naming them; annotations and
results whose category or image is unknown are dropped (as pycocotools drops them) with a
warning. An empty result list is valid (pycocotools crashes on it): AP and AR are 0 for
every category with ground truth.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pixelseg.coco_format import mask_api, segmentation_to_rle
from pixelseg.errors import DataError, InvalidInputError
from pixelseg.metrics.coco_match import MAX_DETS, PairRecord, accumulate, summarize

__all__ = ["IOU_TYPES", "coco_accumulate", "coco_evaluate", "image_pairs"]

logger = logging.getLogger(__name__)

IOU_TYPES = ("segm", "bbox")
_SHOWN = 5


def _load(source: str | Path | Any, what: str) -> tuple[Any, str]:
    """Parsed JSON of a path, or ``source`` itself when already parsed; plus a name for errors."""
    if not isinstance(source, str | Path):
        return source, f"the {what} passed in"
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read {what} {str(path)!r}: {exc}") from exc
    if not text.strip():
        raise DataError(f"{what} {str(path)!r} is empty")
    try:
        return json.loads(text), repr(str(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{what} {str(path)!r} is not valid JSON: {exc}") from exc


def _warn_dropped(kind: str, items: list[str], why: str) -> None:
    if items:
        shown = ", ".join(items[:_SHOWN]) + (" ..." if len(items) > _SHOWN else "")
        logger.warning("%d %s dropped, %s: %s", len(items), kind, why, shown)


def _iou(regions_dt: Any, regions_gt: Any, crowd: np.ndarray) -> np.ndarray:
    """IoU ``[D, G]`` by ``pycocotools.mask.iou`` (the reference's own C code, so equal)."""
    num_d, num_g = len(regions_dt), len(regions_gt)
    if num_d == 0 or num_g == 0:
        return np.zeros((num_d, num_g))
    ious = mask_api().iou(regions_dt, regions_gt, [int(c) for c in crowd])
    return np.asarray(ious, dtype=np.float64).reshape(num_d, num_g)


def image_pairs(image: int, gt: Mapping[str, Any], dt: Mapping[str, Any]) -> list[PairRecord]:
    """The (image, category) pairs of one image, with their IoUs computed.

    ``gt``: ``category`` int ``[G]`` (index into the sorted category ids), ``regions`` (list
    of RLEs, or float64 ``[G, 4]`` xywh boxes), ``crowd`` bool, ``area`` float64 and
    ``id_zero`` bool ``[G]``, in annotation order. ``dt``: ``category``, ``regions``,
    ``score`` and ``area`` ``[D]`` in result order.
    """
    # One IoU call per image (not per category): the same values, far fewer calls into C.
    full = _iou(dt["regions"], gt["regions"], gt["crowd"])
    pairs = []
    for k in sorted(set(gt["category"].tolist()) | set(dt["category"].tolist())):
        g = np.flatnonzero(gt["category"] == k)
        d = np.flatnonzero(dt["category"] == k)
        # Stable sort by descending score, cut to the largest maxDets, as COCOeval does.
        d = d[np.argsort(-dt["score"][d], kind="mergesort")][: MAX_DETS[-1]]
        pairs.append(
            PairRecord(
                image=image,
                category=int(k),
                ious=full[np.ix_(d, g)],
                gt_crowd=gt["crowd"][g],
                gt_area=gt["area"][g],
                gt_id_zero=gt["id_zero"][g],
                dt_score=dt["score"][d],
                dt_area=dt["area"][d],
            )
        )
    return pairs


def _ground_truth(data: Any, name: str, iou_type: str) -> tuple[dict, dict, list[dict]]:
    """Images ``{id: (h, w)}``, category index ``{id: k}`` and the usable annotations."""
    if not isinstance(data, Mapping):
        raise DataError(f"ground truth {name} must be a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"ground truth {name} has no {key!r} list")
    images = {}
    for img in data["images"]:
        if not isinstance(img, Mapping) or "id" not in img:
            raise DataError(f"ground truth {name}: an entry of 'images' has no 'id': {img!r}")
        images[img["id"]] = (img.get("height"), img.get("width"))
    cat_ids = sorted({c["id"] for c in data["categories"]})
    categories = {cid: k for k, cid in enumerate(cat_ids)}
    kept, seen, unknown_img, unknown_cat = [], set(), [], []
    for ann in data["annotations"]:
        aid = ann.get("id")
        if aid in seen:
            raise DataError(f"ground truth {name}: annotation id {aid!r} appears more than once")
        seen.add(aid)
        if ann.get("image_id") not in images:
            unknown_img.append(f"annotation {aid} (image_id {ann.get('image_id')!r})")
        elif ann.get("category_id") not in categories:
            unknown_cat.append(f"annotation {aid} (category_id {ann.get('category_id')!r})")
        else:
            key = "segmentation" if iou_type == "segm" else "bbox"
            for field in ("area", key):
                if field not in ann:
                    raise DataError(f"ground truth {name}: annotation {aid} has no {field!r}")
            kept.append(ann)
    _warn_dropped("annotations", unknown_img, f"their image is not in {name}'s images")
    _warn_dropped("annotations", unknown_cat, f"their category is not in {name}'s categories")
    return images, categories, kept


def _segm_region(item: Mapping, size: tuple, where: str) -> dict[str, Any]:
    height, width = size
    if not isinstance(height, int) or not isinstance(width, int):
        raise DataError(f"{where}: its image has no integer height and width")
    rle, problems = segmentation_to_rle(item["segmentation"], height, width)
    for problem in problems:
        logger.warning("%s: %s", where, problem)
    if rle is None:
        if problems and problems[0].startswith("RLE size"):
            raise DataError(f"{where}: {problems[0]}")
        logger.warning("%s: no usable segmentation; it counts as an empty mask", where)
        return mask_api().encode(np.zeros((height, width, 1), dtype=np.uint8, order="F"))[0]
    return rle


def _results(data: Any, images: dict, categories: dict, iou_type: str) -> list[tuple]:
    """``(image_id, k, region, score, area)`` per usable result, in file order."""
    if not isinstance(data, list):
        raise DataError(f"results must be a JSON list of objects, got {type(data).__name__}")
    unknown_img = sorted({str(r.get("image_id")) for r in data if r.get("image_id") not in images})
    if unknown_img:
        raise DataError(
            f"results refer to {len(unknown_img)} image ids not in the ground truth: "
            + ", ".join(unknown_img[:_SHOWN])
        )
    # pycocotools' loadRes: when the first result has a non-empty bbox, every result's area
    # is its box's w*h, even for segm evaluation; otherwise it is the mask's pixel count.
    box_area = bool(data) and bool(data[0].get("bbox"))
    mask_utils = mask_api()
    out, unknown_cat = [], []
    for i, res in enumerate(data):
        where = f"result {i} (image_id {res['image_id']!r})"
        score = res.get("score")
        if isinstance(score, bool) or not isinstance(score, int | float) or not np.isfinite(score):
            raise DataError(f"{where}: score must be a finite number, got {score!r}")
        if res.get("category_id") not in categories:
            unknown_cat.append(f"{i} (category_id {res.get('category_id')!r})")
            continue
        if iou_type == "segm" or not box_area or not res.get("bbox"):
            if "segmentation" not in res:
                raise DataError(f"{where} has neither a 'segmentation' nor a 'bbox'")
            rle = _segm_region(res, images[res["image_id"]], where)
        if box_area and len(res.get("bbox") or ()) != 4:
            raise DataError(f"{where}: bbox must be [x, y, w, h], got {res.get('bbox')!r}")
        box = res["bbox"] if res.get("bbox") else list(mask_utils.toBbox(rle))
        region = rle if iou_type == "segm" else [float(v) for v in box]
        area = float(box[2] * box[3]) if box_area else float(mask_utils.area(rle))
        out.append((res["image_id"], categories[res["category_id"]], region, float(score), area))
    _warn_dropped("results", unknown_cat, "their category is not in the ground truth")
    return out


def coco_accumulate(
    gt_json: str | Path | Mapping[str, Any],
    results_json: str | Path | Sequence[Mapping[str, Any]],
    iou_type: str = "segm",
) -> dict[str, np.ndarray]:
    """``COCOeval.eval``'s arrays: precision ``[T=10, R=101, K, A=4, M=3]`` and recall
    ``[T, K, A, M]`` (K categories in id order, area ranges all/small/medium/large, maxDets
    1/10/100; -1 where a category has no regular ground truth)."""
    if iou_type not in IOU_TYPES:
        raise InvalidInputError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    gt_data, gt_name = _load(gt_json, "ground truth")
    res_data, _ = _load(results_json, "results")
    images, categories, anns = _ground_truth(gt_data, gt_name, iou_type)
    results = _results(res_data, images, categories, iou_type)
    gt_by_image: dict[Any, list[Mapping]] = {}
    for ann in anns:
        gt_by_image.setdefault(ann["image_id"], []).append(ann)
    dt_by_image: dict[Any, list[tuple]] = {}
    for res in results:
        dt_by_image.setdefault(res[0], []).append(res)
    pairs: list[PairRecord] = []
    for rank, image_id in enumerate(sorted(set(gt_by_image) | set(dt_by_image))):
        g, d = gt_by_image.get(image_id, []), dt_by_image.get(image_id, [])
        if iou_type == "segm":
            g_regions: Any = [
                _segm_region(a, images[image_id], f"ground truth annotation {a['id']}") for a in g
            ]
            d_regions: Any = [r[2] for r in d]
        else:
            g_regions = np.array([a["bbox"] for a in g], dtype=np.float64).reshape(-1, 4)
            d_regions = np.array([r[2] for r in d], dtype=np.float64).reshape(-1, 4)
        gt = {
            "category": np.array([categories[a["category_id"]] for a in g], dtype=np.int64),
            "regions": g_regions,
            "crowd": np.array([bool(a.get("iscrowd", 0)) for a in g], dtype=bool),
            "area": np.array([a["area"] for a in g], dtype=np.float64),
            "id_zero": np.array([a["id"] == 0 for a in g], dtype=bool),
        }
        dt = {
            "category": np.array([r[1] for r in d], dtype=np.int64),
            "regions": d_regions,
            "score": np.array([r[3] for r in d], dtype=np.float64),
            "area": np.array([r[4] for r in d], dtype=np.float64),
        }
        pairs.extend(image_pairs(rank, gt, dt))
    return accumulate(pairs, len(categories))


def coco_evaluate(
    gt_json: str | Path | Mapping[str, Any],
    results_json: str | Path | Sequence[Mapping[str, Any]],
    iou_type: str = "segm",
) -> dict[str, float]:
    """The twelve ``COCOeval.stats`` by name, equal to pycocotools' (-1 where it gives -1).

    ``gt_json``: a COCO instances file (or its parsed dict); ``results_json``: a COCO results
    file (or its parsed list): ``image_id``, ``category_id``, ``score`` and ``segmentation``
    (RLE) for ``iou_type="segm"``, ``bbox`` ``[x, y, w, h]`` in pixels for ``"bbox"``.
    Returns ``AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl`` (fractions in
    0..1; s/m/l: ground-truth ``area`` below 32^2, 32^2..96^2, above 96^2 pixels).
    """
    arrays = coco_accumulate(gt_json, results_json, iou_type)
    return summarize(arrays["precision"], arrays["recall"])
