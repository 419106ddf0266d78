"""Generated COCO ground truth and detections for the COCO evaluation tests and benchmark.

Every case mixes what COCOeval must get right: perturbed (shifted, grown, shrunk) detections,
duplicates, wrong classes, false positives, crowds, a category without ground truth, images
without annotations, images without detections, tied scores, more than 100 detections on an
image, polygons, uncompressed and compressed RLE, and annotation ids starting at 0 or 1.
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

CATEGORY_IDS = (3, 7, 11, 20)  # 20 never has ground truth


def _shape_mask(rng: np.random.Generator, h: int, w: int, box: tuple[int, ...]) -> np.ndarray:
    """A rectangle or an ellipse filling ``box = (x1, y1, x2, y2)``."""
    x1, y1, x2, y2 = box
    mask = np.zeros((h, w), dtype=np.uint8)
    if rng.random() < 0.5:
        mask[y1:y2, x1:x2] = 1
        return mask
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = (y1 + y2 - 1) / 2, (x1 + x2 - 1) / 2
    ry, rx = max((y2 - y1) / 2, 0.5), max((x2 - x1) / 2, 0.5)
    mask[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = 1
    return mask


def _random_box(rng: np.random.Generator, h: int, w: int, big: bool) -> tuple[int, ...]:
    side_h = int(rng.integers(6, h if big else max(7, h // 3)))
    side_w = int(rng.integers(6, w if big else max(7, w // 3)))
    y1, x1 = int(rng.integers(0, h - side_h + 1)), int(rng.integers(0, w - side_w + 1))
    return x1, y1, x1 + side_w, y1 + side_h


def _rle(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _uncompressed(mask: np.ndarray) -> dict[str, Any]:
    flat = mask.flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0, *counts]
    return {"counts": counts, "size": list(mask.shape)}


def _perturb(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    dy, dx = (int(v) for v in rng.integers(-2, 3, size=2))
    out = np.roll(mask, (dy, dx), axis=(0, 1))
    if rng.random() < 0.3:
        out = out.copy()
        ys, xs = np.nonzero(out)
        if len(ys):
            out[ys.min() : ys.max() + 1, xs.min() : min(xs.max() + 3, mask.shape[1])] = 1
    return out


def make_case(
    seed: int, num_images: int = 12, size: tuple[int, int] = (160, 160)
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Return ``(ground truth dict, results list)`` with both ``bbox`` and ``segmentation``."""
    rng = np.random.default_rng(seed)
    image_ids = rng.permutation(np.arange(100, 100 + 3 * num_images))[:num_images].tolist()
    images, annotations, results = [], [], []
    next_id = seed % 2  # odd seeds number annotations from 0 (a pycocotools quirk)
    for n, image_id in enumerate(image_ids):
        h = int(rng.integers(size[0] // 2, size[0] + 1))
        w = int(rng.integers(size[1] // 2, size[1] + 1))
        images.append({"id": image_id, "file_name": f"img{image_id}.png", "height": h, "width": w})
        num_gt = 0 if n % 5 == 1 else int(rng.integers(1, 7))
        for _ in range(num_gt):
            box = _random_box(rng, h, w, big=rng.random() < 0.2)
            mask = _shape_mask(rng, h, w, box)
            crowd = rng.random() < 0.1
            cat = int(rng.choice(CATEGORY_IDS[:3]))
            if crowd:
                segm: Any = _uncompressed(mask)
            elif mask.sum() == (box[2] - box[0]) * (box[3] - box[1]):
                x1, y1, x2, y2 = box
                segm = [[x1, y1, x2, y1, x2, y2, x1, y2]]
            else:
                segm = _rle(mask)
            rle = mask_utils.frPyObjects(segm, h, w) if not isinstance(segm, dict) else None
            rle = mask_utils.merge(rle) if isinstance(rle, list) else _rle(mask)
            area = float(mask_utils.area(rle))
            if rng.random() < 0.1:
                area *= float(rng.uniform(0.5, 2.0))  # 'area' field need not be the mask's
            annotations.append(
                {
                    "id": next_id,
                    "image_id": image_id,
                    "category_id": cat,
                    "segmentation": segm,
                    "area": area,
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "iscrowd": int(crowd),
                }
            )
            next_id += 1
            if n % 7 == 3:
                continue  # an image without detections
            for _ in range(int(rng.choice([0, 1, 1, 1, 2]))):
                det = _perturb(rng, mask)
                wrong = rng.random() < 0.15
                det_cat = int(rng.choice(CATEGORY_IDS)) if wrong else cat
                results.append(_detection(rng, image_id, det_cat, det))
        for _ in range(int(rng.integers(0, 3)) + (120 if n == 2 else 0)):
            box = _random_box(rng, h, w, big=False)
            mask = _shape_mask(rng, h, w, box)
            results.append(_detection(rng, image_id, int(rng.choice(CATEGORY_IDS)), mask, 0.5))
    rng.shuffle(annotations)  # annotation order is not image order
    categories = [{"id": c, "name": f"class{c}", "supercategory": "thing"} for c in CATEGORY_IDS]
    gt = {"images": images, "annotations": annotations, "categories": categories}
    return gt, results


def _detection(
    rng: np.random.Generator, image_id: int, category_id: int, mask: np.ndarray, top: float = 1.0
) -> dict[str, Any]:
    rle = _rle(mask)
    # Scores on a coarse grid so that many tie (the stable sort decides).
    score = float(np.round(rng.uniform(0.05, top), 1))
    return {
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": rle,
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        "score": score,
    }


def pycocotools_eval(
    gt: dict[str, Any], results: list[dict[str, Any]], iou_type: str
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """pycocotools' ``stats`` and ``eval`` arrays (inputs are deep-copied: it mutates them)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats), {"precision": ev.eval["precision"], "recall": ev.eval["recall"]}
