"""Shared pieces of the wall-clock-budget benchmarks (camvid.py, membrane.py and others).

Both sides of a comparison get the same training-time budget; evaluation pauses the clock
on both sides, and both are scored by the same metric code at the data's full resolution.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pixelseg.engine.device import cpu_has_native_bf16
from pixelseg.metrics import ConfusionMatrix

Predict = Callable[[torch.Tensor], torch.Tensor]  # normalised [1, C, H, W] -> logits


@dataclass
class Curve:
    """Scores against training minutes."""

    name: str
    points: list[tuple[float, dict]] = field(default_factory=list)
    steps: int | None = None  # optimiser steps at the last point

    def at(self, minutes: float) -> dict:
        """The last point at or before ``minutes`` (plus a small tolerance)."""
        eligible = [p for p in self.points if p[0] <= minutes + 0.5]
        return eligible[-1][1] if eligible else {}


@torch.inference_mode()
def score(
    predict: Predict,
    samples: list[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    ignore_index: int | None,
) -> dict:
    """Confusion-matrix metrics of ``predict`` over ``(image, mask)`` pairs at mask resolution."""
    matrix = ConfusionMatrix(num_classes, ignore_index=ignore_index)
    for image, mask in samples:
        logits = predict(image.unsqueeze(0))
        if logits.shape[-2:] != mask.shape[-2:]:
            logits = F.interpolate(
                logits, size=mask.shape[-2:], mode="bilinear", align_corners=False
            )
        matrix.update(logits.argmax(1), mask.unsqueeze(0))
    return matrix.compute()


class BudgetClock:
    """Counts training seconds only; ``pause()`` brackets evaluation."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.excluded = 0.0

    def training_minutes(self) -> float:
        return (time.perf_counter() - self.start - self.excluded) / 60

    def mark_due(self, mark: float, budget: float) -> bool:
        """Whether an intermediate score at ``mark`` minutes is due now. The end of the
        budget is left to the one final score after the loop, so a mark that falls on the
        budget is not scored twice."""
        return mark <= self.training_minutes() < budget

    def pause(self):
        clock = self

        class _Pause:
            def __enter__(self):
                self.tick = time.perf_counter()

            def __exit__(self, *exc):
                clock.excluded += time.perf_counter() - self.tick

        return _Pause()


def resize_pair(image: np.ndarray, mask: np.ndarray, size: tuple[int, int]):
    """Image bilinear, mask nearest, to ``size`` (H, W)."""
    from PIL import Image

    h, w = size
    img = Image.fromarray(image).resize((w, h), Image.BILINEAR)
    msk = Image.fromarray(mask.astype(np.uint8)).resize((w, h), Image.NEAREST)
    return np.asarray(img), np.asarray(msk)


def to_tensor(image: np.ndarray, mean, std) -> torch.Tensor:
    array = image.astype(np.float32) / 255.0
    if array.ndim == 2:
        array = array[:, :, None]
    array = (array - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def print_curves(curves: list[Curve], marks: list[float], keys: list[str]) -> None:
    header = f"{'minutes':>8} " + " ".join(f"{c.name + ' ' + k:>24}" for c in curves for k in keys)
    print(header)
    for minute in marks:
        cells = []
        for curve in curves:
            point = curve.at(minute)
            cells += [f"{point.get(k, float('nan')):>24.4f}" for k in keys]
        print(f"{minute:>8.1f} " + " ".join(cells))


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("" where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def machine(threads: int) -> dict:
    """What a saved result needs to be read beside another machine's: time budgets only
    compare within one machine, and bf16 in hardware roughly doubles a bf16 recipe's steps."""
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "threads": threads,
        "native_bf16": cpu_has_native_bf16(),
        "torch": torch.__version__,
        "load_average": list(os.getloadavg()),
        "recorded_utc": time.strftime("%Y-%m-%dT%H:%M", time.gmtime()),
    }


def time_budget_overrides(minutes: float) -> list[str]:
    """Config overrides under which the time budget alone ends pixelseg's training run.

    The config's epoch cap is lifted (a fast machine would otherwise stop early, before the
    budget, as the 60-epoch cap once ended a CamVid fold at 24.9 of 30 minutes; the poly
    decay fits itself to whichever ends first), and the in-run validation, progress bar and
    TensorBoard are off: the benchmark scores both sides itself, with the clock paused.
    """
    return [
        f"train.max_minutes={minutes}",
        "train.epochs=100000",
        "train.val_every=100000",
        "train.progress=false",
        "train.tensorboard=false",
    ]


def budget_parser(
    doc: str, *, minutes: float, eval_every: float, data: str, config: str, out: str
) -> argparse.ArgumentParser:
    """The command line both budget benchmarks share; ``doc`` is the script's docstring."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=minutes)
    parser.add_argument("--eval-every", type=float, default=eval_every)
    parser.add_argument("--data", default=data)
    parser.add_argument("--config", default=config)
    parser.add_argument("--out", default=out)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["pixelseg", "baseline"])
    parser.add_argument("overrides", nargs="*", help="config overrides for pixelseg's side")
    return parser


def parse_budget_args(parser: argparse.ArgumentParser, what: str) -> argparse.Namespace:
    """Parsed arguments, after checking the data folder exists and setting the threads."""
    args = parser.parse_args()
    if not Path(args.data).is_dir():
        sys.exit(f"{what} not found at {args.data!r} (see ../shared/data/README.md)")
    torch.set_num_threads(args.threads)
    return args


def run_sides(
    args: argparse.Namespace, pixelseg: Callable[[], Curve], baseline: Callable[[], Curve]
) -> tuple[list[Curve], list[float]]:
    """pixelseg's curve then the baseline's (either skipped by ``--only``), and the minutes
    at which both were scored."""
    curves = []
    if args.only != "baseline":
        curves.append(pixelseg())
    if args.only != "pixelseg":
        curves.append(baseline())
    marks = sorted(
        {*np.arange(args.eval_every, args.minutes + 1e-9, args.eval_every), args.minutes}
    )
    return curves, marks


def cpu_logits(model: torch.nn.Module, device: torch.device) -> Predict:
    """``model`` as a CPU-tensor-in, float CPU-logits-out function."""
    return lambda x: model(x.to(device)).float().cpu()


class CurveCallback:
    """Scores the model every ``every`` training minutes on the trainer's own clock.

    ``score_fn(predict) -> metrics`` gets the trainer's inference model (the EMA of the
    weights when the config keeps one) in eval mode, wrapped to take and return CPU tensors
    wherever the model runs (the scoring code keeps its images on the CPU); its time is
    added to the trainer's
    ``excluded_seconds``, so neither the budget nor the curve counts it (nor the trainer's
    own validation).
    """

    def __init__(self, curve: Curve, every: float, score_fn, wrap=None) -> None:
        self.curve, self.every, self.score_fn = curve, every, score_fn
        self.wrap = wrap or cpu_logits
        self.next_mark = every
        self.scored_iteration = -1

    def _score(self, trainer) -> None:
        self.scored_iteration = trainer.state.iteration
        self.curve.steps = trainer.state.iteration
        tick = time.perf_counter()
        model = trainer.inference_model
        model.eval()
        metrics = self.score_fn(self.wrap(model, next(model.parameters()).device))
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
