"""Penn-Fudan pedestrians from scratch: pixelseg's instance recipe against the plain loop of
torchvision's instance-segmentation tutorial, same training-time budget, same data.

Both sides train from random weights on ../shared/data/pennfudan (the config's seeded split:
``val_fraction`` 0.2, ``split_seed`` 0, so 96 training and 24 validation images) and are
scored on the validation images by the same ``pixelseg.metrics.coco_evaluate`` (the ground
truth written with ``instances_to_coco``, the detections with
``detections_to_coco_results``), at every ``--eval-every`` training minutes; scoring pauses
both clocks.

Plain loop, as torchvision's tutorial (TorchVision Object Detection Finetuning Tutorial)
trains it, but from random weights: ``maskrcnn_resnet50_fpn(weights=None,
weights_backbone=None, num_classes=2)``, SGD lr 0.005, momentum 0.9, weight decay 5e-4,
batch 2, horizontal flip p=0.5, no other augmentation; the tutorial's linear warm-up over the
first epoch (factor 1/1000, at most 1000 iterations) and StepLR(step_size=3, gamma=0.1)
per epoch. Images at torchvision's default 800/1333 resize.

    python benchmarks/pennfudan.py --minutes 30 --eval-every 5 --only pixelseg --json runs/pf_p.json
    python benchmarks/pennfudan.py --minutes 30 --eval-every 5 --only baseline --json runs/pf_b.json
    python benchmarks/pennfudan.py --merge runs/pf_p.json runs/pf_b.json

Targets (instance issue): pixelseg's mask AP50 >= 0.35 at 30 minutes on 2 cores, and >= 1.5x
the plain loop's mask AP whenever the plain loop's AP50 exceeds 0.05.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from budget import (
    BudgetClock,
    Curve,
    CurveCallback,
    budget_parser,
    parse_budget_args,
    print_curves,
    run_sides,
    time_budget_overrides,
)
from pixelseg import workflows
from pixelseg.config import load_config
from pixelseg.data import PennFudan
from pixelseg.data.coco_write import instances_to_coco
from pixelseg.metrics import coco_evaluate
from pixelseg.metrics.coco_stream import detections_to_coco_results

KEYS = ("mask_ap", "mask_ap50", "box_ap", "box_ap50")


def detections(model: torch.nn.Module, device: torch.device):
    """``list of CPU images -> list of CPU detections`` of a detector in eval mode."""

    def predict(images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        outputs = model([image.to(device) for image in images])
        return [{k: v.float().cpu() for k, v in out.items()} for out in outputs]

    return predict


@torch.inference_mode()
def score(predict, samples: list[dict]) -> dict[str, float]:
    """COCO mask and box AP/AP50 of ``predict`` over the validation samples."""
    categories = [{"id": 1, "name": "pedestrian"}]
    gt = instances_to_coco(samples, categories)
    results = []
    for sample in samples:
        (prediction,) = predict([sample["image"]])
        results.extend(detections_to_coco_results(sample["image_id"], prediction))
    segm, bbox = coco_evaluate(gt, results, "segm"), coco_evaluate(gt, results, "bbox")
    return {
        "mask_ap": segm["AP"],
        "mask_ap50": segm["AP50"],
        "box_ap": bbox["AP"],
        "box_ap50": bbox["AP50"],
    }


def run_pixelseg(args, val: list[dict]) -> Curve:
    overrides = [
        f"data.root={args.data}",
        *time_budget_overrides(args.minutes),
        f"output_dir={args.out}/pixelseg",
        f"train.threads={args.threads}",
        *args.overrides,
    ]
    config = load_config(args.config, overrides)
    curve = Curve("pixelseg")
    callback = CurveCallback(curve, args.eval_every, lambda p: score(p, val), wrap=detections)
    workflows.train(config, callbacks=[callback])
    return curve


def run_baseline(args, val: list[dict]) -> Curve:
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    train = PennFudan(args.data, split="train", val_fraction=0.2, split_seed=0)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=2)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.005, momentum=0.9, weight_decay=0.0005)
    steps_per_epoch = math.ceil(len(train) / 2)
    warmup_iters = min(1000, steps_per_epoch - 1)
    step_lr = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.1)
    curve, clock, next_mark = Curve("baseline"), BudgetClock(), args.eval_every
    steps = 0

    def evaluate():
        with clock.pause():
            model.eval()
            metrics = score(detections(model, torch.device("cpu")), val)
            model.train()
        curve.points.append((clock.training_minutes(), metrics))
        curve.steps = steps
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        print(f"  baseline  {clock.training_minutes():6.2f} min  {shown}", flush=True)

    model.train()
    epoch = 0
    while clock.training_minutes() < args.minutes:
        # The tutorial's warm-up: a LinearLR over the first epoch's iterations only.
        warmup = (
            torch.optim.lr_scheduler.LinearLR(
                optimizer, start_factor=1.0 / 1000, total_iters=warmup_iters
            )
            if epoch == 0
            else None
        )
        order = torch.randperm(len(train)).tolist()
        for start in range(0, len(order), 2):
            images, targets = [], []
            for index in order[start : start + 2]:
                sample = train[index]
                image, boxes, masks = sample["image"], sample["boxes"], sample["masks"]
                if torch.rand(()) < 0.5:  # the tutorial's RandomHorizontalFlip(0.5)
                    width = image.shape[-1]
                    image, masks = image.flip(-1), masks.flip(-1)
                    boxes = boxes[:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor(
                        [width, 0, width, 0]
                    )
                images.append(image)
                targets.append({"boxes": boxes, "labels": sample["labels"], "masks": masks})
            losses = model(images, targets)
            loss = sum(losses.values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if warmup is not None:
                warmup.step()
            steps += 1
            if clock.mark_due(next_mark, args.minutes):
                evaluate()
                next_mark += args.eval_every
            if clock.training_minutes() >= args.minutes:
                break
        step_lr.step()
        epoch += 1
    evaluate()
    return curve


def save_curves(path: Path, args, curves: list[Curve]) -> None:
    record = {
        "minutes": args.minutes,
        "eval_every": args.eval_every,
        "threads": args.threads,
        "curves": [{"name": c.name, "steps": c.steps, "points": c.points} for c in curves],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))


def report(curves: list[Curve], minutes: float, eval_every: float) -> None:
    """The curves side by side and the two targets at ``minutes``."""
    marks = sorted({*(eval_every * k for k in range(1, int(minutes / eval_every) + 1)), minutes})
    print("\nPenn-Fudan validation (COCO AP by pixelseg.metrics.coco_evaluate) vs minutes")
    print_curves(curves, marks, list(KEYS[:2]))
    for curve in curves:
        print(f"{curve.name}: {curve.steps} optimiser steps")
    by_name = {c.name: c.at(minutes) for c in curves}
    ours = by_name.get("pixelseg", {})
    if ours:
        print(f"\npixelseg mask AP50 at {minutes:g} min: {ours['mask_ap50']:.4f} (target >= 0.35)")
    base = by_name.get("baseline", {})
    if ours and base:
        ratio = ours["mask_ap"] / base["mask_ap"] if base["mask_ap"] > 0 else float("inf")
        applies = "applies" if base["mask_ap50"] > 0.05 else "does not apply: AP50 <= 0.05"
        print(
            f"mask AP: pixelseg {ours['mask_ap']:.4f} / plain loop {base['mask_ap']:.4f} = "
            f"{ratio:.2f}x (target >= 1.5x; {applies})"
        )


def merge(paths: list[str]) -> None:
    """The report over the sides saved by separate commands (``--json``)."""
    curves, minutes, every = [], None, None
    for path in paths:
        record = json.loads(Path(path).read_text())
        minutes = record["minutes"] if minutes is None else min(minutes, record["minutes"])
        every = record["eval_every"] if every is None else max(every, record["eval_every"])
        for c in record["curves"]:
            curves.append(Curve(c["name"], [tuple(p) for p in c["points"]], c["steps"]))
    if not curves:
        sys.exit("--merge: no saved curves given")
    report(curves, minutes, every)


def main() -> None:
    if "--merge" in sys.argv:
        merge(sys.argv[sys.argv.index("--merge") + 1 :])
        return
    parser = budget_parser(
        __doc__,
        minutes=30.0,
        eval_every=5.0,
        data="../shared/data/pennfudan",
        config="configs/pennfudan_maskrcnn.yaml",
        out="runs/bench_pennfudan",
    )
    parser.add_argument("--json", type=Path, help="save the curves (and steps) here")
    args = parse_budget_args(parser, "Penn-Fudan")
    val_set = PennFudan(args.data, split="val", val_fraction=0.2, split_seed=0)
    val = [val_set[i] for i in range(len(val_set))]
    curves, _ = run_sides(args, lambda: run_pixelseg(args, val), lambda: run_baseline(args, val))
    if args.json:
        save_curves(args.json, args, curves)
    report(curves, args.minutes, args.eval_every)


if __name__ == "__main__":
    main()
