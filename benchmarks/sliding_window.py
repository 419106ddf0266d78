"""Sliding-window inference against MONAI: the same blended logits, the time and the memory.

One ``1 x 1 x size^3`` seeded volume, windows (roi) of 64^3, overlap 0.5, Gaussian blending,
4 windows per predictor call, the same seeded model on both sides:

- ``convnet``: a 3-layer 3D conv net, 8 hidden channels (3^3, 3^3, then a 1^3 head), so cheap
  that the blending shows in the time;
- ``unet3d``: pixelseg's 3D U-Net (``create_volumetric("unet3d", ...)``, depth 4, width 16,
  instance norm), the volumetric task's model.

Methods: ``MONAI`` (``sliding_window_inference(mode="gaussian")``, its default full-size
buffer), ``pixelseg`` (``sliding_window_predict``, full precision), ``pixelseg budget``
(``memory_budget_mb=--budget-mb``: full precision while the buffers fit, else the float16 slab
path), ``pixelseg argmax`` (``reduce="argmax"``: int64 labels, reduced slab by slab). Both
libraries run under ``torch.no_grad()`` with ``--threads`` torch threads.

Every measurement runs in its own subprocess (this script with ``--worker``): it imports both
libraries (so the process differs only in the call), builds the model and the input, runs a
tiny forward pass to start the thread pool, takes
``ru_maxrss`` as the baseline, runs one sliding-window call and reports its wall time and the
``ru_maxrss`` growth (the peak resident memory the call added: buffers plus the model's working
memory). Methods are interleaved, their order rotating every repeat. A separate check worker
per model and size (up to ``--check-up-to``) runs all methods on the same input in one process
and compares values.

Run: ``.venv/bin/python benchmarks/sliding_window.py`` (``--help`` for options);
``--sizes 128 192 256 384 --budget-mb 1300`` for the growth table (8 classes: the budget
path is full precision up to 256^3 and float16 slabs at 384^3, whose float32 buffers would
take 1.8 GB), ``--sizes 256 --classes 14`` for the memory comparison. Exits 1 only if a check fails: pixelseg's full-precision output
differs from MONAI's by more than 1e-4, the float16 path exceeds its stated bound, or argmax
labels differ from the full-precision argmax other than at exact ties. Timings and memory are
reported, never asserted.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

# The parent process imports neither torch nor MONAI: a child's ru_maxrss starts from its
# parent's resident size (Linux carries it over fork and exec), so a heavy parent would hide
# every child's growth below it. Workers import what they need inside the functions.

METHODS = ("MONAI", "pixelseg", "pixelseg budget", "pixelseg argmax")
FP16_RELATIVE_BOUND = 2.0**-11  # round to nearest, float16's 10-bit mantissa
MB = 2**20


def build_model(name: str, classes: int, seed: int):
    """Seeded model in eval mode and the label the table shows."""
    import torch
    from torch import nn

    from pixelseg.models.volumetric import create_volumetric

    torch.manual_seed(seed)
    if name == "convnet":
        net = nn.Sequential(
            nn.Conv3d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv3d(8, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv3d(8, classes, 1),
        )
        return net.eval(), "convnet 3-layer 8ch"
    return create_volumetric("unet3d", classes, in_channels=1).eval(), "unet3d (depth 4, width 16)"


def runner(method: str, model, args: argparse.Namespace):
    """``volume -> output`` for one method, under ``torch.no_grad()`` like MONAI's callers."""
    import torch

    from pixelseg.inference import sliding_window_predict

    roi = (args.roi,) * 3
    if method == "MONAI":
        from monai.inferers import sliding_window_inference

        def monai(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return sliding_window_inference(
                    x, roi, args.sw_batch, model, overlap=args.overlap, mode="gaussian"
                )

        return monai
    options: dict[str, object] = {}
    if method == "pixelseg budget":
        options["memory_budget_mb"] = args.budget_mb
    if method == "pixelseg argmax":
        options["reduce"] = "argmax"
        options["memory_budget_mb"] = args.budget_mb
    if method == "pixelseg float16":
        options["output_dtype"] = torch.float16
    return lambda x: sliding_window_predict(
        model,
        x,
        roi,
        overlap=args.overlap,
        blend="gaussian",
        batch_size=args.sw_batch,
        **options,  # type: ignore[arg-type]
    )


def plan_of(method: str, classes: int, size: int, args: argparse.Namespace) -> tuple[float, str]:
    """MiB of the method's own buffers and the path that runs (pixelseg's plan; MONAI: its
    float32 output and count map). Raises ValueError when pixelseg's budget is too small."""
    import torch

    from pixelseg.inference.sliding_window import window_starts
    from pixelseg.inference.window_blending import WindowGrid, plan_buffers

    spatial, roi = (size,) * 3, (args.roi,) * 3
    if method == "MONAI":
        return (classes + 1) * size**3 * 4 / MB, "full float32"
    grid = WindowGrid.build(spatial, roi, [window_starts(size, args.roi, args.overlap)] * 3)
    reduce = "argmax" if method == "pixelseg argmax" else "none"
    budget = args.budget_mb if method in ("pixelseg budget", "pixelseg argmax") else None
    plan = plan_buffers(grid, 1, classes, torch.float32, memory_budget_mb=budget, reduce=reduce)
    kind = "argmax" if plan.reduce == "argmax" else str(plan.output_dtype).removeprefix("torch.")
    return plan.estimated_bytes / MB, f"{plan.path} {kind}"


def prepare(args: argparse.Namespace):
    """Threads, the seeded model and volume ``[1, 1, size, size, size]``, a tiny warm-up."""
    import torch

    torch.set_num_threads(args.threads)
    model, label = build_model(args.model, args.classes, args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    x = torch.randn(1, 1, args.size, args.size, args.size, generator=gen)
    with torch.no_grad():  # start the thread pool and lazy initialisation on a tiny input
        model(torch.zeros(1, 1, 16, 16, 16))
    gc.collect()
    return model, label, x


def resident_mb() -> float:
    """Current resident set size (VmRSS) in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(args: argparse.Namespace) -> dict[str, object]:
    """One timed call of one method; ru_maxrss growth over the state after setup.

    ``baseline_slack_mb`` is how far the high-water mark already stood above the resident size
    at the baseline (from an earlier transient); growth below it would not show, so the table
    flags runs where it is large.
    """
    import monai.inferers  # noqa: F401 (every worker imports both libraries alike)

    model, label, x = prepare(args)
    run = runner(args.worker, model, args)
    try:
        buffers, path = plan_of(args.worker, args.classes, args.size, args)
    except ValueError:
        buffers, path = None, "over budget"
    gc.collect()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    slack = base / 1024 - resident_mb()
    start = time.perf_counter()
    out = run(x)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del out
    return {
        "wall_s": wall,
        "rss_growth_mb": (peak - base) / 1024,
        "baseline_slack_mb": slack,
        "buffers_mb": buffers,
        "path": path,
        "model": label,
    }


def check_worker(args: argparse.Namespace) -> dict[str, object]:
    """All methods on one input in one process: differences to MONAI and to full precision."""
    import monai as monai_package
    import torch

    model, _, x = prepare(args)
    args.budget_mb = None  # values only; the budget decides paths, checked in the tests
    monai = runner("MONAI", model, args)(x)
    full = runner("pixelseg", model, args)(x)
    half = runner("pixelseg float16", model, args)(x)
    labels = runner("pixelseg argmax", model, args)(x)
    error16 = (half.float() - full).abs()
    bound16 = FP16_RELATIVE_BOUND * full.abs() + 2.0**-24
    top2 = full.topk(2, dim=1).values
    differ = labels != full.argmax(1)
    ties = differ & (top2[:, 0] == top2[:, 1])
    return {
        "max_abs_diff_vs_monai": (full - monai).abs().max().item(),
        "max_abs_logit": full.abs().max().item(),
        "float16_max_abs_error": error16.max().item(),
        "float16_within_bound": bool((error16 <= bound16).all()),
        "argmax_mismatches": int(differ.sum()),
        "argmax_mismatches_not_ties": int((differ & ~ties).sum()),
        "argmax_agreement_with_monai": (labels == monai.argmax(1)).float().mean().item(),
        "versions": f"monai={monai_package.__version__} torch={torch.__version__}",
    }


def spawn(mode: list[str], args: argparse.Namespace, model: str, size: int) -> dict:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        *mode,
        "--model",
        model,
        "--size",
        str(size),
        "--classes",
        str(args.classes),
        "--roi",
        str(args.roi),
        "--overlap",
        str(args.overlap),
        "--sw-batch",
        str(args.sw_batch),
        "--threads",
        str(args.threads),
        "--seed",
        str(args.seed),
    ]
    if args.budget_mb is not None:
        command += ["--budget-mb", str(args.budget_mb)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        return {"error": tail[0]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: .venv/bin/python benchmarks/sliding_window.py --sizes 128 --repeats 5",
    )
    parser.add_argument(
        "--models", nargs="+", choices=["convnet", "unet3d"], default=["convnet", "unet3d"]
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[128], help="volume edges")
    parser.add_argument("--classes", type=int, default=8, help="output channels of the models")
    parser.add_argument("--roi", type=int, default=64, help="window edge")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--sw-batch", type=int, default=4, help="windows per predictor call")
    parser.add_argument("--repeats", type=int, default=5, help="subprocess runs per method")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run")
    parser.add_argument(
        "--budget-mb", type=float, help="memory_budget_mb for 'pixelseg budget' and 'argmax'"
    )
    parser.add_argument(
        "--check-up-to", type=int, default=192, help="largest size whose values are compared"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def check_passes(check: dict) -> bool:
    if "error" in check:
        return False
    return (
        check["max_abs_diff_vs_monai"] <= 1e-4
        and check["float16_within_bound"]
        and check["argmax_mismatches_not_ties"] == 0
    )


def measure(args: argparse.Namespace, model: str, size: int) -> dict[str, list[dict]]:
    methods = [m for m in METHODS if m != "pixelseg budget" or args.budget_mb is not None]
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for repeat in range(args.repeats):
        for k in range(len(methods)):
            method = methods[(repeat + k) % len(methods)]
            runs[method].append(spawn(["--worker", method], args, model, size))
    return runs


def summarise(runs: dict[str, list[dict]]) -> dict[str, dict[str, float | str]]:
    rows: dict[str, dict[str, float | str]] = {}
    for method, results in runs.items():
        good = [r for r in results if "error" not in r]
        if not good:
            rows[method] = {"error": results[0]["error"]}
            continue
        rows[method] = {
            "median_s": statistics.median(r["wall_s"] for r in good),
            "min_s": min(r["wall_s"] for r in good),
            "growth_mb": statistics.median(r["rss_growth_mb"] for r in good),
            "max_growth_mb": max(r["rss_growth_mb"] for r in good),
            "baseline_slack_mb": max(r["baseline_slack_mb"] for r in good),
            "buffers_mb": good[0]["buffers_mb"],
            "path": good[0]["path"],
        }
    return rows


def print_table(label: str, size: int, rows: dict, args: argparse.Namespace) -> None:
    print(f"\n{label}, {size}^3, {args.classes} classes")
    print(
        f"{'method':16s} {'path':14s} {'median s':>9s} {'min s':>8s} {'time/MONAI':>11s} "
        f"{'+maxrss MB':>11s} {'mem/MONAI':>10s} {'buffers MB':>11s}"
    )
    ref = rows.get("MONAI", {})
    for method, row in rows.items():
        if "error" in row:
            print(f"{method:16s} error: {row['error']}")
            continue
        buffers = f"{row['buffers_mb']:11.1f}" if row["buffers_mb"] is not None else "-"
        if row["baseline_slack_mb"] > 5:
            buffers += f"  (ru_maxrss baseline {row['baseline_slack_mb']:.0f} MB above resident)"
        time_ratio = row["median_s"] / ref["median_s"] if "median_s" in ref else float("nan")
        mem_ratio = row["growth_mb"] / ref["growth_mb"] if ref.get("growth_mb") else float("nan")
        print(
            f"{method:16s} {row['path']:14s} {row['median_s']:9.3f} {row['min_s']:8.3f} "
            f"{time_ratio:11.2f} {row['growth_mb']:11.1f} {mem_ratio:10.2f} {buffers}"
        )
    ours = rows.get("pixelseg", {})
    if "median_s" in ref and "median_s" in ours:
        print(
            f"pixelseg / MONAI: median time {ours['median_s'] / ref['median_s']:.2f} (target "
            f"<= 1.0), peak memory growth {ours['growth_mb'] / ref['growth_mb']:.2f} (<= 1.0)"
        )
    sys.stdout.flush()


def print_growth(label: str, table: dict[int, dict], args: argparse.Namespace) -> None:
    """Median seconds and ru_maxrss growth per size, one column pair per method."""
    methods = list(next(iter(table.values())))
    print(f"\ngrowth, {label}, {args.classes} classes: median s / +maxrss MB per method")
    print(f"{'size':>6s} " + " ".join(f"{m:>22s}" for m in methods))
    for size, rows in table.items():
        cells = []
        for method in methods:
            row = rows.get(method, {})
            ok = "median_s" in row
            cells.append(f"{row['median_s']:9.2f} s {row['growth_mb']:7.0f} MB" if ok else "-")
        print(f"{size:>5d}^3 " + " ".join(f"{c:>22s}" for c in cells))


def report_check(check: dict) -> bool:
    passed = check_passes(check)
    if "error" in check:
        print(f"check failed to run: {check['error']}")
        return False
    print(
        f"{check['versions']}: max |pixelseg - MONAI| {check['max_abs_diff_vs_monai']:.2e} "
        f"(<= 1e-4); float16 path max error {check['float16_max_abs_error']:.2e} for "
        f"|logits| <= {check['max_abs_logit']:.2f}, within 2^-11 |x|: "
        f"{check['float16_within_bound']}; argmax labels differing from the full-precision "
        f"argmax: {check['argmax_mismatches']} ({check['argmax_mismatches_not_ties']} not "
        f"ties), agreeing with MONAI's argmax: {check['argmax_agreement_with_monai']:.6f} -> "
        f"{'PASS' if passed else 'FAIL'}"
    )
    return passed


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    warnings.simplefilter("ignore")  # MONAI's deprecation notes
    if args.worker or args.check:
        print(json.dumps(check_worker(args) if args.check else worker(args)))
        return 0

    print(
        f"roi={args.roi}^3 overlap={args.overlap} gaussian sw_batch={args.sw_batch} "
        f"threads={args.threads} repeats={args.repeats} budget_mb={args.budget_mb}"
    )
    results: dict[str, dict] = {}
    ok = True
    for model in args.models:
        growth: dict[int, dict] = {}
        label = model
        for size in args.sizes:
            runs = measure(args, model, size)
            labels = [r["model"] for results in runs.values() for r in results if "model" in r]
            label = labels[0] if labels else model
            rows = growth[size] = summarise(runs)
            print_table(label, size, rows, args)
            results[f"{label} {size}"] = {"rows": rows}
            if size <= args.check_up_to:
                check = spawn(["--check"], args, model, size)
                results[f"{label} {size}"]["check"] = check
                ok &= report_check(check)
        if len(growth) > 1:
            print_growth(label, growth, args)
    if args.json:
        payload = {"args": {k: str(v) for k, v in vars(args).items()}, "results": results}
        args.json.write_text(json.dumps(payload, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
