"""Speed of panoptic quality against torchmetrics' ``PanopticQuality`` on the same maps.

Each pair is a synthetic 512x512 panoptic ground truth (``SyntheticShapes``: shapes are
things, two background textures are stuff, a random rectangle of VOID) and a prediction
made from it: shifted by up to 12 px, sometimes one thing dropped into the stuff or given
another thing category, plus a false-positive box; its ids are re-drawn at random in
``[1, 2^24)`` as in COCO PNGs (the ground truth keeps small ids 1..N, so both of pixelseg's
id-indexing paths run). Pairs are generated one at a time (untimed) and each is scored by
both methods, alternating which goes first, so machine noise hits both alike:

- ``pixelseg``: ``PanopticQuality.update(gt_ids, gt_segments, pred_ids, pred_segments)``
- ``torchmetrics``: ``PanopticQuality(things, stuffs).update(preds, target)`` on the same
  maps as ``[1, H, W, 2]`` (category, segment id), ground-truth VOID as an unknown category.

The two definitions agree on these maps: no crowd regions (torchmetrics has none), one
segment per stuff category (torchmetrics merges a category's stuff segments), and no VOID
in the prediction (torchmetrics also drops the ground truth's pixels on predicted VOID from
the union and excuses false negatives mostly on predicted VOID; the reference does
neither). torchmetrics computes IoUs in float32, so scores agree to ~1e-7 and counts exactly.

Run: ``.venv/bin/python benchmarks/pq.py`` (``--help`` for options). Exits 1 only if the
two disagree; timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelseg.data import SyntheticShapes
from pixelseg.data.synthetic import PANOPTIC_CATEGORIES
from pixelseg.metrics import PanopticQuality

THINGS = sorted(c["id"] for c in PANOPTIC_CATEGORIES if c["isthing"])
STUFF = sorted(c["id"] for c in PANOPTIC_CATEGORIES if not c["isthing"])


def make_pair(
    shapes: SyntheticShapes, index: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[dict], np.ndarray, list[dict]]:
    """(gt ids, gt segments, pred ids, pred segments) for sample ``index``; see the docstring."""
    target = shapes.instance_target(index)
    panoptic = target["panoptic"].numpy()
    category = {s["id"]: s["category_id"] for s in target["segments_info"]}
    h, w = panoptic.shape
    pred = np.roll(panoptic, tuple(rng.integers(-12, 13, 2)), axis=(0, 1))
    things = [i for i, c in category.items() if c in THINGS]
    stuff = [i for i, c in category.items() if c in STUFF]
    pred_category = dict(category)
    if things and stuff and rng.random() < 0.3:
        pred[pred == things[0]] = stuff[0]  # a missed thing
    if len(things) > 1 and rng.random() < 0.3:
        pred_category[things[-1]] = int(
            rng.choice([c for c in THINGS if c != category[things[-1]]])
        )
    y, x = rng.integers(0, h - h // 8), rng.integers(0, w - w // 8)
    extra = max(category) + 1
    pred[y : y + h // 8, x : x + w // 8] = extra  # a false positive (or a wrong merge)
    pred_category[extra] = int(rng.choice(THINGS))
    present = np.unique(pred)
    coco_ids = rng.choice(np.arange(1, 1 << 24), len(present), replace=False)
    pred_segments = [
        {"id": int(new), "category_id": pred_category[int(old)]}
        for old, new in zip(present, coco_ids, strict=True)
    ]
    pred = coco_ids[np.searchsorted(present, pred)]

    gt = panoptic.copy()
    y, x = rng.integers(0, h - h // 4), rng.integers(0, w - w // 4)
    gt[y : y + h // 4, x : x + w // 3] = 0  # VOID
    kept = set(np.unique(gt).tolist())
    gt_segments = [
        {"id": i, "category_id": c, "iscrowd": 0} for i, c in category.items() if i in kept
    ]
    return gt, gt_segments, pred, pred_segments


def to_torchmetrics(ids: np.ndarray, segments: list[dict]) -> torch.Tensor:
    """``[1, H, W, 2]`` (category id, segment id); pixels outside every segment get category 0
    (no category, i.e. VOID for torchmetrics)."""
    seg_ids = np.array([s["id"] for s in segments])
    cats = np.array([s["category_id"] for s in segments])
    order = np.argsort(seg_ids)
    pos = np.minimum(np.searchsorted(seg_ids[order], ids), len(order) - 1)
    category = np.where(seg_ids[order][pos] == ids, cats[order][pos], 0)
    return torch.from_numpy(np.stack([category, ids], axis=-1))[None]


def compare(ours: PanopticQuality, theirs: Any) -> tuple[bool, float]:
    """Equal counts and per-class / All scores within 1e-6; returns (equal, max difference)."""
    per_class = theirs.compute()  # [things then stuff, sorted] x (pq, sq, rq)
    result, counts = ours.compute(), ours.counts
    worst = 0.0
    same_counts = True
    for k, cid in enumerate(THINGS + STUFF):
        for j, key in enumerate(("pq", "sq", "rq")):
            worst = max(worst, abs(result["per_class"][cid][key] - float(per_class[k, j])))
        for key, state in (("tp", "true_positives"), ("fp", "false_positives")):
            same_counts &= counts[cid][key] == int(getattr(theirs, state)[k])
        same_counts &= counts[cid]["fn"] == int(theirs.false_negatives[k])
    seen = (theirs.true_positives + theirs.false_positives + theirs.false_negatives) > 0
    for j, key in enumerate(("pq", "sq", "rq")):
        worst = max(worst, abs(result["All"][key] - float(per_class[seen, j].mean())))
    return bool(same_counts and worst <= 1e-6), worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: .venv/bin/python benchmarks/pq.py --pairs 200 --json pq.json",
    )
    parser.add_argument("--pairs", type=int, default=200, help="image pairs scored by each")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from torchmetrics.detection import PanopticQuality as TorchmetricsPQ

    shapes = SyntheticShapes(num_samples=args.pairs, size=(args.size, args.size), seed=args.seed)
    rng = np.random.default_rng(args.seed)
    ours = PanopticQuality(PANOPTIC_CATEGORIES)
    theirs = TorchmetricsPQ(
        things=set(THINGS), stuffs=set(STUFF), return_sq_and_rq=True, return_per_class=True
    )
    times: dict[str, list[float]] = {"pixelseg": [], "torchmetrics": []}
    for i in range(args.pairs):
        gt, gt_segments, pred, pred_segments = make_pair(shapes, i, rng)
        tm_pred, tm_gt = to_torchmetrics(pred, pred_segments), to_torchmetrics(gt, gt_segments)
        methods = {
            "pixelseg": lambda: ours.update(gt, gt_segments, pred, pred_segments),  # noqa: B023
            "torchmetrics": lambda: theirs.update(tm_pred, tm_gt),  # noqa: B023
        }
        for name in list(methods)[:: 1 if i % 2 == 0 else -1]:
            start = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - start)
    equal, worst = compare(ours, theirs)

    ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    total = {name: sum(t) for name, t in times.items()}
    speedup = ms["torchmetrics"] / ms["pixelseg"]
    print(
        f"pairs={args.pairs} size={args.size}x{args.size} things={THINGS} stuff={STUFF} "
        f"torch={torch.__version__} threads={torch.get_num_threads()}"
    )
    print(f"{'method':14s} {'median ms':>10s} {'mean ms':>9s} {'images/s':>9s}  vs pixelseg")
    for name, t in times.items():
        print(
            f"{name:14s} {ms[name]:10.2f} {1e3 * statistics.fmean(t):9.2f} "
            f"{len(t) / total[name]:9.1f}  {ms[name] / ms['pixelseg']:8.1f}x"
        )
    print(
        f"throughput vs torchmetrics (medians): {speedup:.1f}x (target >= 5x: "
        f"{'met' if speedup >= 5 else 'MISSED'})"
    )
    result = ours.compute()
    print(
        f"PQ All {result['All']['pq']:.6f} SQ {result['All']['sq']:.6f} RQ "
        f"{result['All']['rq']:.6f} (n={result['All']['n']}); counts and scores vs "
        f"torchmetrics: max |diff| {worst:.1e} -> {'EQUAL' if equal else 'DIFFERENT'}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "pairs": args.pairs,
                    "size": args.size,
                    "median_ms": ms,
                    "images_per_s": {n: len(t) / total[n] for n, t in times.items()},
                    "speedup_vs_torchmetrics": speedup,
                    "max_abs_diff": worst,
                    "equal": equal,
                    "pixelseg": result,
                },
                indent=2,
            )
        )
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
