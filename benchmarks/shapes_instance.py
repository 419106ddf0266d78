"""Instance segmentation on synthetic shapes from random weights: mask AP against training
minutes for the shipped Mask R-CNN and YOLACT recipes.

Each model trains through pixelseg's engine with its config (``configs/shapes_maskrcnn.yaml``
or ``configs/shapes_yolact.yaml``) for ``--minutes`` of training time, and is scored every
``--eval-every`` minutes on held-out shapes: ``--holdout`` images drawn with a seed no
training or validation image uses, scored by ``pixelseg.metrics.coco_evaluate``. Scoring
pauses the clock.

    python benchmarks/shapes_instance.py --model maskrcnn --minutes 15 --json runs/shapes_mrcnn.json
    python benchmarks/shapes_instance.py --model yolact --minutes 15 --json runs/shapes_yolact.json

Targets (instance issue), 2 CPU cores: Mask R-CNN (MobileNetV3-FPN) mask AP >= 0.50 within
15 training minutes; YOLACT mask AP >= 0.40 within 15 minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from budget import Curve, CurveCallback, print_curves, time_budget_overrides
from pennfudan import detections
from pixelseg import workflows
from pixelseg.config import load_config
from pixelseg.data import SHAPE_CATEGORIES, SyntheticInstances
from pixelseg.data.coco_write import instances_to_coco
from pixelseg.metrics import coco_evaluate
from pixelseg.metrics.coco_stream import detections_to_coco_results

CONFIGS = {"maskrcnn": "configs/shapes_maskrcnn.yaml", "yolact": "configs/shapes_yolact.yaml"}
TARGETS = {"maskrcnn": 0.50, "yolact": 0.40}
HOLDOUT_SEED = 424_242  # no config's training (seed) or validation (seed + 1_000_003) set


@torch.inference_mode()
def score(predict, samples: list[dict]) -> dict[str, float]:
    """COCO mask and box AP/AP50 over the held-out shapes."""
    gt = instances_to_coco(samples, SHAPE_CATEGORIES)
    results = []
    for sample in samples:
        (prediction,) = predict([sample["image"]])
        results.extend(detections_to_coco_results(sample["image_id"], prediction))
    segm, bbox = coco_evaluate(gt, results, "segm"), coco_evaluate(gt, results, "bbox")
    return {"mask_ap": segm["AP"], "mask_ap50": segm["AP50"], "box_ap": bbox["AP"]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=sorted(CONFIGS), required=True)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--eval-every", type=float, default=3.0)
    parser.add_argument("--holdout", type=int, default=200, help="held-out images scored")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/bench_shapes_instance")
    parser.add_argument("--json", type=Path, help="save the curve (and steps) here")
    parser.add_argument("overrides", nargs="*", help="config overrides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(
        CONFIGS[args.model],
        [
            *time_budget_overrides(args.minutes),
            f"train.threads={args.threads}",
            f"output_dir={args.out}/{args.model}",
            *args.overrides,
        ],
    )
    size = config.data.synthetic.size
    holdout = SyntheticInstances(args.holdout, size=size, seed=HOLDOUT_SEED)
    samples = [holdout[i] for i in range(len(holdout))]
    curve = Curve(args.model)
    callback = CurveCallback(curve, args.eval_every, lambda p: score(p, samples), wrap=detections)
    workflows.train(config, callbacks=[callback])
    marks = [m for m, _ in curve.points]
    print(
        f"\n{args.model} on {len(samples)} held-out shapes ({size}x{size}), {args.threads} threads"
    )
    print_curves([curve], marks, ["mask_ap", "mask_ap50", "box_ap"])
    final = curve.points[-1][1]["mask_ap"]
    print(
        f"{curve.steps} optimiser steps; mask AP {final:.4f} at {marks[-1]:.1f} min "
        f"(target >= {TARGETS[args.model]:.2f} within 15 minutes)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {"model": args.model, "minutes": args.minutes, "threads": args.threads,
                  "steps": curve.steps, "points": curve.points}  # fmt: skip
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
