"""INT8 static quantisation with onnxruntime, refused when it costs too much accuracy.

The fp32 export (parity-checked against PyTorch) is pre-processed with onnxruntime's
``quant_pre_process`` (graph optimisation: BatchNorm folded into convolutions, constants
folded) and then quantised statically in the QDQ format, per output channel, with unsigned
8-bit activations and signed 8-bit weights (the U8S8 kernels that x86 VNNI speeds up).
Without the pre-processing the quantised graph keeps every BatchNorm between
quantise/dequantise pairs and runs barely faster than fp32 (benchmarks/backends.py measures
both). Calibration runs on the experiment's training images; both models are then scored
on its validation set with the task's own metric accumulator, and a model whose best
metric (mIoU for semantic segmentation) drops by more than the limit is not written.

On x86 CPUs without VNNI, onnxruntime's U8S8 kernels multiply pairs of uint8 x int8 into a
saturating int16 (AVX2's ``vpmaddubsw``), so large activations times large weights clip;
onnxruntime's documentation advises 7-bit weights (``reduce_range``) there. By default the
weights are reduced exactly when the quantising CPU is such a CPU, the one whose accuracy
the guard measures (docs/DEPLOYMENT.md: -0.76 points full range, -0.32 reduced, on a CamVid
U-Net on an AVX2-only CPU).
"""

from __future__ import annotations

import contextlib
import io
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pixelseg.build import build_datasets
from pixelseg.checkpoints import load_checkpoint
from pixelseg.config import ExperimentConfig
from pixelseg.errors import CheckpointError, ExportError, InvalidInputError
from pixelseg.export.deps import import_deploy
from pixelseg.export.onnx import DEFAULT_TOLERANCE, INPUT_NAME, export_checkpoint
from pixelseg.export.runtime import OnnxPredictor, onnx_session
from pixelseg.export.sidecar import file_sha256, publish_model, sidecar_path
from pixelseg.tasks import Task, get_plugin

__all__ = [
    "QuantizeReport",
    "cpu_int8_saturates",
    "quantize_checkpoint",
    "quantize_onnx",
    "resolve_reduce_range",
    "score_predictor",
]

log = logging.getLogger(__name__)

#: Tasks whose models quantise: calibration feeds ``images [B, C, H, W]`` and the guard
#: scores logits with the task's accumulator, which only semantic models are built for.
QUANTIZABLE_TASKS = ("semantic",)

#: CPU features with an 8-bit dot product into int32 (no int16 saturation on the way).
VNNI_FEATURES = ("avx512_vnni", "avx_vnni", "amx_int8")
REDUCE_RANGE_CHOICES = ("auto", "on", "off")


def cpu_int8_saturates() -> tuple[bool, str]:
    """``(saturates, description)``: whether this CPU is x86 without VNNI, whose int8
    products onnxruntime sums through a saturating int16 (from torch's CPU capabilities).

    Only x86 CPUs without any of :data:`VNNI_FEATURES` take onnxruntime's saturating AVX2
    path; other architectures and unknown CPUs count as not affected.
    """
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    try:
        found = dict(capabilities()) if capabilities is not None else {}
    except RuntimeError:  # a torch that cannot read the CPU's features
        found = {}
    architecture = str(found.get("architecture", "unknown"))
    vnni = [name for name in VNNI_FEATURES if found.get(name)]
    if architecture not in ("x86_64", "x86", "i386", "i686"):
        return False, f"{architecture} CPU"
    if vnni:
        return False, f"x86 CPU with {', '.join(vnni)}"
    return True, "x86 CPU without VNNI"


def resolve_reduce_range(choice: str) -> tuple[bool, str]:
    """``(reduce_range, why)`` for ``auto`` (on exactly for x86 CPUs without VNNI), ``on``
    or ``off``."""
    if choice not in REDUCE_RANGE_CHOICES:
        raise InvalidInputError(
            f"--reduce-range {choice!r} is not one of {', '.join(REDUCE_RANGE_CHOICES)}"
        )
    if choice != "auto":
        return choice == "on", f"--reduce-range {choice}"
    saturating, cpu = cpu_int8_saturates()
    return saturating, f"auto: {cpu}"


@dataclass
class QuantizeReport:
    """What the INT8 model costs and saves: metric in [0, 1], sizes in bytes, latency in ms
    (median over interleaved runs of one validation image)."""

    model_path: Path
    sidecar_path: Path
    metric: str
    fp32_score: float
    int8_score: float
    max_drop_points: float
    fp32_bytes: int
    int8_bytes: int
    fp32_ms: float
    int8_ms: float
    calibration_images: int
    val_images: int
    reduce_range: bool = False
    reduce_range_reason: str = ""

    @property
    def drop_points(self) -> float:
        return (self.fp32_score - self.int8_score) * 100.0

    def lines(self) -> list[str]:
        return [
            f"wrote {self.model_path} and {self.sidecar_path} (INT8, static, QDQ per-channel, "
            f"{'7' if self.reduce_range else '8'}-bit weights ({self.reduce_range_reason}); "
            f"calibrated on {self.calibration_images} training images)",
            f"{self.metric} on {self.val_images} validation images: fp32 {self.fp32_score:.4f}, "
            f"int8 {self.int8_score:.4f} ({-self.drop_points:+.2f} points; limit "
            f"-{self.max_drop_points:g})",
            f"size: fp32 {self.fp32_bytes / 1e6:.2f} MB, int8 {self.int8_bytes / 1e6:.2f} MB "
            f"({self.fp32_bytes / max(self.int8_bytes, 1):.2f}x smaller)",
            f"latency (onnxruntime, one validation image): fp32 {self.fp32_ms:.1f} ms, int8 "
            f"{self.int8_ms:.1f} ms ({self.fp32_ms / max(self.int8_ms, 1e-9):.2f}x)",
        ]


class _Calibration:
    """onnxruntime's calibration reader over ``count`` images of a dataset, evenly spaced."""

    def __init__(self, dataset: Dataset, count: int) -> None:
        total = len(dataset)  # type: ignore[arg-type]
        self.indices = iter(np.linspace(0, total - 1, min(count, total)).round().astype(int))
        self.dataset = dataset

    def get_next(self) -> dict[str, np.ndarray] | None:
        index = next(self.indices, None)
        if index is None:
            return None
        image = self.dataset[int(index)]["image"]  # type: ignore[index]
        return {INPUT_NAME: image.unsqueeze(0).float().numpy()}


def quantize_onnx(
    fp32: Path,
    out: Path,
    dataset: Dataset,
    count: int,
    work: Path,
    reduce_range: bool = False,
) -> None:
    """Write the INT8 (static, QDQ, per-channel, U8S8) version of ``fp32`` to ``out``,
    calibrated on ``count`` images of ``dataset`` (dicts with a normalised ``image``);
    ``reduce_range`` quantises the weights to 7 bits (for x86 CPUs without VNNI)."""
    import_deploy("onnxruntime")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_Calibration, CalibrationDataReader):
        pass

    reader = Reader(dataset, count)
    prepared = work / "prepared.onnx"
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter):
        # Symbolic shape inference is for transformer graphs; the optimisation pass is what
        # folds BatchNorm into the convolutions before they are quantised.
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    log.debug("onnxruntime quantization said: %s", chatter.getvalue())


def score_predictor(predictor: Any, dataset: Dataset, task: Task) -> float:
    """The task's best metric (``task.default_best_metric``) of ``predictor`` on ``dataset``,
    one image at a time (validation images may differ in size)."""
    metrics = task.new_metrics()
    with torch.inference_mode():
        for index in range(len(dataset)):  # type: ignore[arg-type]
            for batch in task.collate_eval([dataset[index]]):  # type: ignore[index]
                metrics.update(task.predict(task.forward_eval(predictor, batch)), batch)
    return float(metrics.compute()[task.default_best_metric])


def _latency_ms(sessions: list[Any], image: np.ndarray, repeats: int = 5) -> list[float]:
    """Median milliseconds per session, runs interleaved so that load affects all alike."""
    times: list[list[float]] = [[] for _ in sessions]
    for session in sessions:
        session.run(None, {INPUT_NAME: image})  # warm-up
    for _ in range(repeats):
        for spent, session in zip(times, sessions, strict=True):
            started = time.perf_counter()
            session.run(None, {INPUT_NAME: image})
            spent.append((time.perf_counter() - started) * 1000.0)
    return [statistics.median(spent) for spent in times]


def quantize_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    config: ExperimentConfig,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    max_miou_drop: float = 1.0,
    calibration_images: int = 64,
    split: dict[str, Any] | None = None,
    threads: int | None = None,
    reduce_range: str = "auto",
) -> QuantizeReport:
    """Export ``checkpoint`` as an INT8 ONNX model at ``out`` (plus sidecar), or refuse.

    Calibrates on ``calibration_images`` of ``config``'s training images, scores fp32 and
    INT8 on its validation set, and raises :class:`ExportError` (writing nothing) when the
    task's best metric drops by more than ``max_miou_drop`` points (1 point = 0.01).
    ``split`` is a saved train/validation split to reuse (the run's ``splits.json``).
    ``reduce_range``: ``auto`` (7-bit weights on an x86 CPU without VNNI, this one being
    where the guard measures the accuracy), ``on`` or ``off``.
    """
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise InvalidInputError(f"--out {str(out)!r} must end in .onnx")
    if not max_miou_drop >= 0:
        raise InvalidInputError(f"--max-miou-drop must be >= 0 points, got {max_miou_drop!r}")
    if calibration_images < 1:
        raise InvalidInputError(f"--calibration-images must be >= 1, got {calibration_images}")
    reduced, reduced_why = resolve_reduce_range(reduce_range)
    payload = load_checkpoint(checkpoint)
    where = f"checkpoint {str(checkpoint)!r}"
    if payload["task"] != config.task:
        raise CheckpointError(
            f"{where} is a {payload['task']!r} model; the calibration config's task is "
            f"{config.task!r}"
        )
    if config.task not in QUANTIZABLE_TASKS:
        raise CheckpointError(
            f"{where} is a {config.task!r} model; INT8 quantisation is for "
            f"{', '.join(QUANTIZABLE_TASKS)} models (export it in fp32 without --quantize)"
        )
    plugin = get_plugin(config.task)
    bundle = build_datasets(config, split)
    plugin.check_checkpoint(payload, config, bundle, where)
    task = plugin.build_task(config, bundle, None, with_loss=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.stem}.", dir=out.parent) as folder:
        work = Path(folder)
        fp32 = export_checkpoint(checkpoint, work / "fp32.onnx", tolerance=tolerance)
        int8_path = work / "int8.onnx"
        quantize_onnx(fp32.model_path, int8_path, bundle.train, calibration_images, work, reduced)
        sessions = [
            onnx_session(path, threads, spinning=False) for path in (fp32.model_path, int8_path)
        ]
        scores = [
            score_predictor(OnnxPredictor(session, fp32.sidecar), bundle.val, task)
            for session in sessions
        ]
        image = bundle.val[0]["image"].unsqueeze(0).float().numpy()  # type: ignore[index]
        latency = _latency_ms(sessions, image)
        report = QuantizeReport(
            out,
            sidecar_path(out),
            task.default_best_metric,
            scores[0],
            scores[1],
            max_miou_drop,
            fp32.model_path.stat().st_size,
            int8_path.stat().st_size,
            latency[0],
            latency[1],
            min(calibration_images, len(bundle.train)),  # type: ignore[arg-type]
            len(bundle.val),  # type: ignore[arg-type]
            reduced,
            reduced_why,
        )
        if not report.drop_points <= max_miou_drop:  # a NaN score is refused too
            raise ExportError(
                f"INT8 model of {where} refused: {report.metric} {report.fp32_score:.4f} (fp32) "
                f"-> {report.int8_score:.4f} (int8) on {report.val_images} validation images "
                f"loses {report.drop_points:.2f} points, more than --max-miou-drop "
                f"{max_miou_drop:g}; nothing was written"
            )
        meta = dict(fp32.sidecar)
        meta["fp32_parity"] = meta.pop("parity")
        meta["precision"] = "int8"
        meta["model_sha256"] = file_sha256(int8_path)
        meta["quantization"] = {
            "method": "onnxruntime quantize_static after quant_pre_process",
            "format": "QDQ",
            "per_channel": True,
            "activations": "uint8",
            "weights": "int8",
            "reduce_range": reduced,
            "reduce_range_reason": reduced_why,
            "calibration_experiment": str(config.name),
            "calibration_images": report.calibration_images,
            "metric": report.metric,
            "fp32": report.fp32_score,
            "int8": report.int8_score,
            "drop_points": report.drop_points,
            "max_drop_points": max_miou_drop,
            "val_images": report.val_images,
        }
        publish_model(int8_path, out, meta)
    return report
