"""MSD lung-tumour CT patches (2D): pixelseg's recipe against a plain smp U-Net loop.

Data: ../shared/data/msd_lung_patches/patches.h5, 130 random 48x48 patches of MSD Task06
CT (``images`` in [0, 1], ``labels`` in {0, 1}); 19 of them hold no tumour.

Split (fixed, seeded, the same for every run and side): 30 test patches, drawn with
scikit-learn's ``train_test_split`` stratified on "holds tumour" (``random_state=0``), so the
tumour-free patches fall on both sides in proportion; the other 100 are training patches.
The patches carry no patient ids, so patches of one patient (even overlapping ones) can
fall on both sides: the test figure measures generalisation to new patches, not to new
patients. Neither side trains or tunes on the test patches. ``--split tune`` replaces them
by 20 of the 100 training patches (stratified again, ``random_state=1``) and trains on the
other 80: the recipe was tuned that way, at equal optimiser steps (``--steps``), never on
the test patches (docs/MEDICAL.md records the candidates and their scores).

Scoring: Dice per patch, ``2|P∩G| / (|P| + |G|)``, of the baseline's sigmoid at 0.5 and of
pixelseg's argmax (its ``predict`` masks); a patch with no tumour in its ground truth scores
1 when the prediction is empty too and 0 otherwise (:func:`pixelseg.metrics.binary_dice`).
Reported: the mean over all test patches (the headline), the mean over the tumour patches
alone, and the global Dice of the voxels pooled over the test patches.

Baseline: segmentation_models_pytorch Unet, ResNet-18 encoder, 1 input channel, 1 output
(sigmoid), random weights, Adam 1e-3, BCE, batch 16 (epochs of shuffled patches), no
augmentation. pixelseg: ``configs/msd_lung_patches_unet.yaml`` through
``pixelseg.workflows.train`` on image/mask folders of the training patches, then
``pixelseg.workflows.predict_files`` (``pixelseg predict``) on the test patches with the
run's ``last.pt`` (the schedule decays to zero within the budget; nothing is chosen on a
validation score). Both sides use ``--threads`` threads; their clocks count training only
(not data set-up, not scoring).

Each side and seed is its own command; ``--merge`` prints the table (mean and spread over
seeds per side, the ratio of the means, steps made):

    python benchmarks/msd_lung.py --side pixelseg --seed 0 --minutes 10 --json runs/msd/pixelseg_0.json
    python benchmarks/msd_lung.py --side baseline --seed 0 --minutes 10 --json runs/msd/baseline_0.json
    python benchmarks/msd_lung.py --merge runs/msd/*.json
    python benchmarks/msd_lung.py --all --seeds 0 1 2 --minutes 10   # all six, then the table

Target: pixelseg's mean Dice over seeds >= 1.2x the plain loop's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from budget import BudgetClock, machine
from pixelseg import workflows
from pixelseg.config import load_config
from pixelseg.data import read_mask
from pixelseg.metrics import binary_dice

DATA = "../shared/data/msd_lung_patches/patches.h5"
TARGET = 1.2
TEST_PATCHES, TUNE_PATCHES = 30, 20
SIDES = ("pixelseg", "baseline")


def load_patches(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``images`` float32 ``[N, 48, 48]`` in [0, 1] and ``labels`` uint8 ``[N, 48, 48]``."""
    import h5py  # the benchmark's own dependency (dev extra), not pixelseg's

    with h5py.File(path, "r") as f:
        images = np.asarray(f["images"], dtype=np.float32)[:, 0]
        labels = np.asarray(f["labels"])[:, 0]
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"{path}: labels must be 0 or 1, found {np.unique(labels)[:10]}")
    return images, labels.astype(np.uint8)


def split_indices(labels: np.ndarray, split: str = "test") -> tuple[list[int], list[int]]:
    """``(training, scored)`` patch indices: the 30 test patches, or (``split="tune"``) 20
    of the training patches; both draws stratified on whether a patch holds tumour."""
    from sklearn.model_selection import train_test_split

    def draw(indices: np.ndarray, size: int, seed: int) -> tuple[list[int], list[int]]:
        tumour = labels[indices].reshape(len(indices), -1).any(1)
        kept, held = train_test_split(indices, test_size=size, stratify=tumour, random_state=seed)
        return sorted(kept.tolist()), sorted(held.tolist())

    train, test = draw(np.arange(len(labels)), TEST_PATCHES, 0)
    if split == "test":
        return train, test
    if split == "tune":
        return draw(np.asarray(train), TUNE_PATCHES, 1)
    raise ValueError(f"unknown split {split!r}; choose test or tune")


def dice_scores(pred: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Mean per-patch Dice (an empty truth scores 1 if the prediction is empty, else 0), the
    mean over patches with tumour, and the Dice of the pooled voxels; masks ``[N, H, W]``."""
    per_patch = binary_dice(pred, truth, empty_score=1.0)
    tumour = (truth.flatten(1) > 0).any(1)
    pooled = binary_dice(pred.reshape(1, -1), truth.reshape(1, -1))[0]
    return {
        "dice": float(per_patch.mean()),
        "dice_tumour": float(per_patch[tumour].mean()) if tumour.any() else float("nan"),
        "dice_global": float(pooled),
        "per_patch": per_patch.tolist(),
    }


def write_folder(images: np.ndarray, labels: np.ndarray, indices: list[int], root: Path) -> Path:
    """``root/images/patch_XXX.png`` (grey, value x 255 rounded) and ``root/masks/`` (0/1),
    XXX the patch's index in the h5 file: the folder form pixelseg's semantic task reads."""
    from PIL import Image

    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in indices:
        grey = np.clip(np.round(images[i] * 255.0), 0, 255).astype(np.uint8)
        Image.fromarray(grey).save(root / "images" / f"patch_{i:03d}.png")
        Image.fromarray(labels[i]).save(root / "masks" / f"patch_{i:03d}.png")
    return root


def length_overrides(args) -> list[str]:
    """The run's length: ``--steps`` optimiser steps (no time budget), or ``--minutes`` of
    training, with the epochs out of the way so that the budget ends the run."""
    if args.steps:
        return [f"train.iterations={args.steps}", "train.epochs=null", "train.max_minutes=null"]
    return [f"train.max_minutes={args.minutes}", "train.epochs=100000"]


class StepCount:
    """Records the optimiser steps and training minutes a pixelseg run made."""

    steps, minutes = 0, 0.0

    def on_train_end(self, trainer) -> None:
        self.steps = trainer.state.iteration
        self.minutes = trainer.training_seconds() / 60


def run_pixelseg(args, images, labels, train, scored) -> dict:
    with tempfile.TemporaryDirectory(prefix="msd_lung_") as tmp:
        write_folder(images, labels, train, Path(tmp) / "train")
        held = write_folder(images, labels, scored, Path(tmp) / "scored")
        run_dir = Path(args.out) / f"pixelseg_{args.split}_{args.seed}"
        overrides = [
            f"data.images={tmp}/train/images",
            f"data.masks={tmp}/train/masks",
            f"data.val_images={held}/images",
            f"data.val_masks={held}/masks",
            f"seed={args.seed}",
            *length_overrides(args),
            f"train.threads={args.threads}",
            "train.progress=false",
            "train.tensorboard=false",
            f"output_dir={run_dir}",
            *args.overrides,
        ]
        count = StepCount()
        workflows.train(load_config(args.config, overrides), callbacks=[count])
        out = Path(tmp) / "predicted"
        workflows.predict_files(run_dir / "last.pt", [str(held / "images")], out)
        pred = np.stack([read_mask(out / f"patch_{i:03d}_mask.png") for i in scored])
    return {"steps": count.steps, "training_minutes": count.minutes, "pred": pred}


def run_baseline(args, images, labels, train, scored) -> dict:
    import segmentation_models_pytorch as smp

    torch.manual_seed(args.seed)
    order_rng = torch.Generator().manual_seed(args.seed)
    x = torch.from_numpy(images[train]).unsqueeze(1)
    y = torch.from_numpy(labels[train]).float().unsqueeze(1)
    model = smp.Unet("resnet18", encoder_weights=None, in_channels=1, classes=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    clock, steps = BudgetClock(), 0

    def done() -> bool:
        return steps >= args.steps if args.steps else clock.training_minutes() >= args.minutes

    model.train()
    while not done():
        order = torch.randperm(len(x), generator=order_rng)
        for start in range(0, len(order), 16):
            batch = order[start : start + 16]
            optimizer.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            optimizer.step()
            steps += 1
            if done():
                break
    minutes = clock.training_minutes()
    model.eval()
    with torch.inference_mode():
        logits = model(torch.from_numpy(images[scored]).unsqueeze(1))
    pred = (logits[:, 0] > 0).numpy().astype(np.uint8)  # sigmoid > 0.5
    return {"steps": steps, "training_minutes": minutes, "pred": pred}


def run_side(args) -> dict:
    torch.set_num_threads(args.threads)
    images, labels = load_patches(args.data)
    train, scored = split_indices(labels, args.split)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    run = (run_pixelseg if args.side == "pixelseg" else run_baseline)(
        args, images, labels, train, scored
    )
    truth = torch.from_numpy(labels[scored])
    scores = dice_scores(torch.from_numpy(run["pred"]), truth)
    record = {
        "side": args.side,
        "seed": args.seed,
        "split": args.split,
        "minutes": None if args.steps else args.minutes,
        "step_budget": args.steps,
        "steps": run["steps"],
        "training_minutes": run["training_minutes"],
        "wall_minutes": (time.perf_counter() - started) / 60,
        "scored_patches": len(scored),
        "tumour_free_patches": int((truth.flatten(1) == 0).all(1).sum()),
        "training_patches": len(train),
        "overrides": args.overrides,
        "machine": {**machine(args.threads), "load_average_before": load_before},
        **scores,
    }
    print(
        f"{args.side} seed {args.seed} ({args.split}): Dice {scores['dice']:.4f}, tumour "
        f"patches {scores['dice_tumour']:.4f}, global {scores['dice_global']:.4f}; "
        f"{run['steps']} steps in {run['training_minutes']:.2f} training minutes",
        flush=True,
    )
    return record


def merge(paths: list[str]) -> list[str]:
    """The table over saved runs: mean and sample std over seeds per side, the ratio of
    the mean Dice (pixelseg / baseline) against the target, steps and machine."""
    records = [json.loads(Path(p).read_text()) for p in paths]
    if not records:
        return ["no runs to merge"]
    kinds = {(r["split"], r["minutes"], r["step_budget"]) for r in records}
    if len(kinds) > 1:
        shown = ", ".join(f"split {s} minutes {m} steps {n}" for s, m, n in sorted(kinds, key=str))
        raise ValueError(f"the runs differ in split or budget ({shown}); merge like with like")
    first = records[0]
    budget = (
        f"{first['minutes']:g} training minutes"
        if first["minutes"] is not None
        else f"{first['step_budget']} steps"
    )
    lines = [
        f"MSD lung patches ({first['split']} split): {first['scored_patches']} scored patches "
        f"({first['tumour_free_patches']} tumour-free), {first['training_patches']} training "
        f"patches, {budget}; mean +- std over seeds",
        f"{'side':<9} {'seeds':<8} {'Dice (all)':>17} {'Dice (tumour)':>17} "
        f"{'global Dice':>17}  steps",
    ]
    means = {}
    for side in SIDES:
        runs = sorted((r for r in records if r["side"] == side), key=lambda r: r["seed"])
        if not runs:
            continue
        cells = []
        for key in ("dice", "dice_tumour", "dice_global"):
            values = [r[key] for r in runs]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.4f} +- {std:.4f}")
            if key == "dice":
                means[side] = statistics.mean(values)
        seeds = ",".join(str(r["seed"]) for r in runs)
        steps = ", ".join(str(r["steps"]) for r in runs)
        lines.append(f"{side:<9} {seeds:<8} {cells[0]:>17} {cells[1]:>17} {cells[2]:>17}  {steps}")
    if len(means) == 2:
        ratio = means["pixelseg"] / means["baseline"]
        verdict = "met" if ratio >= TARGET else "not met"
        lines.append(
            f"mean Dice pixelseg {means['pixelseg']:.4f} / baseline {means['baseline']:.4f} = "
            f"{ratio:.2f}x (target >= {TARGET}x: {verdict})"
        )
    hosts = sorted({f"{r['machine']['platform']}, {r['machine']['cpus']} CPUs" for r in records})
    threads = sorted({r["machine"]["threads"] for r in records})
    loads = [
        r["machine"]["load_average_before"]
        for r in records
        if "load_average_before" in r["machine"]
    ]
    busy = (
        f"; 1-minute load average at the runs' starts {min(loads):.1f}..{max(loads):.1f}"
        if loads
        else ""
    )
    lines.append(f"machine: {'; '.join(hosts)}; threads {', '.join(map(str, threads))}{busy}")
    return lines


def run_all(args) -> list[str]:
    """Every side and seed, each in its own process, one after the other; then the table."""
    paths = []
    for seed in args.seeds:
        for side in SIDES:
            path = Path(args.out) / f"{side}_{seed}.json"
            length = (
                ["--steps", str(args.steps)] if args.steps else ["--minutes", str(args.minutes)]
            )
            command = [sys.executable, __file__, "--side", side, "--seed", str(seed), *length,
                       "--threads", str(args.threads), "--split", args.split, "--data", args.data,
                       "--config", args.config, "--out", args.out, "--json", str(path)]  # fmt: skip
            if side == "pixelseg":
                command += args.overrides
            subprocess.run(command, check=True)
            paths.append(str(path))
    return merge(paths)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--side", choices=SIDES, help="train and score this side")
    p.add_argument("--all", action="store_true", help="run both sides for every --seeds")
    p.add_argument("--merge", nargs="+", metavar="JSON", help="print the table of saved runs")
    p.add_argument(
        "--export", type=Path, metavar="DIR", help="write DIR/train and DIR/test folders"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--minutes", type=float, default=10.0, help="training-time budget per run")
    p.add_argument("--steps", type=int, help="train this many optimiser steps instead (tuning)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--split", choices=["test", "tune"], default="test")
    p.add_argument("--data", default=DATA)
    p.add_argument("--config", default="configs/msd_lung_patches_unet.yaml")
    p.add_argument("--out", default="runs/msd")
    p.add_argument("--json", type=Path, help="save the run's record here")
    p.add_argument("overrides", nargs="*", help="config overrides for pixelseg's side")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.merge:
        print("\n".join(merge(args.merge)))
        return
    if not Path(args.data).is_file():
        sys.exit(f"MSD lung patches not found at {args.data!r} (see ../shared/data/README.md)")
    if args.export:
        images, labels = load_patches(args.data)
        train, test = split_indices(labels, "test")
        write_folder(images, labels, train, args.export / "train")
        write_folder(images, labels, test, args.export / "test")
        print(f"wrote {len(train)} training and {len(test)} test patches under {args.export}")
    elif args.all:
        print("\n".join(run_all(args)))
    elif args.side:
        record = run_side(args)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(record, indent=1))
    else:
        sys.exit("choose --side, --all, --merge or --export (see --help)")


if __name__ == "__main__":
    main()
