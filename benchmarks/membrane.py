"""ISBI 2012 membranes: pixelseg's U-Net recipe against a plain smp U-Net loop, 10 minutes.

Both sides train from random weights on the training part of ../shared/data/membrane (the
membrane preset's seeded split holds 5 of the 25 images out) for the same training-time
budget, and are scored on the held-out images whole, at full 512x512 resolution (no
tiling): the ISBI 2012 challenge's pixel error, the membrane class's Dice (label 0 in those
PNGs) and 1 - pixel accuracy.

Target (issue 3, restated in the challenge's own definition, the one the U-Net paper's
0.0611 uses): ISBI pixel error <= 0.061 on held-out slices, where the ISBI pixel error is
1 - the maximal F-score of the cell-interior class, its probability binarised at 0.0, 0.1,
..., 1.0 and the counts pooled over the slices (:func:`pixelseg.metrics.isbi_pixel_error`).
1 - accuracy of the argmax, the unit of the issue's first statement and of its plain-loop
baseline figure (about 0.075), is printed beside it for both sides; beating the plain
loop on 1 - accuracy is the generalisation issue's target, not this one.

Both are also scored with flip test-time augmentation (pixelseg's ``predict --tta``), and
both numbers are reported.

Baseline: segmentation_models_pytorch Unet, ResNet-18 encoder, 1 input channel, no
pretrained weights, random 256x256 crops, batch 8, Adam 1e-3, cross-entropy, no other
augmentation.

    python benchmarks/membrane.py --minutes 10 --eval-every 2

The 5 held-out slices are the ones the recipe was tuned on (docs/BENCHMARKS.md), so a
figure on them is a validation figure, not a measure of generalisation.

Cross-validation (the generalisation issue): ``--fold K`` (of ``--folds``, default 5) holds
out fold K of a seeded 5-fold split over the 25 slices instead (pixelseg through
``data.num_folds``/``data.fold``, the baseline on the same slices); each fold and side can
run as its own command with ``--json``, and ``--merge`` prints the mean and spread over
folds:

    python benchmarks/membrane.py --fold 0 --only pixelseg --json runs/cv_0_p.json
    python benchmarks/membrane.py --merge runs/cv_*.json

Target there: pixelseg's 1 - accuracy below the plain loop's by more than the spread over
folds.
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
    run_sides,
    time_budget_overrides,
    to_tensor,
)
from pixelseg import workflows
from pixelseg.config import load_config
from pixelseg.data import group_split, membrane
from pixelseg.inference import flip_tta
from pixelseg.metrics import ConfusionMatrix, ThresholdSweep

#: The target, on the ISBI challenge's pixel error (1 - max F-score of the cell class).
ISBI_TARGET = 0.061


@torch.inference_mode()
def score_membrane(predict, val, suffix: str = "") -> dict:
    """Membrane Dice and pixel error (1 - accuracy) of the argmax, and the challenge's pixel
    error of the cell probability, over the held-out images at full resolution."""
    matrix, sweep = ConfusionMatrix(2), ThresholdSweep()
    for image, mask in val:
        logits = predict(image.unsqueeze(0))
        matrix.update(logits.argmax(1), mask.unsqueeze(0))
        sweep.update(logits.softmax(1)[:, 1], mask.unsqueeze(0))  # class 1 = cell interior
    metrics = matrix.compute()
    return {
        "membrane_dice" + suffix: metrics["dice"][0],
        "pixel_error" + suffix: 1.0 - metrics["pixel_accuracy"],
        "isbi_pixel_error" + suffix: sweep.compute()["pixel_error"],
    }


def score_both(predict, val) -> dict:
    """Plain scores, and with flip test-time augmentation (``pixelseg predict --tta``):
    the identity, vertical, horizontal and both flips, softmax-averaged. EM images have no
    preferred orientation, so the flips are as likely as the originals."""
    return {**score_membrane(predict, val), **score_membrane(flip_tta(predict), val, "_tta")}


def pairs(root: str, split: str, stems: list[str] | None = None):
    dataset = membrane(root, split="all" if stems is not None else split, stems=stems)
    return [dataset.load(i) for i in range(len(dataset))]


#: Each slice is its own group: a plain seeded k-fold over the slices, as the preset draws it.
SLICE_PATTERN = r"^(.*)$"


def fold_stems(args) -> tuple[list[str], list[str]] | None:
    """``(train, held-out)`` stems of ``--fold``, as pixelseg's preset draws them."""
    if args.fold is None:
        return None
    everything = membrane(args.data, split="all").stems
    split = group_split(everything, SLICE_PATTERN, num_folds=args.folds, fold=args.fold, seed=0)
    return split.train, split.val


def run_pixelseg(args, val) -> Curve:
    folds = (
        [f"data.num_folds={args.folds}", f"data.fold={args.fold}"] if args.fold is not None else []
    )
    config = load_config(
        args.config,
        [
            *folds,
            f"data.root={args.data}",
            *time_budget_overrides(args.minutes),
            f"output_dir={args.out}/pixelseg",
            f"train.threads={args.threads}",
            *args.overrides,
        ],
    )
    curve = Curve("pixelseg")
    callback = CurveCallback(curve, args.eval_every, lambda predict: score_both(predict, val))
    workflows.train(config, callbacks=[callback])
    return curve


def run_baseline(args, val) -> Curve:
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    split = fold_stems(args)
    train = pairs(args.data, "train", split[0] if split else None)
    images = [to_tensor(img, (0.0,), (1.0,)) for img, _ in train]
    masks = [torch.from_numpy(m.astype(np.int64)) for _, m in train]
    model = smp.Unet("resnet18", encoder_weights=None, in_channels=1, classes=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    curve, clock, next_mark = Curve("baseline"), BudgetClock(), args.eval_every

    def evaluate():
        with clock.pause():
            model.eval()
            metrics = score_both(model, val)
            model.train()
        curve.points.append((clock.training_minutes(), metrics))
        curve.steps = steps
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        print(f"  baseline  {clock.training_minutes():6.2f} min  {shown}", flush=True)

    model.train()
    steps = 0
    while clock.training_minutes() < args.minutes:
        crops_x, crops_y = [], []
        for _ in range(8):
            i = int(rng.integers(len(images)))
            top, left = (int(v) for v in rng.integers(0, 512 - 256 + 1, size=2))
            crops_x.append(images[i][:, top : top + 256, left : left + 256])
            crops_y.append(masks[i][top : top + 256, left : left + 256])
        optimizer.zero_grad()
        loss = loss_fn(model(torch.stack(crops_x)), torch.stack(crops_y))
        loss.backward()
        optimizer.step()
        steps += 1
        if clock.mark_due(next_mark, args.minutes):
            evaluate()
            next_mark += args.eval_every
    evaluate()
    return curve


def main() -> None:
    if "--merge" in sys.argv:
        for line in merge(sys.argv[sys.argv.index("--merge") + 1 :]):
            print(line)
        return
    parser = budget_parser(
        __doc__,
        minutes=10.0,
        eval_every=2.0,
        data="../shared/data/membrane",
        config="configs/membrane_unet.yaml",
        out="runs/bench_membrane",
    )
    parser.add_argument("--fold", type=int, help="hold out this fold of --folds instead")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="save the curves here")
    args = parse_budget_args(parser, "membrane data")
    split = fold_stems(args)
    val = [
        (to_tensor(img, (0.0,), (1.0,)), torch.from_numpy(m.astype(np.int64)))
        for img, m in pairs(args.data, "val", split[1] if split else None)
    ]
    curves, marks = run_sides(
        args, lambda: run_pixelseg(args, val), lambda: run_baseline(args, val)
    )
    print(f"\nISBI membrane, {len(val)} held-out 512x512 images, {args.threads} threads")
    print_curves(
        curves, marks, ["isbi_pixel_error", "pixel_error", "pixel_error_tta", "membrane_dice"]
    )
    for line in summary_lines(curves, args.minutes):
        print(line)
    if args.json:
        record = {
            "fold": args.fold,
            "folds": args.folds,
            "minutes": args.minutes,
            "machine": machine(args.threads),
            "curves": [{"name": c.name, "steps": c.steps, "points": c.points} for c in curves],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1))


def merge(paths: list[str]) -> list[str]:
    """Mean and spread over folds of each side's scores at the budget's end."""
    finals: dict[str, dict[int, dict]] = {}
    minutes = min(json.loads(Path(p).read_text())["minutes"] for p in paths)
    expected: set[int] = set()
    for path in paths:
        record = json.loads(Path(path).read_text())
        expected |= set(range(record.get("folds", 0)))
        for curve in record["curves"]:
            point = Curve(curve["name"], [tuple(p) for p in curve["points"]]).at(minutes)
            finals.setdefault(curve["name"], {})[record["fold"]] = point
    lines = [f"cross-validation over folds, scores at {minutes:g} min (mean, std, min..max)"]
    means: dict[str, tuple[float, float]] = {}
    for name, folds in sorted(finals.items()):
        for key in ("isbi_pixel_error", "pixel_error"):
            values = [folds[f][key] for f in sorted(folds)]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            if key == "pixel_error":
                means[name] = (statistics.mean(values), std)
            lines.append(
                f"{name:<9} {key:<17} {statistics.mean(values):.4f} +- {std:.4f} "
                f"({min(values):.4f}..{max(values):.4f}, folds {sorted(folds)})"
            )
    if {"pixelseg", "baseline"} <= set(means):
        (ours, ours_std), (base, base_std) = means["pixelseg"], means["baseline"]
        spread = max(ours_std, base_std)
        measured = set(finals["pixelseg"]) & set(finals["baseline"])
        if measured != set(finals["pixelseg"]) | set(finals["baseline"]) or expected - measured:
            # A spread over some folds is no spread over all: no verdict until both sides
            # have every fold of the split.
            verdict = f"no verdict: both sides have folds {sorted(measured)} of {len(expected)}"
        else:
            verdict = "met" if base - ours > spread else "not met"
        lines.append(
            f"1 - accuracy: pixelseg {ours:.4f} vs plain loop {base:.4f}, lower by "
            f"{base - ours:.4f} against a spread of {spread:.4f} (target: lower by more: {verdict})"
        )
    return lines


def summary_lines(curves: list[Curve], minutes: float) -> list[str]:
    """One line per side at ``minutes``: the ISBI pixel error against the target first,
    then 1 - accuracy (beside the plain loop's when the baseline ran) and membrane Dice."""
    finals = {curve.name: curve.at(minutes) for curve in curves}
    plain = finals.get("baseline", {}).get("pixel_error")
    lines = []
    for name, final in finals.items():
        if not final:
            lines.append(f"{name}: no score at {minutes:g} minutes")
            continue
        isbi = final["isbi_pixel_error"]
        beside = "" if plain is None or name == "baseline" else f" (plain loop {plain:.4f})"
        lines.append(
            f"{name}: ISBI pixel error (1 - max F-score of the cell class) {isbi:.4f}, with "
            f"flip TTA {final['isbi_pixel_error_tta']:.4f} (target <= {ISBI_TARGET}: "
            f"{'met' if isbi <= ISBI_TARGET else 'MISSED'}); 1 - accuracy "
            f"{final['pixel_error']:.4f}{beside}, with flip TTA {final['pixel_error_tta']:.4f}; "
            f"membrane Dice {final['membrane_dice']:.4f}, with flip TTA "
            f"{final['membrane_dice_tta']:.4f}"
        )
    return lines


if __name__ == "__main__":
    main()
