"""Volumetric (3D) segmentation as a task: one class per voxel of a CT or MR volume.

Training batches are patches, dicts ``image [B, 1, D, H, W]``, ``mask [B, D, H, W]``,
``name`` (:mod:`pixelseg.tasks.volumetric_data`); evaluation batches are whole cases, one
at a time, with ``spacing`` (mm along D, H, W). A whole case is predicted by sliding-window
inference over the patch size with Gaussian blending (and flip TTA when asked), so a
model trained on patches scores volumes of any size. Metrics are per case and per
foreground class: Dice, IoU, precision, recall, volume difference and the surface
distances in millimetres (:func:`pixelseg.metrics.surface_metrics`). The report and the
written predictions live in :mod:`pixelseg.tasks.volumetric_outputs`; building from a config
or a checkpoint in :mod:`pixelseg.tasks.volumetric_setup`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pixelseg.errors import InvalidInputError
from pixelseg.metrics.surface import SURFACE_METRIC_NAMES, surface_metrics

__all__ = ["METRIC_NAMES", "InferenceSettings", "VolumetricMetrics", "VolumetricTask"]

#: The scalar metrics of :meth:`VolumetricMetrics.compute`: means over cases and foreground
#: classes (distances over the cases where both sides are non-empty).
METRIC_NAMES: tuple[str, ...] = tuple(SURFACE_METRIC_NAMES)
_DISTANCES = ("hd95", "assd")


@dataclass(frozen=True)
class InferenceSettings:
    """Sliding-window inference over whole volumes, and the prediction's post-processing."""

    window: tuple[int, int, int] = (48, 48, 48)
    overlap: float = 0.5
    batch_size: int = 2
    tta: bool = False
    memory_budget_mb: float | None = None
    largest_component: bool = False


def largest_components(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Keep, per foreground class, only its largest 26-connected component (the rest
    becomes background): removes scattered false positives around one target object."""
    from scipy import ndimage

    out = labels.copy()
    structure = np.ones((3,) * labels.ndim, dtype=bool)
    for c in range(1, num_classes):
        components, count = ndimage.label(labels == c, structure=structure)
        if count > 1:
            sizes = np.bincount(components.ravel())[1:]
            out[(components > 0) & (components != 1 + int(np.argmax(sizes)))] = 0
    return out


class VolumetricMetrics:
    """Per-case surface metrics; ``sync`` gathers every process's cases."""

    def __init__(
        self,
        class_names: Sequence[str],
        tolerance: float = 1.0,
        scored: dict[tuple[str, int], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.class_names = list(class_names)
        self.tolerance = float(tolerance)
        self.rows: list[dict[str, Any]] = []
        # Surface distances of a whole volume are the costly part of a case's score: the
        # rows of each case ``update`` scores are left in ``scored`` (the task's), keyed by
        # case name and prediction storage, for the report's per-case row to take.
        self.scored = scored

    def case_rows(
        self, prediction: np.ndarray, target: np.ndarray, spacing: Sequence[float], name: str
    ) -> list[dict[str, Any]]:
        """One row per foreground class of one case."""
        rows = []
        for c, class_name in enumerate(self.class_names[1:], start=1):
            scores = surface_metrics(prediction == c, target == c, spacing, self.tolerance)
            rows.append({"name": name, "class": class_name, **scores})
        return rows

    def update(self, prediction: torch.Tensor, batch: dict[str, Any]) -> None:
        for i, name in enumerate(batch["name"]):
            rows = self.case_rows(
                prediction[i].cpu().numpy(),
                batch["mask"][i].cpu().numpy(),
                batch["spacing"][i],
                name,
            )
            self.rows.extend(rows)
            if self.scored is not None:
                self.scored[(name, prediction[i].data_ptr())] = rows

    def merge(self, other: VolumetricMetrics) -> VolumetricMetrics:
        self.rows.extend(other.rows)
        return self

    def sync(self, group: object | None = None) -> None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        parts: list[Any] = [None] * dist.get_world_size(group)  # type: ignore[arg-type]
        dist.all_gather_object(parts, self.rows, group=group)  # type: ignore[arg-type]
        self.rows = [row for part in parts for row in part]

    def compute(self) -> dict[str, Any]:
        """Means over (case, foreground class) rows; distances (``hd95``, ``assd``, mm) over
        the rows where both prediction and ground truth are non-empty, the others counted in
        ``missed_or_invented`` (their distance is infinite); ``per_class`` the same per
        class; ``num_cases``."""
        result = _means(self.rows)
        result["per_class"] = {
            name: _means([r for r in self.rows if r["class"] == name])
            for name in self.class_names[1:]
        }
        result["num_cases"] = len({row["name"] for row in self.rows})
        return result


def _means(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for metric in METRIC_NAMES:
        values = np.array([row[metric] for row in rows], dtype=np.float64)
        finite = values[np.isfinite(values)]
        out[metric] = float(finite.mean()) if finite.size else math.nan
    out["missed_or_invented"] = int(sum(1 for row in rows if not math.isfinite(row["hd95"])))
    return out


class VolumetricTask:
    """Voxel classification of volumes: patch training, sliding-window evaluation.

    ``loss_fn`` takes ``(logits [B, K, D, H, W], mask [B, D, H, W])``; None builds a task
    for evaluation and prediction. A model with deep supervision returns a list in training
    mode, full resolution first (nnU-Net's order), and the loss is
    :func:`pixelseg.models.unet3d.deep_supervision_loss` over it, weighted by
    ``deep_supervision_weights`` (``loss.deep_supervision_weights``; default nnU-Net's
    halving weights, the lowest resolution at 0). ``preprocessing`` (a
    :class:`~pixelseg.tasks.volumetric_data.Preprocessing`) is how ``predict`` prepares an
    input volume.
    """

    name = "volumetric"
    metric_names = METRIC_NAMES
    default_best_metric = "dice"
    best_mode = "max"
    #: What the progress line shows after each validation.
    progress_metrics = ("dice", "hd95", "nsd")

    def __init__(
        self,
        class_names: Sequence[str],
        loss_fn: nn.Module | None,
        *,
        inference: InferenceSettings,
        preprocessing: Any,
        tolerance: float = 1.0,
        restrict_to_lung: bool = False,
        deep_supervision_weights: Sequence[float] | None = None,
    ) -> None:
        if len(class_names) < 2:
            raise InvalidInputError(
                f"a volumetric task needs background and at least one class, got {class_names}"
            )
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.loss_fn = loss_fn
        self.deep_supervision_weights = (
            list(deep_supervision_weights) if deep_supervision_weights else None
        )
        self.inference = inference
        self.preprocessing = preprocessing
        self.tolerance = float(tolerance)
        self.restrict_to_lung = restrict_to_lung
        self._scored: dict[tuple[str, int], list[dict[str, Any]]] = {}

    # ------------------------------------------------------------------ batching
    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Stack patches (one size by construction)."""
        return {
            "image": torch.stack([s["image"] for s in samples]),
            "mask": torch.stack([s["mask"] for s in samples]),
            "name": [s["name"] for s in samples],
        }

    def collate_eval(self, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One batch per volume size (cases of one size are stacked, never padded)."""
        groups: dict[tuple[int, ...], list[dict[str, Any]]] = {}
        for sample in samples:
            groups.setdefault(tuple(sample["image"].shape), []).append(sample)
        return [
            {
                "image": torch.stack([s["image"] for s in group]),
                "mask": torch.stack([s["mask"] for s in group]),
                "name": [s["name"] for s in group],
                "spacing": [tuple(s["spacing"]) for s in group],
            }
            for group in groups.values()
        ]

    def batch_size(self, batch: dict[str, Any]) -> int:
        return int(batch["image"].shape[0])

    # ------------------------------------------------------------------ model calls
    def forward_train(self, model: nn.Module, batch: dict[str, Any]) -> Any:
        return model(batch["image"])

    def forward_eval(self, predictor: Callable[..., Any], batch: dict[str, Any]) -> torch.Tensor:
        """Logits of whole volumes, window by window (Gaussian-blended, flip TTA if asked)."""
        from pixelseg.inference import flip_tta, sliding_window_predict

        settings = self.inference
        model = flip_tta(predictor, dims=("d", "h", "w")) if settings.tta else predictor
        extra = {}
        if settings.memory_budget_mb is not None:
            extra["memory_budget_mb"] = settings.memory_budget_mb
        return sliding_window_predict(
            model,
            batch["image"],
            settings.window,
            overlap=settings.overlap,
            batch_size=settings.batch_size,
            **extra,
        )

    def loss(self, output: Any, batch: dict[str, Any]) -> torch.Tensor:
        if self.loss_fn is None:
            raise InvalidInputError("this volumetric task was built without a loss (eval only)")
        if isinstance(output, list | tuple):
            from pixelseg.models.unet3d import deep_supervision_loss

            return deep_supervision_loss(
                list(output), batch["mask"], self.loss_fn, self.deep_supervision_weights
            )
        return self.loss_fn(output, batch["mask"])

    def eval_loss(self, output: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor | None:
        return self.loss_fn(output, batch["mask"]) if self.loss_fn is not None else None

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        """Labels ``[B, D, H, W]`` (argmax), largest component per class if configured."""
        labels = output.argmax(dim=1)
        if not self.inference.largest_component:
            return labels
        kept = [largest_components(case.cpu().numpy(), self.num_classes) for case in labels]
        return torch.from_numpy(np.stack(kept)).to(labels.device)

    # ------------------------------------------------------------------ metrics and reports
    def new_metrics(self) -> VolumetricMetrics:
        self._scored.clear()
        return VolumetricMetrics(self.class_names, self.tolerance, self._scored)

    def sample_rows(self, prediction: torch.Tensor, batch: dict[str, Any]) -> list[dict[str, Any]]:
        """Per case: the metrics averaged over foreground classes; ``score`` is the Dice. A
        ``_montage_png`` entry carries the case's montage, drawn now (PNG bytes, small)
        so that no volume is kept until the report is written."""
        from pixelseg.tasks.volumetric_outputs import montage_png

        metrics = VolumetricMetrics(self.class_names, self.tolerance)
        rows = []
        for i, name in enumerate(batch["name"]):
            pred = prediction[i].cpu().numpy()
            target = batch["mask"][i].cpu().numpy()
            # The rows the accumulator just scored for this prediction, else scored here.
            per_class = self._scored.pop((name, prediction[i].data_ptr()), None)
            if per_class is None:
                per_class = metrics.case_rows(pred, target, batch["spacing"][i], name)
            row: dict[str, Any] = {"name": name}
            for metric in METRIC_NAMES:
                values = [r[metric] for r in per_class]
                row[metric] = float(np.mean(values))
            if len(per_class) > 1:
                for r in per_class:
                    row[f"dice_{r['class']}"] = r["dice"]
            row["score"] = row["dice"]
            row["_montage_png"] = montage_png(
                batch["image"][i, 0].float().cpu().numpy(),
                target,
                pred,
                batch["spacing"][i],
                self.class_names,
                f"{name}: Dice {row['dice']:.3f}",
            )
            rows.append(row)
        return rows

    def gallery_item(self, prediction: Any, batch: dict[str, Any], index: int) -> dict:
        """Nothing beyond the row: every case's montage travels in its row."""
        return {}

    def write_report(self, out_dir, metrics, accumulator, rows, worst) -> dict[str, Any]:
        from pixelseg.tasks.volumetric_outputs import write_volumetric_report

        return write_volumetric_report(self, Path(out_dir), metrics, accumulator, rows)

    @staticmethod
    def summary(metrics: dict[str, Any]) -> str:
        """Means (validation metrics, or the report's ``{"mean": ...}`` entries)."""

        def mean(key: str) -> float:
            value = metrics[key]
            return float(value["mean"] if isinstance(value, dict) else value)

        return (
            f"Dice {mean('dice'):.4f}  IoU {mean('iou'):.4f}  "
            f"HD95 {mean('hd95'):.2f} mm  NSD {mean('nsd'):.4f}"
        )

    # ------------------------------------------------------------------ predict's files
    def list_inputs(self, inputs: Sequence[str]) -> list[Path]:
        from pixelseg.tasks.volumetric_outputs import list_volumes

        return list_volumes(inputs)

    def read_input(self, path: Path) -> tuple[Any, dict[str, Any]]:
        """``(the prepared case, a batch of one whole volume)``."""
        from pixelseg.medical.io import read_volume
        from pixelseg.tasks.volumetric_data import prepare_case

        volume = read_volume(path)
        case = prepare_case(path.name, volume, None, self.preprocessing)
        case.source_volume = volume  # type: ignore[attr-defined]
        batch = {"image": torch.from_numpy(case.image)[None], "name": [case.name]}
        return case, batch

    def output_paths(self, out_dir: Path, name: str) -> list[Path]:
        from pixelseg.tasks.volumetric_outputs import prediction_paths

        return prediction_paths(Path(out_dir), name)

    def write_prediction(
        self, out_dir: Path, name: str, raw: Any, prediction: torch.Tensor
    ) -> list[Path]:
        from pixelseg.tasks.volumetric_outputs import write_volume_prediction

        return write_volume_prediction(self, Path(out_dir), name, raw, prediction[0])

    def finish_predictions(self, out_dir: Path, names: Sequence[str]) -> list[Path]:
        return []
