"""Panoptic segmentation as a task: every pixel a stuff class or one thing instance.

Batches are dicts ``images`` (list of float ``[3, H, W]`` in 0..1, sizes may differ),
``targets`` (list of panoptic samples as :mod:`pixelseg.data.panoptic_sample` gives them:
thing ``boxes``, ``labels``, ``masks``, ``iscrowd``; the ``semantic`` map with 0 = things
and 255 = VOID; the ``panoptic`` id map and its ``segments_info``) and ``name``. The model
(:mod:`pixelseg.models.detection.panoptic_fpn`) returns a loss dict in training and, in
evaluation, detections plus semantic logits, which :func:`pixelseg.inference.fuse_panoptic`
turns into one id map and its segments. Metrics are PQ, SQ and RQ (All, Things, Stuff, per
class) with the COCO reference's rules (:class:`pixelseg.metrics.PanopticQuality`). The
report and the written predictions live in :mod:`pixelseg.tasks.panoptic_outputs`;
building from a config or a checkpoint in :mod:`pixelseg.tasks.panoptic_setup`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pixelseg.errors import InvalidInputError
from pixelseg.inference.panoptic_fusion import FusionSettings, fuse_panoptic
from pixelseg.metrics.panoptic import PanopticQuality
from pixelseg.tasks.common import detection_batch, list_image_inputs, read_rgb_input

__all__ = ["METRIC_NAMES", "PanopticMetrics", "PanopticTask"]

#: What a panoptic target holds beside the per-object entries of an instance target.
PANOPTIC_TARGET_KEYS = ("semantic", "panoptic", "segments_info")

_GROUPS = (("All", ""), ("Things", "_things"), ("Stuff", "_stuff"))

#: The scalar metrics of :meth:`PanopticMetrics.compute` (``train.best_metric`` choices).
METRIC_NAMES: tuple[str, ...] = tuple(
    f"{score}{suffix}" for _, suffix in _GROUPS for score in ("pq", "sq", "rq")
)


def _numpy_ids(ids: Any) -> np.ndarray:
    return ids.detach().cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)


class PanopticMetrics:
    """PQ / SQ / RQ streamed image by image; ``sync`` sums every process's counts."""

    def __init__(self, categories: Sequence[Mapping[str, Any]]) -> None:
        self.categories = [dict(c) for c in categories]
        self.pq = PanopticQuality(self.categories)

    def update(self, prediction: list[dict[str, Any]], batch: dict[str, Any]) -> None:
        for pred, target, name in zip(prediction, batch["targets"], batch["name"], strict=True):
            self.pq.update(
                _numpy_ids(target["panoptic"]),
                target["segments_info"],
                _numpy_ids(pred["ids"]),
                pred["segments_info"],
                image=name,
            )

    def merge(self, other: PanopticMetrics) -> PanopticMetrics:
        self.pq.merge(other.pq)
        return self

    def sync(self, group: object | None = None) -> None:
        self.pq.all_reduce(group)

    def per_class(self) -> dict[int, dict[str, float]]:
        """Category id -> ``pq``, ``sq``, ``rq``, ``tp``, ``fp``, ``fn``; the scores are NaN
        for a category that appeared nowhere (no TP, FP or FN), which PQ leaves out."""
        scores, counts = self.pq.compute()["per_class"], self.pq.counts
        result: dict[int, dict[str, float]] = {}
        for cid, count in counts.items():
            seen = count["tp"] + count["fp"] + count["fn"] > 0
            result[cid] = {
                **{k: float(scores[cid][k]) if seen else math.nan for k in ("pq", "sq", "rq")},
                **{k: int(count[k]) for k in ("tp", "fp", "fn")},
            }
        return result

    def compute(self) -> dict[str, Any]:
        """PQ, SQ, RQ over All / Things / Stuff (``pq``, ``pq_things``, ...), the number of
        categories each averages (``n``, ``n_things``, ``n_stuff``) and ``per_class`` by
        category name."""
        result = self.pq.compute()
        out: dict[str, Any] = {}
        for group, suffix in _GROUPS:
            for score in ("pq", "sq", "rq"):
                out[f"{score}{suffix}"] = float(result[group][score])
            out[f"n{suffix}"] = int(result[group]["n"])
        names = {int(c["id"]): str(c["name"]) for c in self.categories}
        out["per_class"] = {names[cid]: scores for cid, scores in self.per_class().items()}
        return out


class PanopticTask:
    """Things as instances, stuff as regions, fused into one id map; PQ as the metric.

    ``categories``: COCO panoptic categories (``id``, ``name``, ``isthing``, optional
    ``color``); instance label ``k`` is the ``k``-th thing category in id order, semantic
    class ``s`` the ``s``-th stuff category (0 = things). ``fusion``: the thresholds of
    :func:`~pixelseg.inference.fuse_panoptic`. Crowd regions are left out of the detector's
    training targets (their pixels stay "things" in the semantic map) and kept for PQ, where
    they only excuse predictions.
    """

    name = "panoptic"
    metric_names = METRIC_NAMES
    default_best_metric = "pq"
    best_mode = "max"
    #: What the progress line shows after each validation.
    progress_metrics = ("pq", "pq_things", "pq_stuff")

    def __init__(
        self,
        categories: Sequence[Mapping[str, Any]],
        *,
        fusion: FusionSettings | None = None,
        overlay_alpha: float = 0.5,
    ) -> None:
        self.categories = sorted((dict(c) for c in categories), key=lambda c: int(c["id"]))
        self.thing_category_ids = [int(c["id"]) for c in self.categories if c["isthing"]]
        self.stuff_category_ids = [int(c["id"]) for c in self.categories if not c["isthing"]]
        if not self.thing_category_ids or not self.stuff_category_ids:
            raise InvalidInputError(
                "a panoptic task needs at least one thing and one stuff category, got "
                f"{len(self.thing_category_ids)} thing and {len(self.stuff_category_ids)} stuff"
            )
        self.class_names = [str(c["name"]) for c in self.categories]
        self.fusion = fusion or FusionSettings()
        self.overlay_alpha = overlay_alpha

    # ------------------------------------------------------------------ batching
    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Images and targets as lists (sizes and segment counts differ); crowds dropped
        from the instance targets."""
        return detection_batch(samples, drop_crowds=True, extra_keys=PANOPTIC_TARGET_KEYS)

    def collate_eval(self, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One batch of any image sizes; crowds kept (PQ reads them)."""
        return [detection_batch(samples, drop_crowds=False, extra_keys=PANOPTIC_TARGET_KEYS)]

    def batch_size(self, batch: dict[str, Any]) -> int:
        return len(batch["images"])

    # ------------------------------------------------------------------ model calls
    def forward_train(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        keys = ("boxes", "labels", "masks", "semantic")
        return model(batch["images"], [{k: t[k] for k in keys} for t in batch["targets"]])

    def forward_eval(self, predictor: Callable[..., Any], batch: dict[str, Any]) -> Any:
        return predictor(batch["images"])

    def loss(self, output: dict[str, torch.Tensor], batch: dict[str, Any]) -> torch.Tensor:
        """The sum of the model's (already weighted) loss terms."""
        if not isinstance(output, dict) or not output:
            raise InvalidInputError(
                "a panoptic model must return a dict of losses in training mode, got "
                f"{type(output).__name__}"
            )
        return torch.stack([value.float() for value in output.values()]).sum()

    def eval_loss(self, output: Any, batch: dict[str, Any]) -> None:
        return None  # the model computes its losses in training mode only

    def predict(self, output: list[dict[str, torch.Tensor]]) -> list[dict[str, Any]]:
        """Per image ``ids`` (int64 ``[H, W]``, 0 = VOID) and ``segments_info`` (``id``,
        ``category_id``, ``isthing``, ``score``, ``area``), fused from the detections and
        the semantic logits."""
        settings = dataclasses.asdict(self.fusion)
        fused = []
        for out in output:
            ids, segments = fuse_panoptic(
                out["masks"],
                out["scores"],
                out["labels"],
                out["semantic"],
                thing_category_ids=self.thing_category_ids,
                stuff_category_ids=self.stuff_category_ids,
                **settings,
            )
            fused.append({"ids": ids, "segments_info": segments})
        return fused

    # ------------------------------------------------------------------ metrics and reports
    def new_metrics(self) -> PanopticMetrics:
        return PanopticMetrics(self.categories)

    def sample_rows(self, prediction: list[dict], batch: dict[str, Any]) -> list[dict[str, Any]]:
        """Per image: PQ, SQ, RQ and the matched (TP), false (FP) and missed (FN) segments;
        ``score`` is the image's PQ (1 for an image with nothing to find or predict)."""
        rows = []
        for name, pred, target in zip(batch["name"], prediction, batch["targets"], strict=True):
            single = PanopticQuality(self.categories)
            single.update(
                _numpy_ids(target["panoptic"]),
                target["segments_info"],
                _numpy_ids(pred["ids"]),
                pred["segments_info"],
                image=name,
            )
            scores, counts = single.compute()["All"], single.counts.values()
            total = {k: sum(int(c[k]) for c in counts) for k in ("tp", "fp", "fn")}
            seen = scores["n"] > 0
            rows.append(
                {
                    "name": name,
                    "pq": float(scores["pq"]) if seen else math.nan,
                    "sq": float(scores["sq"]) if seen else math.nan,
                    "rq": float(scores["rq"]) if seen else math.nan,
                    "matched": total["tp"],
                    "false": total["fp"],
                    "missed": total["fn"],
                    "score": float(scores["pq"]) if seen else 1.0,
                }
            )
        return rows

    def gallery_item(self, prediction: list[dict], batch: dict[str, Any], index: int) -> dict:
        image = batch["images"][index].clamp(0, 1).mul(255).round().byte()
        target, pred = batch["targets"][index], prediction[index]
        return {
            "image": image.permute(1, 2, 0).cpu().numpy(),
            "target": {
                "ids": _numpy_ids(target["panoptic"]),
                "segments_info": list(target["segments_info"]),
            },
            "prediction": {"ids": _numpy_ids(pred["ids"]), "segments_info": pred["segments_info"]},
        }

    def write_report(self, out_dir, metrics, accumulator, rows, worst) -> dict[str, Any]:
        from pixelseg.tasks.panoptic_outputs import write_panoptic_report

        return write_panoptic_report(self, Path(out_dir), metrics, accumulator, rows, worst)

    @staticmethod
    def summary(metrics: dict[str, Any]) -> str:
        return (
            f"PQ {metrics['pq']:.4f}  PQ things {metrics['pq_things']:.4f}  "
            f"PQ stuff {metrics['pq_stuff']:.4f}  SQ {metrics['sq']:.4f}  RQ {metrics['rq']:.4f}"
        )

    # ------------------------------------------------------------------ predict's files
    def list_inputs(self, inputs: Sequence[str]) -> list[Path]:
        return list_image_inputs(inputs)

    def read_input(self, path: Path) -> tuple[np.ndarray, dict[str, Any]]:
        """``(image uint8 [H, W, 3], {"images": [float [3, H, W] in 0..1]})``."""
        return read_rgb_input(path)

    def output_paths(self, out_dir: Path, name: str) -> list[Path]:
        from pixelseg.tasks.panoptic_outputs import prediction_paths

        return prediction_paths(Path(out_dir), name)

    def write_prediction(
        self, out_dir: Path, name: str, raw: np.ndarray, prediction: list[dict]
    ) -> list[Path]:
        from pixelseg.tasks.panoptic_outputs import write_panoptic_prediction

        return write_panoptic_prediction(self, Path(out_dir), name, raw, prediction[0])

    def finish_predictions(self, out_dir: Path, names: Sequence[str]) -> list[Path]:
        """``panoptic.json``: every input's segments in the COCO panoptic format, beside the
        ``panoptic/`` PNG folder, with ``image_id`` = the input's position + 1."""
        from pixelseg.tasks.panoptic_outputs import merge_panoptic_json

        return merge_panoptic_json(self, Path(out_dir), names)
