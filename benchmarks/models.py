"""CPU latency and parameter count of pixelseg models next to segmentation_models_pytorch.

Each pair is built in the same run with the same architecture, encoder and class count, and
timed alternately (ours, smp, smp, ours, ...) so that load from other processes hits both
alike. Batch 1, ``torch.inference_mode()``, eval mode, ``torch.set_num_threads(threads)``;
warm-up runs, then the median of ``--runs`` runs. Prints a table; asserts nothing.

Same architectures (unet and unetpp load smp's weights and give the same logits, see
tests/models/test_models_unet.py); smp's DeepLabV3Plus has one 3x3 decoder conv fewer than
the paper and ours. Where ours is faster at inference it is because its own decoder blocks
(ConvBNReLU) fold BatchNorm into the conv in eval mode and its decoders run channels-last on
CPU; the torchvision encoders run unchanged (no folding there), as smp's do.

    .venv/bin/python benchmarks/models.py              # 3x512x512, 2 threads, 10 runs
    .venv/bin/python benchmarks/models.py --runs 5 --size 256
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import segmentation_models_pytorch as smp
import torch
from torch import nn

from pixelseg.models import create

NUM_CLASSES = 21  # Pascal VOC

# (label, our builder, smp builder or None when smp has no such model)
PAIRS: list[tuple[str, Callable[[], nn.Module], Callable[[], nn.Module] | None]] = [
    (
        "unet resnet34",
        lambda: create("unet", NUM_CLASSES, encoder="resnet34"),
        lambda: smp.Unet("resnet34", encoder_weights=None, classes=NUM_CLASSES),
    ),
    ("unet classic (64)", lambda: create("unet", NUM_CLASSES), None),
    (
        "unetpp resnet34",
        lambda: create("unetpp", NUM_CLASSES, encoder="resnet34"),
        lambda: smp.UnetPlusPlus("resnet34", encoder_weights=None, classes=NUM_CLASSES),
    ),
    (
        "deeplabv3plus resnet50",
        lambda: create("deeplabv3plus", NUM_CLASSES, encoder="resnet50"),
        lambda: smp.DeepLabV3Plus("resnet50", encoder_weights=None, classes=NUM_CLASSES),
    ),
]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def time_once(model: nn.Module, x: torch.Tensor) -> float:
    """Seconds for one forward pass."""
    start = time.perf_counter()
    model(x)
    return time.perf_counter() - start


def bench_pair(
    ours: nn.Module, theirs: nn.Module | None, x: torch.Tensor, warmup: int, runs: int
) -> list[list[float]]:
    """Latencies (s) of each run of ``ours`` and ``theirs`` (if any), timed alternately."""
    models = [m for m in (ours, theirs) if m is not None]
    with torch.inference_mode():
        for _ in range(warmup):
            for m in models:
                m(x)
        times: list[list[float]] = [[] for _ in models]
        for r in range(runs):
            order = range(len(models)) if r % 2 == 0 else reversed(range(len(models)))
            for i in order:
                times[i].append(time_once(models[i], x))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="input height and width")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per model")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--only", default=None, help="run only pairs whose label contains this")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(1, 3, args.size, args.size)
    print(
        f"batch 1, 3x{args.size}x{args.size}, {args.threads} threads, eval + inference_mode, "
        f"median of {args.runs} runs after {args.warmup} warm-up, torch {torch.__version__}, "
        f"smp {smp.__version__}"
    )
    print("ratio = ours / smp of the medians; 'min ratio' compares the fastest runs (less noise")
    print("from other processes on a shared machine).")
    header = (
        f"{'model':<24} {'ours ms':>9} {'smp ms':>9} {'ratio':>6} {'min ratio':>9} "
        f"{'ours params':>12} {'smp params':>12}"
    )
    print(header)
    print("-" * len(header))
    for label, build_ours, build_theirs in PAIRS:
        if args.only and args.only not in label:
            continue
        ours = build_ours().eval()
        theirs = build_theirs().eval() if build_theirs is not None else None
        times = bench_pair(ours, theirs, x, args.warmup, args.runs)
        t_ours = statistics.median(times[0])
        p_ours = count_params(ours)
        if theirs is None:
            print(
                f"{label:<24} {t_ours * 1e3:>9.1f} {'-':>9} {'-':>6} {'-':>9} "
                f"{p_ours:>12,} {'-':>12}"
            )
            continue
        t_theirs = statistics.median(times[1])
        min_ratio = min(times[0]) / min(times[1])
        print(
            f"{label:<24} {t_ours * 1e3:>9.1f} {t_theirs * 1e3:>9.1f} {t_ours / t_theirs:>6.2f} "
            f"{min_ratio:>9.2f} {p_ours:>12,} {count_params(theirs):>12,}"
        )


if __name__ == "__main__":
    main()
