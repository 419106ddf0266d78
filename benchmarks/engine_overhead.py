"""What pixelseg's training loop costs per step, against a plain PyTorch loop.

Both sides train the same model (same initial weights) on the same in-memory batches with
the same AdamW optimiser, cross-entropy loss, thread count and determinism setting, with
``num_workers=0``. pixelseg's side is the real :class:`~pixelseg.engine.trainer.Trainer`
with its task, loss, per-step bookkeeping, learning-rate schedule, progress lines and CSV
log (TensorBoard off, as the plain loop writes nothing either); checkpoint writing is left
out by timing each step from one ``on_step`` to the next and taking the median, which drops
the one interval per epoch that holds the checkpoint write and the validation. The plain
loop is timed the same way. Sides alternate over ``--repeats`` rounds so machine noise hits
both; the table reports medians over rounds.

Two models: a 4-channel U-Net on 32x32 images (a step of a few milliseconds, where any
overhead shows, reported in ms per step) and the U-Net with a ResNet-18 encoder on 128x128
images (reported as the ratio of step times).

Target (engine issue): overhead under 2 ms per step on the small model, and the ResNet-18
ratio within the rounds' spread of 1.0.

Run: ``.venv/bin/python benchmarks/engine_overhead.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pixelseg import losses, models
from pixelseg.config import parse_config
from pixelseg.engine.callbacks import CSVLogger, ProgressBar
from pixelseg.engine.trainer import Trainer
from pixelseg.tasks import SemanticTask

MODELS = {
    "small": {"name": "unet", "options": {"base_channels": 4}, "size": 32},
    "resnet18": {"name": "unet", "encoder": "resnet18", "options": {}, "size": 128},
}
CLASSES = 4
SETTLE = 3


class InMemory(Dataset):
    """Pre-made ``{"image", "mask"}`` samples (no decoding, no augmentation)."""

    def __init__(self, count: int, size: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(count, 3, size, size, generator=generator)
        self.masks = torch.randint(0, CLASSES, (count, size, size), generator=generator)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.images[index], "mask": self.masks[index], "name": str(index)}


class StepClock:
    """``on_step`` timestamps; the median gap is the time of one step."""

    def __init__(self) -> None:
        self.ticks: list[float] = []

    def on_step(self, trainer: Any, logs: dict[str, float]) -> None:
        self.ticks.append(time.perf_counter())

    def median_step(self) -> float:
        return _median_gap(self.ticks)


def _median_gap(ticks: list[float]) -> float:
    """Median time between steps, the first ``SETTLE`` steps left out (allocator and
    kernel-cache warm-up)."""
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    return statistics.median(gaps[SETTLE:] or gaps)


def pixelseg_step(model: nn.Module, data: Dataset, steps: int, batch: int) -> float:
    config = parse_config(
        {
            "seed": 0,
            "data": {"batch_size": batch},
            "train": {
                "iterations": steps,
                "epochs": None,
                "optimizer": {"name": "adamw", "lr": 1e-3},
                "scheduler": {"name": "none"},
                "amp": "off",
                "device": "cpu",
                "tensorboard": False,
                "val_every": 10**6,
            },
        }
    )
    task = SemanticTask(CLASSES, losses.create("ce"))
    clock = StepClock()
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(
            model,
            task,
            data,
            None,
            config,
            run_dir,
            {"task": "semantic"},
            callbacks=[
                CSVLogger(Path(run_dir) / "log.csv", task.metric_names),
                ProgressBar(),
                clock,
            ],
        )
        trainer.fit()
    return clock.median_step()


def plain_step(model: nn.Module, data: Dataset, steps: int, batch: int) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(
        data, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    ticks, done = [], 0
    model.train()
    while done < steps:
        for sample in loader:
            loss = loss_fn(model(sample["image"]), sample["mask"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            float(loss.detach())  # the trainer reads the loss every step too
            ticks.append(time.perf_counter())
            done += 1
            if done >= steps:
                break
    return _median_gap(ticks)


def measure(name: str, repeats: int, steps: int, batch: int, warm: bool = True) -> dict[str, Any]:
    spec = MODELS[name]
    torch.manual_seed(0)
    initial = models.create(spec["name"], CLASSES, encoder=spec.get("encoder"), **spec["options"])
    data = InMemory(batch * 8, spec["size"], seed=1)
    if warm:  # an untimed round of each side: the first forward passes build kernel caches
        pixelseg_step(copy.deepcopy(initial), data, SETTLE + 2, batch)
        plain_step(copy.deepcopy(initial), data, SETTLE + 2, batch)
    rounds = []
    for _ in range(repeats):
        ours = pixelseg_step(copy.deepcopy(initial), data, steps, batch)
        plain = plain_step(copy.deepcopy(initial), data, steps, batch)
        rounds.append({"pixelseg_ms": ours * 1e3, "plain_ms": plain * 1e3})
    overhead = [r["pixelseg_ms"] - r["plain_ms"] for r in rounds]
    ratio = [r["pixelseg_ms"] / r["plain_ms"] for r in rounds]
    return {
        "model": name,
        "image": spec["size"],
        "batch": batch,
        "steps": steps,
        "rounds": rounds,
        "pixelseg_ms": statistics.median(r["pixelseg_ms"] for r in rounds),
        "plain_ms": statistics.median(r["plain_ms"] for r in rounds),
        "overhead_ms": statistics.median(overhead),
        "overhead_spread_ms": [min(overhead), max(overhead)],
        "ratio": statistics.median(ratio),
        "ratio_spread": [min(ratio), max(ratio)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds per model")
    parser.add_argument(
        "--steps", type=int, default=40, help=f"steps per side and round (> {SETTLE + 1})"
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed round")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    results = [
        measure(name, args.repeats, args.steps, args.batch, warm=not args.no_warmup)
        for name in args.models
    ]
    print(f"\nper-step time, median of {args.repeats} interleaved rounds, {args.threads} threads")
    print(
        f"{'model':<10}{'image':>6}{'pixelseg ms':>13}{'plain ms':>10}{'overhead ms':>13}"
        f"{'spread':>18}{'ratio':>7}{'spread':>15}"
    )
    for r in results:
        lo, hi = r["overhead_spread_ms"]
        rlo, rhi = r["ratio_spread"]
        print(
            f"{r['model']:<10}{r['image']:>6}{r['pixelseg_ms']:>13.2f}{r['plain_ms']:>10.2f}"
            f"{r['overhead_ms']:>13.2f}{f'[{lo:.2f}, {hi:.2f}]':>18}{r['ratio']:>7.3f}"
            f"{f'[{rlo:.3f}, {rhi:.3f}]':>15}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
