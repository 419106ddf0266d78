"""CamVid from scratch: pixelseg's recipe against a plain smp U-Net loop, same time budget.

Both sides train from random weights on ../shared/data/camvid for the same training-time
budget (evaluation pauses the clock) and are scored on the validation set, each image
whole at full resolution (360x480, no tiling), by the same confusion-matrix code, void
(11) ignored. Most of the recipe (class weights, rate, loss) was tuned on these same
validation images, so its score here is a validation figure, not a measure of
generalisation; its augmentation was tuned on the training video 0001TP held out of
``train/`` (docs/BENCHMARKS.md), which ``--holdout`` below measures.

Baseline, as specified: segmentation_models_pytorch Unet, ResNet-18 encoder, no pretrained
weights, images resized to 192x256, batch 8, Adam 1e-3, cross-entropy ignoring void, no
augmentation. Its predictions are upsampled (bilinear logits) to 360x480 for scoring.

    python benchmarks/camvid.py --minutes 30 --eval-every 5
    python benchmarks/camvid.py --minutes 2 --eval-every 1 --only baseline   # quick look

Target (issue 3): pixelseg's validation mIoU >= 1.2x the baseline's at the 30-minute mark.

Leave one sequence out (the generalisation issue): ``--holdout SEQ`` trains both sides on
the training videos except ``SEQ`` (pixelseg through ``data.val_groups=[SEQ]``) and scores
both on ``SEQ``'s frames as well as on ``val/``; each fold and side can run as its own
command with ``--json``, and ``--merge`` prints the table over the saved runs:

    python benchmarks/camvid.py --holdout 0006R0 --only pixelseg --json runs/loso_0006R0_p.json
    python benchmarks/camvid.py --holdout 0006R0 --only baseline --json runs/loso_0006R0_b.json
    python benchmarks/camvid.py --merge runs/loso_*.json

Target: the mean over folds of pixelseg's held-out mIoU >= 1.3x the mean of the baseline's,
at 30 minutes on 2 cores, both sides on the same machine; the optimiser steps each side
made are reported beside every figure.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from budget import (
    BudgetClock,
    Curve,
    CurveCallback,
    budget_parser,
    machine,
    parse_budget_args,
    print_curves,
    resize_pair,
    run_sides,
    score,
    time_budget_overrides,
    to_tensor,
)
from pixelseg import workflows
from pixelseg.config import load_config
from pixelseg.data import camvid

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
NUM_CLASSES, VOID = 11, 11


def load_pairs(
    root: str, split: str, keep=lambda stem: True
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Decoded ``(image, mask)`` pairs of a split, of the files whose stem ``keep`` accepts."""
    dataset = camvid(root, split=split)
    return [dataset.load(i) for i, stem in enumerate(dataset.stems) if keep(stem)]


def sequence(stem: str) -> str:
    return stem.split("_", 1)[0]


def scoring_sets(args) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    """The images each side is scored on: ``val/``, and the held-out training video."""
    mean, std = IMAGENET

    def tensors(pairs):
        return [(to_tensor(i, mean, std), torch.from_numpy(m.astype(np.int64))) for i, m in pairs]

    sets = {"val": tensors(load_pairs(args.data, "val"))}
    if args.holdout:
        held = load_pairs(args.data, "train", lambda stem: sequence(stem) == args.holdout)
        if not held:
            sys.exit(f"no training frames of sequence {args.holdout!r} in {args.data}/train")
        sets["holdout"] = tensors(held)
    return sets


def run_pixelseg(args, sets) -> Curve:
    holdout = [f"data.val_groups=[{args.holdout}]"] if args.holdout else []
    overrides = [
        *holdout,
        f"data.root={args.data}",
        *time_budget_overrides(args.minutes),
        f"output_dir={args.out}/pixelseg",
        f"train.threads={args.threads}",
        *args.overrides,
    ]
    config = load_config(args.config, overrides)
    curve = Curve("pixelseg")

    def score_fn(predict):
        return {
            f"miou_{name}": score(predict, s, NUM_CLASSES, VOID)["miou"] for name, s in sets.items()
        }

    workflows.train(config, callbacks=[CurveCallback(curve, args.eval_every, score_fn)])
    return curve


def run_baseline(args, sets) -> Curve:
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    mean, std = IMAGENET
    kept = load_pairs(args.data, "train", lambda stem: sequence(stem) != args.holdout)
    train = [resize_pair(img, msk, (192, 256)) for img, msk in kept]
    images = torch.stack([to_tensor(img, mean, std) for img, _ in train])
    masks = torch.stack([torch.from_numpy(msk.astype(np.int64)) for _, msk in train])
    model = smp.Unet("resnet18", encoder_weights=None, classes=NUM_CLASSES)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=VOID)
    small = {
        name: [
            (torch.nn.functional.interpolate(img[None], size=(192, 256), mode="bilinear")[0], m)
            for img, m in pairs
        ]
        for name, pairs in sets.items()
    }
    curve, clock, next_mark = Curve("baseline"), BudgetClock(), args.eval_every

    def evaluate():
        with clock.pause():
            model.eval()
            metrics = {
                f"miou_{name}": score(model, pairs, NUM_CLASSES, VOID)["miou"]
                for name, pairs in small.items()
            }
            model.train()
        curve.points.append((clock.training_minutes(), metrics))
        curve.steps = steps
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        print(f"  baseline  {clock.training_minutes():6.2f} min  {shown}", flush=True)

    model.train()
    steps = 0
    while clock.training_minutes() < args.minutes:
        order = torch.randperm(len(images))
        for start in range(0, len(order), 8):
            batch = order[start : start + 8]
            optimizer.zero_grad()
            loss = loss_fn(model(images[batch]), masks[batch])
            loss.backward()
            optimizer.step()
            steps += 1
            if clock.mark_due(next_mark, args.minutes):
                evaluate()
                next_mark += args.eval_every
            if clock.training_minutes() >= args.minutes:
                break
    evaluate()
    return curve


def save_curves(path: Path, args, curves: list[Curve]) -> None:
    record = {
        "holdout": args.holdout,
        "minutes": args.minutes,
        "threads": args.threads,
        "machine": machine(args.threads),
        "curves": [{"name": c.name, "steps": c.steps, "points": c.points} for c in curves],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))


def merge(paths: list[str]) -> None:
    """The leave-one-sequence-out table over saved runs (each fold and side its own file)."""
    runs: dict[tuple[str, str], dict] = {}
    minutes = None
    for path in paths:
        record = json.loads(Path(path).read_text())
        minutes = record["minutes"] if minutes is None else min(minutes, record["minutes"])
        for curve in record["curves"]:
            runs[(record["holdout"], curve["name"])] = curve
    folds = sorted({fold for fold, _ in runs if fold})
    print(f"\nleave one sequence out, mIoU at {minutes:g} min (steps in brackets)")
    print(
        f"{'held out':<10}{'pixelseg held-out':>22}{'baseline held-out':>22}"
        f"{'pixelseg val/':>18}{'baseline val/':>18}"
    )
    means: dict[str, list[float]] = {"p": [], "b": []}
    for fold in folds:
        cells = []
        for key in ("miou_holdout", "miou_val"):
            for side in ("pixelseg", "baseline"):
                curve = runs.get((fold, side))
                point = (
                    Curve(side, [tuple(p) for p in curve["points"]]).at(minutes) if curve else {}
                )
                value = point.get(key, float("nan"))
                steps = curve.get("steps") if curve else None
                cells.append(f"{value:.4f} [{steps}]")
                if key == "miou_holdout" and curve:
                    means[side[0]].append(value)
        print(f"{fold:<10}{cells[0]:>22}{cells[1]:>22}{cells[2]:>18}{cells[3]:>18}")
    if means["p"] and means["b"] and len(means["p"]) == len(means["b"]):
        ours, base = statistics.mean(means["p"]), statistics.mean(means["b"])
        print(
            f"\nmean held-out mIoU: pixelseg {ours:.4f} / baseline {base:.4f} = "
            f"{ours / base:.2f}x (target >= 1.3x)"
        )


def main() -> None:
    if "--merge" in sys.argv:
        merge(sys.argv[sys.argv.index("--merge") + 1 :])
        return
    parser = budget_parser(
        __doc__,
        minutes=30.0,
        eval_every=5.0,
        data="../shared/data/camvid",
        config="configs/camvid_unet.yaml",
        out="runs/bench_camvid",
    )
    parser.add_argument("--holdout", help="training video to hold out (0001TP, 0006R0, 0016E5)")
    parser.add_argument("--json", type=Path, help="save the curves (and steps) here")
    args = parse_budget_args(parser, "CamVid")
    sets = scoring_sets(args)
    curves, marks = run_sides(
        args, lambda: run_pixelseg(args, sets), lambda: run_baseline(args, sets)
    )
    keys = [f"miou_{name}" for name in sets]
    print(
        f"\nCamVid mIoU ({', '.join(f'{n}: {len(s)} images' for n, s in sets.items())}, "
        f"360x480) vs training minutes, {args.threads} threads"
    )
    print_curves(curves, marks, keys)
    for curve in curves:
        print(f"{curve.name}: {curve.steps} optimiser steps")
    if args.json:
        save_curves(args.json, args, curves)
    if len(curves) == 2:
        key = "miou_holdout" if args.holdout else "miou_val"
        ours, base = curves[0].at(args.minutes)[key], curves[1].at(args.minutes)[key]
        target = "1.3x, over the mean of the folds" if args.holdout else "1.2x"
        print(
            f"\nat {args.minutes:g} min ({key}): pixelseg {ours:.4f} / baseline {base:.4f} = "
            f"{ours / base:.2f}x (target >= {target})"
        )


if __name__ == "__main__":
    main()
