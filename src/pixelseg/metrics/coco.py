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

import itertools
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pixelseg.coco_format import mask_api, polygon_problem, segmentation_to_rle
from pixelseg.errors import DataError, InvalidInputError
from pixelseg.metrics.coco_match import PairTable, accumulate, pair_table, summarize

__all__ = [
    "IOU_TYPES",
    "box_iou_combos",
    "coco_accumulate",
    "coco_evaluate",
    "image_table",
    "mask_iou_combos",
]

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


def box_iou_combos(
    dt_xywh: np.ndarray, gt_xywh: np.ndarray, crowd: np.ndarray, d: np.ndarray, g: np.ndarray
) -> np.ndarray:
    """IoU of boxes ``dt_xywh[d[i]]`` and ``gt_xywh[g[i]]`` (crowd: over the detection's area).

    Written out rather than calling ``pycocotools.mask.iou`` per image because it runs for
    every combo of every image in one pass; the operations are maskApi.c's ``bbIou`` in its
    order, in float64, so the values are the reference's bit for bit (tested).
    """
    db, gb = dt_xywh[d], gt_xywh[g]
    w = np.minimum(db[:, 2] + db[:, 0], gb[:, 2] + gb[:, 0]) - np.maximum(db[:, 0], gb[:, 0])
    h = np.minimum(db[:, 3] + db[:, 1], gb[:, 3] + gb[:, 1]) - np.maximum(db[:, 1], gb[:, 1])
    inter = w * h
    dt_area = db[:, 2] * db[:, 3]
    union = np.where(crowd[g], dt_area, dt_area + gb[:, 2] * gb[:, 3] - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return np.where((w > 0) & (h > 0), iou, 0.0)


def mask_iou_combos(
    dt_rles: Sequence[Any],
    gt_rles: Sequence[Any],
    crowd: np.ndarray,
    dt_image: np.ndarray,
    gt_image: np.ndarray,
    d: np.ndarray,
    g: np.ndarray,
) -> np.ndarray:
    """IoU of RLEs ``dt_rles[d[i]]`` and ``gt_rles[g[i]]`` by ``pycocotools.mask.iou`` (the
    reference's own C code, so equal), one call per image for all its detections and
    ground truths: a call costs more than the few extra IoUs it computes."""
    out = np.zeros(len(d))
    if not len(d):
        return out
    iou = mask_api().iou
    d_lists, d_pos = _by_image(dt_image)
    g_lists, g_pos = _by_image(gt_image)
    image = dt_image[d]
    bounds = np.flatnonzero(np.r_[True, image[1:] != image[:-1], True]).tolist()
    for start, stop in itertools.pairwise(bounds):
        ds, gs = d_lists[int(image[start])], g_lists[int(image[start])]
        values = iou([dt_rles[i] for i in ds], [gt_rles[i] for i in gs], crowd[gs].tolist())
        values = np.asarray(values, dtype=np.float64).reshape(len(ds), len(gs))
        out[start:stop] = values[d_pos[d[start:stop]], g_pos[g[start:stop]]]
    return out


def _by_image(image: np.ndarray) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """``{image: indices of its items}`` and each item's position in its image's list."""
    order = np.argsort(image, kind="stable")
    keys, starts, counts = np.unique(image[order], return_index=True, return_counts=True)
    position = np.empty(len(image), dtype=np.int64)
    position[order] = np.arange(len(image)) - np.repeat(starts, counts)
    groups = np.split(order, starts[1:])
    return dict(zip(keys.tolist(), groups, strict=True)), position


def image_table(
    image: int, gt: Mapping[str, Any], dt: Mapping[str, Any], iou_type: str
) -> PairTable:
    """The (image, category) pairs of one image, with their IoUs computed.

    ``gt``: ``category`` int ``[G]`` (index into the sorted category ids), ``regions`` (list
    of RLEs for ``segm``, or float64 ``[G, 4]`` xywh boxes for ``bbox``), ``crowd`` bool,
    ``area`` float64 and ``id_zero`` bool ``[G]``, in annotation order. ``dt``:
    ``category``, ``regions``, ``score`` and ``area`` ``[D]`` in result order.
    """
    gt = {**gt, "image": np.full(len(gt["category"]), image, dtype=np.int64)}
    dt = {**dt, "image": np.full(len(dt["category"]), image, dtype=np.int64)}
    return pair_table(gt, dt, _combo_iou(gt, dt, iou_type))


def _combo_iou(
    gt: Mapping[str, Any], dt: Mapping[str, Any], iou_type: str
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    if iou_type == "bbox":
        return lambda d, g: box_iou_combos(dt["regions"], gt["regions"], gt["crowd"], d, g)
    return lambda d, g: mask_iou_combos(
        dt["regions"], gt["regions"], gt["crowd"], dt["image"], gt["image"], d, g
    )


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


def _ground_truth_rles(anns: Sequence[Mapping[str, Any]], images: Mapping) -> list[Any]:
    """Each annotation's segmentation as an RLE, as ``COCO.annToRLE`` gives it.

    The usual cases skip the general converter: a compressed RLE of the image's size is used
    as it is, and single valid polygons of one image size go to ``frPyObjects`` in one call
    (merging one polygon's RLE returns it unchanged, so the result is annToRLE's).
    """
    out: list[Any] = [None] * len(anns)
    polygons: dict[tuple[int, int], list[tuple[int, list[float]]]] = {}
    for i, ann in enumerate(anns):
        segmentation = ann["segmentation"]
        height, width = images[ann["image_id"]]
        if type(height) is int and type(width) is int:
            if type(segmentation) is dict and type(segmentation.get("counts")) in (str, bytes):
                if segmentation.get("size") == [height, width]:
                    out[i] = segmentation
                    continue
            elif type(segmentation) is list and len(segmentation) == 1:
                problem, coords = polygon_problem(segmentation[0])
                if problem is None:
                    polygons.setdefault((height, width), []).append((i, coords))  # type: ignore[arg-type]
                    continue
        out[i] = _segm_region(ann, (height, width), f"ground truth annotation {ann['id']}")
    for (height, width), items in polygons.items():
        rles = mask_api().frPyObjects([coords for _, coords in items], height, width)
        for (i, _), rle in zip(items, rles, strict=True):
            out[i] = rle
    return out


def _results(data: Any, images: dict, categories: dict, iou_type: str) -> dict[str, Any]:
    """The usable results, in file order, as columns: ``image_id`` (list), ``category``
    (index), ``score``, ``area`` and ``regions`` (RLEs, or ``[N, 4]`` xywh boxes)."""
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
    image_ids, labels, regions, scores, areas, unknown_cat = [], [], [], [], [], []
    for i, res in enumerate(data):
        score = res.get("score")
        if type(score) is not float and (
            isinstance(score, bool) or not isinstance(score, int | float)
        ):
            raise DataError(
                f"result {i} (image_id {res['image_id']!r}): score must be a finite "
                f"number, got {score!r}"
            )
        if not math.isfinite(score):
            raise DataError(
                f"result {i} (image_id {res['image_id']!r}): score must be a finite "
                f"number, got {score!r}"
            )
        label = categories.get(res.get("category_id"))
        if label is None:
            unknown_cat.append(f"{i} (category_id {res.get('category_id')!r})")
            continue
        bbox = res.get("bbox")
        rle = None
        if iou_type == "segm" or not box_area or not bbox:
            rle = _result_rle(res, images[res["image_id"]], i)
        if box_area and len(bbox or ()) != 4:
            raise DataError(
                f"result {i} (image_id {res['image_id']!r}): bbox must be [x, y, w, h], "
                f"got {bbox!r}"
            )
        box = bbox if bbox else list(mask_utils.toBbox(rle))
        image_ids.append(res["image_id"])
        labels.append(label)
        scores.append(score)
        regions.append(rle if iou_type == "segm" else box)
        areas.append(box[2] * box[3] if box_area else rle)
    _warn_dropped("results", unknown_cat, "their category is not in the ground truth")
    if not box_area and areas:  # mask pixel counts, one call into C for all
        areas = mask_utils.area(areas).tolist()
    return {
        "image_id": image_ids,
        "category": np.array(labels, dtype=np.int64),
        "score": np.array(scores, dtype=np.float64),
        "area": np.array(areas, dtype=np.float64),
        "regions": regions
        if iou_type == "segm"
        else np.array(regions, dtype=np.float64).reshape(-1, 4),
    }


def _result_rle(res: Mapping[str, Any], size: tuple, index: int) -> Any:
    """The result's segmentation as an RLE pycocotools takes (a compressed RLE of the right
    size, the usual case, is used as it is)."""
    segmentation = res.get("segmentation")
    if (
        type(segmentation) is dict
        and type(segmentation.get("counts")) in (str, bytes)
        and segmentation.get("size") == [size[0], size[1]]
    ):
        return segmentation
    if segmentation is None:
        raise DataError(
            f"result {index} (image_id {res['image_id']!r}) has neither a 'segmentation' nor "
            "a 'bbox'"
        )
    return _segm_region(res, size, f"result {index} (image_id {res['image_id']!r})")


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
    rank = {image_id: r for r, image_id in enumerate(sorted(images))}  # COCOeval's order
    gt = {
        "image": np.array([rank[a["image_id"]] for a in anns], dtype=np.int64),
        "category": np.array([categories[a["category_id"]] for a in anns], dtype=np.int64),
        "crowd": np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool),
        "area": np.array([a["area"] for a in anns], dtype=np.float64),
        "id_zero": np.array([a["id"] == 0 for a in anns], dtype=bool),
    }
    if iou_type == "segm":
        gt["regions"] = _ground_truth_rles(anns, images)
    else:
        gt["regions"] = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    dt = {
        "image": np.array([rank[i] for i in results["image_id"]], dtype=np.int64),
        "category": results["category"],
        "score": results["score"],
        "area": results["area"],
        "regions": results["regions"],
    }
    return accumulate(pair_table(gt, dt, _combo_iou(gt, dt, iou_type)), len(categories))


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
