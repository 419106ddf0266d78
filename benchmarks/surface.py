"""Surface metrics against MONAI: the same HD95, ASSD and NSD values, and the time to get them.

Each pair is a random blobby target in a ``size^3`` volume (smoothed Gaussian noise above its
70th percentile) and a prediction that redraws part of it, with a random anisotropic spacing
(0.6-1.0 mm in-plane, 1.5-3.0 mm between slices). Compared on the same pairs, in the same
run, interleaved (the method order rotates every pair and repeat):

- ``pixelseg``: one ``surface_metrics(pred, target, spacing, tolerance)`` call, which returns
  all eight metrics (Dice ... NSD) from one pair of distance transforms.
- ``MONAI``: ``compute_hausdorff_distance(percentile=95)``,
  ``compute_average_surface_distance(symmetric=True)`` and ``compute_surface_dice`` with the
  same spacing and tolerance, the three calls MONAI needs for the same three surface numbers;
  each is timed on its own and their sum is the comparable total.

Run: ``.venv/bin/python benchmarks/surface.py`` (``--help`` for options). Exits 1 only if a
value differs from MONAI's beyond float32 rounding; timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pixelseg.metrics import surface_metrics

Pair = tuple[np.ndarray, np.ndarray, tuple[float, float, float]]


def make_pairs(count: int, size: int, seed: int) -> list[Pair]:
    """Seeded (prediction, target, spacing) triples of bool ``[size, size, size]`` masks."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    shape = (size, size, size)

    def blobs(sigma: float) -> np.ndarray:
        field = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
        return field > np.quantile(field, 0.7)

    pairs = []
    for _ in range(count):
        target = blobs(size / 20)
        pred = np.where(blobs(size / 12), blobs(size / 20), target)
        spacing = (*rng.uniform(0.6, 1.0, 2).round(3), round(float(rng.uniform(1.5, 3.0)), 3))
        pairs.append((pred, target, tuple(float(s) for s in spacing)))
    return pairs


def monai_methods(tolerance: float) -> dict[str, Callable[[Pair], float]]:
    from monai.metrics import (
        compute_average_surface_distance,
        compute_hausdorff_distance,
        compute_surface_dice,
    )

    def as_tensors(pair: Pair) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(pair[0])[None, None], torch.from_numpy(pair[1])[None, None]

    def hd95(pair: Pair) -> float:
        p, t = as_tensors(pair)
        return compute_hausdorff_distance(
            p, t, include_background=True, percentile=95, spacing=pair[2]
        ).item()

    def assd(pair: Pair) -> float:
        p, t = as_tensors(pair)
        return compute_average_surface_distance(
            p, t, include_background=True, symmetric=True, spacing=pair[2]
        ).item()

    def nsd(pair: Pair) -> float:
        p, t = as_tensors(pair)
        return compute_surface_dice(
            p, t, [tolerance], include_background=True, spacing=pair[2]
        ).item()

    return {"MONAI hd95": hd95, "MONAI assd": assd, "MONAI nsd": nsd}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: .venv/bin/python benchmarks/surface.py --pairs 10 --size 128 --json s.json",
    )
    parser.add_argument("--pairs", type=int, default=10, help="random pairs")
    parser.add_argument("--size", type=int, default=128, help="volume edge in voxels")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the pairs")
    parser.add_argument("--tolerance", type=float, default=2.0, help="NSD tolerance in mm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    import monai

    pairs = make_pairs(args.pairs, args.size, args.seed)
    theirs = monai_methods(args.tolerance)
    methods: dict[str, Callable[[Pair], object]] = {
        "pixelseg surface_metrics": lambda pair: surface_metrics(*pair, tolerance=args.tolerance),
        **theirs,
    }
    names = list(methods)
    times: dict[str, list[float]] = {name: [] for name in names}
    values: dict[str, list[float]] = {name: [] for name in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI's deprecation notes
        for name in names:  # warm-up: imports, lazy initialisation
            methods[name](pairs[0])
        turn = 0
        for repeat in range(args.repeats):
            for pair in pairs:
                for k in range(len(names)):
                    name = names[(turn + k) % len(names)]
                    start = time.perf_counter()
                    out = methods[name](pair)
                    times[name].append(time.perf_counter() - start)
                    if repeat == 0:
                        values[name].append(out)  # type: ignore[arg-type]
                turn += 1

    monai_total = [sum(ts) for ts in zip(*(times[n] for n in theirs), strict=True)]
    rows = {name: times[name] for name in names} | {"MONAI hd95 + assd + nsd": monai_total}
    median = {name: statistics.median(ts) for name, ts in rows.items()}
    ours = median["pixelseg surface_metrics"]
    spacing_text = ", ".join(f"({', '.join(f'{s:g}' for s in p[2])})" for p in pairs[:2])
    print(
        f"pairs={args.pairs} size={args.size}^3 repeats={args.repeats} tolerance="
        f"{args.tolerance} mm spacing e.g. {spacing_text} monai={monai.__version__} "
        f"torch={torch.__version__}"
    )
    print(f"{'method':28s} {'median s':>9s} {'min s':>9s}  vs pixelseg")
    for name, ts in rows.items():
        print(f"{name:28s} {median[name]:9.4f} {min(ts):9.4f}  {median[name] / ours:9.2f}x")

    worst = {}
    for key in ("hd95", "assd", "nsd"):
        ref = np.asarray(values[f"MONAI {key}"], dtype=np.float64)
        got = np.asarray([v[key] for v in values["pixelseg surface_metrics"]])
        worst[key] = float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1e-6)))
    equal = all(v <= 1e-5 for v in worst.values())
    print(
        "largest relative difference to MONAI over the pairs: "
        + ", ".join(f"{k} {v:.2e}" for k, v in worst.items())
        + f" -> {'EQUAL' if equal else 'DIFFERENT'} (float32 rounding allowed: 1e-5)"
    )
    print(
        f"speed-up over MONAI's three calls (medians): {median['MONAI hd95 + assd + nsd'] / ours:.1f}x"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "median_s": median,
                    "min_s": {name: min(ts) for name, ts in rows.items()},
                    "max_relative_difference": worst,
                    "equal": equal,
                    "values": {
                        "pixelseg": values["pixelseg surface_metrics"],
                        "monai": {k: values[f"MONAI {k}"] for k in ("hd95", "assd", "nsd")},
                    },
                },
                indent=2,
            )
        )
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
