"""A 2D U-Net on slices against the 3D U-Net, on the volumetric task's CT phantoms, in one run.

Trains ``configs/phantom_unet2d.yaml`` and ``configs/phantom_unet3d.yaml`` one after the other
with the same budget: equal optimiser steps (``--iterations N``: the cosine schedule spans N
steps) or equal training minutes (``--minutes M``: validation pauses the clock and the
schedule fits the budget, as in the configs). Both read the same phantoms and are scored on
the same held-out ones (the configs' validation cases, never trained on) by the task's own
evaluation of the last weights (sliding window over the patch size, surface metrics in mm).
Everything runs on ``--threads`` threads; the table gives per model the parameters, steps,
training minutes, seconds per step, nodule Dice (mean over cases), HD95, NSD, cases with a
missed or invented nodule, and the evaluation's seconds (6 cases).

Run: ``PYTHONPATH=src .venv/bin/python benchmarks/phantom_slices.py --iterations 240``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from pixelseg import workflows
from pixelseg.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("phantom_unet2d.yaml", "phantom_unet3d.yaml")


class StepClock:
    """The last step's iteration and training seconds (validation left out)."""

    def __init__(self) -> None:
        self.steps, self.seconds, self.parameters = 0, 0.0, 0

    def on_train_start(self, trainer: Any) -> None:
        self.parameters = sum(p.numel() for p in trainer.model.parameters())

    def on_step(self, trainer: Any, logs: dict[str, Any]) -> None:
        self.steps = trainer.state.iteration
        self.seconds = trainer.training_seconds()


def run_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train config ``name`` with the budget, then evaluate its last weights."""
    out = Path(args.out) / Path(name).stem
    budget = (
        [f"train.iterations={args.iterations}", "train.epochs=null", "train.max_minutes=null"]
        if args.iterations
        else [f"train.max_minutes={args.minutes}"]
    )
    overrides = [f"output_dir={out}", f"train.threads={args.threads}", "train.progress=false",
                 "train.tensorboard=false", *budget, *args.override]  # fmt: skip
    config = load_config(ROOT / "configs" / name, overrides)
    clock = StepClock()
    workflows.train(config, callbacks=[clock])
    started = time.perf_counter()
    metrics = workflows.eval_checkpoint(config, out / "last.pt", out / "eval")
    return {
        "config": name,
        "model": config.model.name,
        "parameters": clock.parameters,
        "steps": clock.steps,
        "train_minutes": clock.seconds / 60,
        "seconds_per_step": clock.seconds / max(clock.steps, 1),
        "dice": metrics["dice"]["mean"],
        "hd95": metrics["hd95"]["mean"],
        "nsd": metrics["nsd"]["mean"],
        "missed_or_invented": metrics["hd95"]["infinite"],
        "cases": metrics["num_cases"],
        "eval_seconds": time.perf_counter() - started,
    }


def table(rows: list[dict[str, Any]]) -> str:
    def number(value: Any, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = [
        "| config | model | params | steps | train min | s/step | Dice | HD95 mm | NSD "
        "| missed/invented | eval s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['model']} | {r['parameters'] / 1e6:.2f} M | {r['steps']} | "
            f"{r['train_minutes']:.2f} | {r['seconds_per_step']:.2f} | {number(r['dice'], 3)} | "
            f"{number(r['hd95'], 1)} | {number(r['nsd'], 3)} | "
            f"{r['missed_or_invented']}/{r['cases']} | {r['eval_seconds']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--iterations", type=int, help="equal optimiser steps for both")
    budget.add_argument("--minutes", type=float, help="equal training minutes for both")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/bench_phantom_slices")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--override", nargs="*", default=[], help="config overrides for both")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [run_one(name, args) for name in args.configs]
    budget_text = f"{args.iterations} steps" if args.iterations else f"{args.minutes} minutes"
    print(f"budget: {budget_text} each, {args.threads} thread(s)")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
