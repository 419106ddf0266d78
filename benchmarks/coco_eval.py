"""Speed of COCO evaluation against pycocotools and faster-coco-eval, with identical numbers.

Synthetic data, seeded: ``--images`` images of ``--size`` x ``--size`` pixels with about 4.5
ground-truth instances each (rectangles as polygons, ellipses as compressed RLE, 5% crowds
as uncompressed RLE; 3 categories), and detections: about 1.1 perturbed copies per object
(shifted, grown, some with the wrong class) plus a few false positives per image, scores
on a 0.05 grid so some tie. Every method gets the same ground-truth dict and result list
(fresh deep copies, made outside the timing, since pycocotools rewrites them) and does
everything from there: index the ground truth, load the results, convert segmentations to
RLE, compute IoUs, match (evaluate), accumulate and summarise.

- ``pixelseg``: ``pixelseg.metrics.coco_evaluate(gt, results, iou_type)``
- ``pycocotools``: ``COCO`` + ``loadRes`` + ``COCOeval.evaluate/accumulate/summarize``
- ``faster-coco-eval``: the same with its ``COCO`` and ``COCOeval_faster`` (C++)

Repeats are interleaved (the method order rotates) and medians reported. Run:
``.venv/bin/python benchmarks/coco_eval.py`` (``--help`` for options). Exits 1 if any
stat differs from pycocotools' by more than 1e-9; timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pixelseg.metrics import coco_evaluate

CATEGORIES = [{"id": c, "name": f"class{c}"} for c in (1, 2, 3)]


def _rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _shape(rng: np.random.Generator, size: int) -> tuple[np.ndarray, Any]:
    """A random rectangle (segmentation: polygon) or ellipse (compressed RLE)."""
    h, w = (int(v) for v in rng.integers(8, size // 3, size=2))
    y, x = int(rng.integers(0, size - h)), int(rng.integers(0, size - w))
    mask = np.zeros((size, size), dtype=np.uint8)
    if rng.random() < 0.5:
        mask[y : y + h, x : x + w] = 1
        return mask, [[x, y, x + w, y, x + w, y + h, x, y + h]]
    yy, xx = np.ogrid[0:size, 0:size]
    inside = ((yy - y - h / 2) / (h / 2)) ** 2 + ((xx - x - w / 2) / (w / 2)) ** 2 <= 1
    mask[inside] = 1
    return mask, _rle(mask)


def _uncompressed(mask: np.ndarray) -> dict[str, Any]:
    flat = mask.flatten(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    return {"counts": [0, *counts] if flat[0] else counts, "size": list(mask.shape)}


def make_data(images: int, size: int, seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Seeded ground truth (COCO dict) and results (list with bbox and segmentation)."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    imgs, anns, results = [], [], []
    for image_id in range(1, images + 1):
        imgs.append({"id": image_id, "file_name": f"{image_id}.png", "height": size, "width": size})
        for _ in range(int(rng.integers(2, 8))):
            mask, segm = _shape(rng, size)
            crowd = rng.random() < 0.05
            rle = _rle(mask)
            cat = int(rng.integers(1, 4))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "segmentation": _uncompressed(mask) if crowd else segm,
                    "area": float(mask_utils.area(rle)),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "iscrowd": int(crowd),
                }
            )
            for _ in range(int(rng.choice([0, 1, 1, 1, 2]))):
                dy, dx = (int(v) for v in rng.integers(-3, 4, size=2))
                det = np.roll(mask, (dy, dx), axis=(0, 1))
                wrong = rng.random() < 0.1
                results.append(
                    _result(rng, image_id, int(rng.integers(1, 4)) if wrong else cat, det)
                )
        for _ in range(int(rng.integers(0, 3))):
            results.append(_result(rng, image_id, int(rng.integers(1, 4)), _shape(rng, size)[0]))
    return {"images": imgs, "annotations": anns, "categories": CATEGORIES}, results


def _result(rng: np.random.Generator, image_id: int, cat: int, mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    rle = _rle(mask)
    return {
        "image_id": image_id,
        "category_id": cat,
        "segmentation": rle,
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        "score": float(np.round(rng.uniform(0.05, 1.0) * 20) / 20),
    }


def run_pycocotools(gt: dict, results: list, iou_type: str) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(results), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


def run_faster(gt: dict, results: list, iou_type: str) -> list[float]:
    from faster_coco_eval import COCO, COCOeval_faster

    coco_gt = COCO(gt)
    quiet = lambda *args, **kwargs: None  # noqa: E731
    ev = COCOeval_faster(coco_gt, coco_gt.loadRes(results), iou_type, print_function=quiet)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return [float(v) for v in ev.stats[:12]]


def run_pixelseg(gt: dict, results: list, iou_type: str) -> list[float]:
    return list(coco_evaluate(gt, results, iou_type).values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: .venv/bin/python benchmarks/coco_eval.py --images 200 --repeats 7",
    )
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per method")
    parser.add_argument("--iou-types", nargs="+", default=["segm", "bbox"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    methods: dict[str, Callable[[dict, list, str], list[float]]] = {
        "pixelseg coco_evaluate": run_pixelseg,
        "pycocotools COCOeval": run_pycocotools,
    }
    try:
        import faster_coco_eval  # noqa: F401

        methods["faster-coco-eval COCOeval_faster"] = run_faster
    except ImportError:
        print("faster-coco-eval not installed: compared with pycocotools only", file=sys.stderr)
    gt, results = make_data(args.images, args.size, args.seed)
    report: dict[str, Any] = {
        "images": args.images,
        "size": args.size,
        "ground_truth": len(gt["annotations"]),
        "detections": len(results),
        "repeats": args.repeats,
        "iou_types": {},
    }
    ok = True
    names = list(methods)
    for iou_type in args.iou_types:
        times: dict[str, list[float]] = {name: [] for name in names}
        stats: dict[str, list[float]] = {}
        for rep in range(args.repeats + 1):  # the first round warms up and is not timed
            for k in range(len(names)):
                name = names[(rep + k) % len(names)]
                g, r = copy.deepcopy(gt), copy.deepcopy(results)
                start = time.perf_counter()
                stats[name] = methods[name](g, r, iou_type)
                if rep:
                    times[name].append(time.perf_counter() - start)
        ref = np.array(stats["pycocotools COCOeval"])
        entry = {}
        for name in names:
            diff = float(np.abs(np.array(stats[name]) - ref).max())
            entry[name] = {"median_s": statistics.median(times[name]), "max_abs_diff": diff}
        ok &= entry["pixelseg coco_evaluate"]["max_abs_diff"] <= 1e-9
        entry["AP"] = float(ref[0])
        report["iou_types"][iou_type] = entry

    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"{args.images} images {args.size}x{args.size}, {report['ground_truth']} ground "
            f"truths, {report['detections']} detections; median of {args.repeats} runs"
        )
        for iou_type, entry in report["iou_types"].items():
            print(f"\niou_type={iou_type} (AP {entry['AP']:.4f})")
            print(f"{'method':36s} {'median s':>9s} {'max |stat - pycocotools|':>25s}")
            for name in names:
                e = entry[name]
                print(f"{name:36s} {e['median_s']:9.4f} {e['max_abs_diff']:25.2e}")
        print("\nstats", "EQUAL to pycocotools (<= 1e-9)" if ok else "DIFFER from pycocotools")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
