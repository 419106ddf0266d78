"""Eager PyTorch against onnxruntime fp32 and INT8, in one run, on the CPU.

For each model the benchmark exports the graph exactly as ``pixelseg export`` does (dynamo
exporter, opset 18, dynamic axes), quantises it twice: as ``pixelseg export --quantize
int8`` does (``quant_pre_process``, then static QDQ per-channel, U8S8, with 7-bit weights
on an x86 CPU without VNNI as its ``--reduce-range auto`` chooses) and straight out of
the box (``quantize_static`` on the exported graph, QDQ per-channel, no pre-processing), and
times one ``1 x 3 x SIZE x SIZE`` forward pass per backend. Backends alternate within each
of ``--repeats`` rounds so machine load hits them alike; the table shows medians. All run
on ``--threads`` threads (torch.set_num_threads, onnxruntime intra-op threads, without
spinning so that idle onnxruntime threads do not steal the cores of the next backend).

The weights are random (nothing downloads), so the logits of one random input measure
speed and agreement, not accuracy; ``pixelseg export --quantize int8`` measures the mIoU
change of a trained model on its validation set (docs/DEPLOYMENT.md).

Run: ``.venv/bin/python benchmarks/backends.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelseg import models
from pixelseg.data import SyntheticShapes
from pixelseg.data.transforms import normalize_image
from pixelseg.export.onnx import LogitsModule, export_module, input_size_rules
from pixelseg.export.quantize import VNNI_FEATURES, quantize_onnx, resolve_reduce_range
from pixelseg.export.runtime import onnx_session

MODELS = {
    "unet_resnet34": {"name": "unet", "encoder": "resnet34", "options": {}},
    "deeplabv3plus_resnet50": {"name": "deeplabv3plus", "encoder": "resnet50", "options": {}},
    "tiny": {"name": "unet", "encoder": None, "options": {"base_channels": 4}},
}
BACKENDS = ("eager", "ort_fp32", "ort_int8", "ort_int8_raw")
CLASSES = 12
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def cpu_features() -> list[str]:
    """The CPU's vector and 8-bit dot-product features (VNNI decides what INT8 buys on x86),
    as torch reports them, the source ``--reduce-range auto`` reads too."""
    capabilities = torch.cpu.get_capabilities()
    return [name for name in ("avx2", "avx512_f", *VNNI_FEATURES) if capabilities.get(name)]


def calibration_images(size: int, count: int) -> list[dict[str, torch.Tensor]]:
    """Synthetic-shapes images normalised like ImageNet-trained models expect."""
    shapes = SyntheticShapes(count, size=size, seed=3)
    return [
        {"image": normalize_image(shapes.generate(index)[0], *IMAGENET)} for index in range(count)
    ]


def quantize_raw(fp32: Path, out: Path, images: list[dict[str, torch.Tensor]]) -> None:
    """``quantize_static`` straight on the exported graph (no pre-processing)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(images)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.items, None)
            return None if item is None else {"images": item["image"][None].numpy()}

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)


def measure(
    name: str, size: int, threads: int, repeats: int, calibration: int, spinning: bool = False
) -> dict[str, Any]:
    spec = MODELS[name]
    torch.manual_seed(0)
    model = models.create(spec["name"], CLASSES, encoder=spec["encoder"], **spec["options"])
    module = LogitsModule(model).eval()
    image = normalize_image(SyntheticShapes(1, size=size, seed=11).generate(0)[0], *IMAGENET)
    images = image[None]
    result: dict[str, Any] = {"model": name, "size": size, "threads": threads}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        started = time.perf_counter()
        export_module(module, work / "fp32.onnx", 3, input_size_rules(model))
        result["export_s"] = time.perf_counter() - started
        calib = calibration_images(size, calibration)
        started = time.perf_counter()
        # As ``pixelseg export --quantize int8`` (--reduce-range auto) does on this CPU.
        reduced, why = resolve_reduce_range("auto")
        result["int8_weights"] = f"{7 if reduced else 8}-bit ({why})"
        quantize_onnx(work / "fp32.onnx", work / "int8.onnx", calib, calibration, work, reduced)
        result["quantize_s"] = time.perf_counter() - started
        quantize_raw(work / "fp32.onnx", work / "int8_raw.onnx", calib)
        paths = {
            "ort_fp32": work / "fp32.onnx",
            "ort_int8": work / "int8.onnx",
            "ort_int8_raw": work / "int8_raw.onnx",
        }
        # No spinning: idle onnxruntime threads would otherwise busy-wait into the next
        # backend's run and slow it down.
        sessions = {
            key: onnx_session(path, threads, spinning=spinning) for key, path in paths.items()
        }
        sizes = {key: path.stat().st_size for key, path in paths.items()}

        def eager() -> np.ndarray:
            with torch.inference_mode():
                return module(images).numpy()

        runners = {"eager": eager}
        for key, session in sessions.items():
            runners[key] = lambda s=session: s.run(None, {"images": images.numpy()})[0]
        outputs = {key: run() for key, run in runners.items()}  # warm-up, and the logits
        times: dict[str, list[float]] = {key: [] for key in runners}
        for _ in range(repeats):
            for key, run in runners.items():
                started = time.perf_counter()
                run()
                times[key].append((time.perf_counter() - started) * 1000.0)
    reference = outputs["eager"]
    # The logits' scale, for reading the differences: random weights give large logits.
    result["max_abs_logit"] = float(np.abs(reference).max())
    rows = []
    eager_ms = statistics.median(times["eager"])
    for key in BACKENDS:
        median = statistics.median(times[key])
        rows.append(
            {
                "backend": key,
                "median_ms": median,
                "speedup_vs_eager": eager_ms / median,
                "max_abs_logit_diff": float(np.abs(outputs[key] - reference).max()),
                "pixel_agreement": float((outputs[key].argmax(1) == reference.argmax(1)).mean()),
                "size_mb": sizes.get(key, 0) / 1e6 or None,
                "times_ms": times[key],
            }
        )
    result["rows"] = rows
    return result


def print_table(results: list[dict[str, Any]]) -> None:
    header = f"{'model':<24}{'backend':<14}{'median ms':>10}{'vs eager':>10}"
    print(f"{header}{'max |dlogit|':>14}{'agree %':>9}{'MB':>8}")
    for result in results:
        for row in result["rows"]:
            size = f"{row['size_mb']:.1f}" if row["size_mb"] else "-"
            print(
                f"{result['model']:<24}{row['backend']:<14}{row['median_ms']:>10.1f}"
                f"{row['speedup_vs_eager']:>9.2f}x{row['max_abs_logit_diff']:>14.2g}"
                f"{row['pixel_agreement'] * 100:>9.2f}{size:>8}"
            )
    for result in results:
        print(f"{result['model']}: largest |logit| {result['max_abs_logit']:.3g}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS)[:2], choices=list(MODELS))
    parser.add_argument("--size", type=int, default=512, help="input height and width")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--calibration", type=int, default=8, help="INT8 calibration images")
    parser.add_argument(
        "--spinning",
        action="store_true",
        help="let idle onnxruntime threads spin (its default in a service; faster per run, "
        "but they may busy-wait into the next backend's timing)",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    for name in args.models:
        results.append(
            measure(name, args.size, args.threads, args.repeats, args.calibration, args.spinning)
        )
        print(f"measured {name}", file=sys.stderr, flush=True)
    print(
        f"CPU features: {', '.join(cpu_features()) or 'unknown'}; threads {args.threads}; "
        f"input 1x3x{args.size}x{args.size}; medians of {args.repeats} interleaved rounds; "
        f"ort_int8 weights {results[0]['int8_weights']}"
    )
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_features(), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
