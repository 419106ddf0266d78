"""CamVid from scratch: pixelseg's recipe against a plain smp U-Net loop, same time budget.

Both sides train from random weights on ../shared/data/camvid for the same training-time
budget (evaluation pauses the clock) and are scored on the validation set, each image
whole at full resolution (360x480, no tiling), by the same confusion-matrix code, void
(11) ignored. The recipe was tuned on these same validation images (docs/BENCHMARKS.md),
so its score here is a validation figure, not a measure of generalisation.

Baseline, as specified: segmentation_models_pytorch Unet, ResNet-18 encoder, no pretrained
weights, images resized to 192x256, batch 8, Adam 1e-3, cross-entropy ignoring void, no
augmentation. Its predictions are upsampled (bilinear logits) to 360x480 for scoring.

    python benchmarks/camvid.py --minutes 30 --eval-every 5
    python benchmarks/camvid.py --minutes 2 --eval-every 1 --only baseline   # quick look

Target (issue 3): pixelseg's validation mIoU >= 1.2x the baseline's at the 30-minute mark.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from budget import (
    BudgetClock,
    Curve,
    budget_parser,
    parse_budget_args,
    print_curves,
    resize_pair,
    run_sides,
    score,
    to_tensor,
)
from pixelseg import workflows
from pixelseg.config import load_config
from pixelseg.data import camvid

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
NUM_CLASSES, VOID = 11, 11


def load_pairs(root: str, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    dataset = camvid(root, split=split)
    return [dataset.load(i) for i in range(len(dataset))]


class CurveCallback:
    """Scores the model every ``every`` training minutes on the trainer's own clock.

    ``score_fn(predict) -> metrics`` gets the trainer's inference model (the EMA of the
    weights when the config keeps one) in eval mode, wrapped to take and return CPU tensors
    wherever the model runs (the scoring code keeps its images on the CPU); its time is
    added to the trainer's
    ``excluded_seconds``, so neither the budget nor the curve counts it (nor the trainer's
    own validation).
    """

    def __init__(self, curve: Curve, every: float, score_fn) -> None:
        self.curve, self.every, self.score_fn = curve, every, score_fn
        self.next_mark = every
        self.scored_iteration = -1

    def _score(self, trainer) -> None:
        self.scored_iteration = trainer.state.iteration
        tick = time.perf_counter()
        model = trainer.inference_model
        model.eval()
        device = next(model.parameters()).device
        metrics = self.score_fn(lambda x: model(x.to(device)).float().cpu())
        trainer.model.train()
        trainer.excluded_seconds += time.perf_counter() - tick
        minutes = trainer.training_seconds() / 60
        self.curve.points.append((minutes, metrics))
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        print(f"  pixelseg  {minutes:6.2f} min  {shown}", flush=True)

    def on_step(self, trainer, logs) -> None:
        if trainer.training_seconds() / 60 >= self.next_mark:
            self._score(trainer)
            self.next_mark += self.every

    def on_train_end(self, trainer) -> None:
        if trainer.state.iteration != self.scored_iteration:  # not scored at this step yet
            self._score(trainer)


def run_pixelseg(args, val) -> Curve:
    overrides = [
        f"data.root={args.data}",
        f"train.max_minutes={args.minutes}",
        "train.progress=false",
        "train.tensorboard=false",
        "train.val_every=100000",
        f"output_dir={args.out}/pixelseg",
        f"train.threads={args.threads}",
        *args.overrides,
    ]
    config = load_config(args.config, overrides)
    curve = Curve("pixelseg")

    def score_fn(predict):
        return {"miou": score(predict, val, NUM_CLASSES, VOID)["miou"]}

    workflows.train(config, callbacks=[CurveCallback(curve, args.eval_every, score_fn)])
    return curve


def run_baseline(args, val) -> Curve:
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    mean, std = IMAGENET
    train = [resize_pair(img, msk, (192, 256)) for img, msk in load_pairs(args.data, "train")]
    images = torch.stack([to_tensor(img, mean, std) for img, _ in train])
    masks = torch.stack([torch.from_numpy(msk.astype(np.int64)) for _, msk in train])
    model = smp.Unet("resnet18", encoder_weights=None, classes=NUM_CLASSES)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=VOID)
    val_small = [
        (torch.nn.functional.interpolate(img[None], size=(192, 256), mode="bilinear")[0], msk)
        for img, msk in val
    ]
    curve, clock, next_mark = Curve("baseline"), BudgetClock(), args.eval_every

    def evaluate():
        with clock.pause():
            model.eval()
            metrics = score(model, val_small, NUM_CLASSES, VOID)
            model.train()
        curve.points.append((clock.training_minutes(), metrics))
        print(
            f"  baseline  {clock.training_minutes():6.2f} min  mIoU {metrics['miou']:.4f}",
            flush=True,
        )

    model.train()
    while clock.training_minutes() < args.minutes:
        order = torch.randperm(len(images))
        for start in range(0, len(order), 8):
            batch = order[start : start + 8]
            optimizer.zero_grad()
            loss = loss_fn(model(images[batch]), masks[batch])
            loss.backward()
            optimizer.step()
            if clock.training_minutes() >= next_mark:
                evaluate()
                next_mark += args.eval_every
            if clock.training_minutes() >= args.minutes:
                break
    evaluate()
    return curve


def main() -> None:
    parser = budget_parser(
        __doc__,
        minutes=30.0,
        eval_every=5.0,
        data="../shared/data/camvid",
        config="configs/camvid_unet.yaml",
        out="runs/bench_camvid",
    )
    args = parse_budget_args(parser, "CamVid")
    mean, std = IMAGENET
    val = [
        (to_tensor(img, mean, std), torch.from_numpy(msk.astype(np.int64)))
        for img, msk in load_pairs(args.data, "val")
    ]
    curves, marks = run_sides(
        args, lambda: run_pixelseg(args, val), lambda: run_baseline(args, val)
    )
    print(
        f"\nCamVid validation mIoU (101 images, 360x480) vs training minutes, {args.threads} threads"
    )
    print_curves(curves, marks, ["miou"])
    if len(curves) == 2:
        ours, base = curves[0].at(args.minutes)["miou"], curves[1].at(args.minutes)["miou"]
        print(
            f"\nat {args.minutes:g} min: pixelseg {ours:.4f} / baseline {base:.4f} = {ours / base:.2f}x "
            f"(target >= 1.2x)"
        )


if __name__ == "__main__":
    main()
