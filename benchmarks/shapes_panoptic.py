"""Panoptic segmentation on synthetic shapes from random weights: PQ against training minutes
for the shipped Panoptic FPN recipe, with the fusion against a naive paste on the same model.

The model trains through pixelseg's engine with ``configs/shapes_panoptic_fpn.yaml`` for
``--minutes`` of training time and is scored every ``--eval-every`` minutes on held-out
shapes (``--holdout`` images from a seed no training or validation image uses): PQ, SQ, RQ
for All, Things and Stuff with the COCO reference's rules. At every mark the same outputs
are fused twice: by the reference fusion (:func:`pixelseg.inference.fuse_panoptic`, the
config's thresholds) and by :func:`pixelseg.inference.naive_paste` (every instance above the
score threshold pasted in turn, later ones over earlier ones, then stuff on every pixel
left). Scoring pauses the clock.

    python benchmarks/shapes_panoptic.py --minutes 20 --json runs/shapes_panoptic.json

Target (panoptic issue), 2 CPU cores: PQ >= 0.60 on held-out shapes within 20 minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from budget import Curve, CurveCallback, print_curves, time_budget_overrides
from pixelseg import workflows
from pixelseg.config import load_config
from pixelseg.data import SyntheticPanoptic
from pixelseg.inference.panoptic_fusion import FusionSettings, fuse_panoptic, naive_paste
from pixelseg.metrics import PanopticQuality

CONFIG = "configs/shapes_panoptic_fpn.yaml"
TARGET = 0.60
HOLDOUT_SEED = 424_242  # no config's training (seed) or validation (seed + 1_000_003) set


def outputs_of(model: torch.nn.Module, device: torch.device):
    """``list of CPU images -> list of CPU outputs`` (detections and semantic logits)."""

    def predict(images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        outputs = model([image.to(device) for image in images])
        return [
            {k: (v.cpu() if k == "labels" else v.float().cpu()) for k, v in out.items()}
            for out in outputs
        ]

    return predict


@torch.inference_mode()
def score(predict, samples: list[dict], settings: FusionSettings) -> dict[str, float]:
    """PQ of the fusion and of the naive paste over the held-out samples."""
    categories = SyntheticPanoptic.categories
    things, stuff = SyntheticPanoptic.thing_category_ids, SyntheticPanoptic.stuff_category_ids
    fused, naive = PanopticQuality(categories), PanopticQuality(categories)
    options = dataclasses.asdict(settings)
    naive_options = {k: options[k] for k in ("score_threshold", "mask_threshold")}
    for sample in samples:
        (out,) = predict([sample["image"]])
        inputs = (out["masks"], out["scores"], out["labels"], out["semantic"])
        ids = {"thing_category_ids": things, "stuff_category_ids": stuff}
        for metric, (pred_ids, segments) in (
            (fused, fuse_panoptic(*inputs, **ids, **options)),
            (naive, naive_paste(*inputs, **ids, **naive_options)),
        ):
            metric.update(
                sample["panoptic"].numpy(),
                sample["segments_info"],
                pred_ids.numpy(),
                segments,
                image=sample["name"],
            )
    result = fused.compute()
    naive_result = naive.compute()
    return {
        "pq": result["All"]["pq"],
        "pq_things": result["Things"]["pq"],
        "pq_stuff": result["Stuff"]["pq"],
        "sq": result["All"]["sq"],
        "rq": result["All"]["rq"],
        "pq_naive": naive_result["All"]["pq"],
        "pq_things_naive": naive_result["Things"]["pq"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--eval-every", type=float, default=4.0)
    parser.add_argument("--holdout", type=int, default=200, help="held-out images scored")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/bench_shapes_panoptic")
    parser.add_argument("--json", type=Path, help="save the curve (and steps) here")
    parser.add_argument("overrides", nargs="*", help="config overrides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(
        CONFIG,
        [
            *time_budget_overrides(args.minutes),
            f"train.threads={args.threads}",
            f"output_dir={args.out}",
            *args.overrides,
        ],
    )
    syn = config.data.synthetic
    holdout = SyntheticPanoptic(
        args.holdout, size=syn.size, seed=HOLDOUT_SEED, min_shapes=syn.min_shapes,
        max_shapes=syn.max_shapes,
    )  # fmt: skip
    samples = [holdout[i] for i in range(len(holdout))]
    settings = FusionSettings(**config.panoptic.model_dump())
    curve = Curve("panoptic_fpn")
    callback = CurveCallback(
        curve, args.eval_every, lambda p: score(p, samples, settings), wrap=outputs_of
    )
    workflows.train(config, callbacks=[callback])
    marks = [m for m, _ in curve.points]
    print(f"\nPanoptic FPN on {len(samples)} held-out shapes ({syn.size}x{syn.size}), "
          f"{args.threads} threads")  # fmt: skip
    print_curves([curve], marks, ["pq", "pq_things", "pq_stuff", "pq_naive"])
    final = curve.points[-1][1]
    print(
        f"{curve.steps} optimiser steps; PQ {final['pq']:.4f} (naive paste "
        f"{final['pq_naive']:.4f}) at {marks[-1]:.1f} min (target >= {TARGET:.2f} within 20 "
        "minutes)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {"minutes": args.minutes, "threads": args.threads, "steps": curve.steps,
                  "points": curve.points, "overrides": args.overrides}  # fmt: skip
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
