"""Peak memory of volumetric training data: every case in memory against the disk cache.

Writes ``--cases`` synthetic CTs of ``--size``^3 voxels (int16 HU noise around lung density,
a labelled sphere in each) as NIfTI pairs, then, each in a fresh process so that peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is its own, builds the volumetric task's
training data from them and draws ``--patches`` patches: in memory (``volumetric.cache_dir``
unset), with a cold cache (every case prepared and written) and with a warm one (read
memory-mapped). The table shows the start-up time, the patch rate, the peak RSS above the
process's RSS right after its imports (torch and friends) once the data is built
("start-up MiB") and after the patches ("above imports"), and the peak RSS itself. Pages of a
memory map count in RSS once a patch has touched them, but they are the kernel's page cache:
shared by DataLoader workers and given back under memory pressure, unlike arrays in memory.

Run: ``PYTHONPATH=src .venv/bin/python benchmarks/volumetric_cache.py`` (``--help``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODES = ("memory", "cache (cold)", "cache (warm)")


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def write_cases(folder: Path, count: int, size: int) -> None:
    from pixelseg.medical.nifti import write_nifti

    affine = np.diag([0.8, 0.8, 1.5, 1.0])
    grid = np.indices((size, size, size)).astype(np.float32)
    for case in range(count):
        rng = np.random.default_rng(case)
        image = rng.normal(-700.0, 200.0, size=(size, size, size)).astype(np.int16)
        centre = rng.uniform(0.3 * size, 0.7 * size, size=3)
        radius = size * rng.uniform(0.05, 0.15)
        label = (((grid - centre[:, None, None, None]) ** 2).sum(0) < radius**2).astype(np.uint8)
        image[label == 1] = 40
        write_nifti(image, affine, folder / "images" / f"case_{case:03d}.nii.gz")
        write_nifti(label, affine, folder / "labels" / f"case_{case:03d}.nii.gz")


def child(folder: Path, mode: str, patches: int) -> dict[str, float]:
    """Build the training data in this process and draw patches; the numbers as a dict."""
    import torch

    from pixelseg.config import parse_config
    from pixelseg.tasks.volumetric_data import build_volumetric_data

    torch.set_num_threads(1)
    baseline = _rss_mib()
    cache = None if mode == "memory" else str(folder / "cache")
    config = parse_config({
        "task": "volumetric",
        "data": {"dataset": "nifti", "images": str(folder / "images"), "in_channels": 1,
                 "masks": str(folder / "labels"), "val_fraction": 0.2},
        "volumetric": {"patch_size": [64, 64, 64], "samples_per_epoch": patches,
                       "cache_dir": cache, "window": [-600, 1500]},
    })  # fmt: skip
    start = time.perf_counter()
    train = build_volumetric_data(config).train
    built, after_startup = time.perf_counter(), _rss_mib()
    for index in range(patches):
        train.transform.set_seed(index)
        train[index]
    drawn = time.perf_counter()
    return {
        "startup_s": built - start,
        "patches_per_s": patches / (drawn - built),
        "startup_above_imports_mib": after_startup - baseline,
        "peak_rss_mib": _rss_mib(),
        "above_imports_mib": _rss_mib() - baseline,
        "train_cases": len(train.images),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--patches", type=int, default=200)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.folder, args.child, args.patches)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_cases(folder, args.cases, args.size)
        rows = []
        for mode in MODES:
            done = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--folder", str(folder),
                 "--patches", str(args.patches)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            rows.append((mode, json.loads(done.stdout.strip().splitlines()[-1])))
    first = rows[0][1]
    print(
        f"{args.cases} cases of {args.size}^3 voxels ({first['train_cases']} training), "
        f"{args.patches} patches of 64^3"
    )
    print(f"{'mode':<14} {'start-up s':>10} {'patches/s':>10} {'start-up MiB':>13} "
          f"{'peak RSS MiB':>13} {'above imports':>14}")  # fmt: skip
    for mode, row in rows:
        print(
            f"{mode:<14} {row['startup_s']:>10.2f} {row['patches_per_s']:>10.1f} "
            f"{row['startup_above_imports_mib']:>13.0f} "
            f"{row['peak_rss_mib']:>13.0f} {row['above_imports_mib']:>14.0f}"
        )


if __name__ == "__main__":
    main()
