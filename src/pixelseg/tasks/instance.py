"""Instance segmentation as a task: a mask, a box, a class and a score per object.

Batches are dicts ``images`` (list of float ``[3, H, W]`` in 0..1, sizes may differ),
``targets`` (list of dicts as :class:`pixelseg.data.CocoInstances` gives: ``boxes``,
``labels``, ``masks``, ``iscrowd``, ``area``, ``image_id``) and ``name``. Models follow
torchvision's detection contract (:mod:`pixelseg.models.detection`): a loss dict in training,
detections in evaluation. Metrics are COCO mask and box AP/AR, streamed through
:class:`pixelseg.metrics.CocoEvaluator`. The report and the written predictions live in
:mod:`pixelseg.tasks.instance_outputs`; building from a config or a checkpoint in
:mod:`pixelseg.tasks.instance_setup`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pixelseg.coco_format import encode_masks, mask_api
from pixelseg.errors import InvalidInputError
from pixelseg.metrics.coco_match import AREA_RANGES, MAX_DETS, STAT_NAMES, summarize
from pixelseg.metrics.coco_stream import CocoEvaluator
from pixelseg.tasks.common import detection_batch, list_image_inputs, read_rgb_input

__all__ = ["METRIC_NAMES", "InstanceMetrics", "InstanceTask", "match_counts"]

# COCO's stat names as metric keys: mask_ap, mask_ap50, ..., box_ar_large.
_SUFFIX = {
    "AP": "ap", "AP50": "ap50", "AP75": "ap75", "APs": "ap_small", "APm": "ap_medium",
    "APl": "ap_large", "AR1": "ar1", "AR10": "ar10", "AR100": "ar100", "ARs": "ar_small",
    "ARm": "ar_medium", "ARl": "ar_large",
}  # fmt: skip
_PREFIX = {"segm": "mask", "bbox": "box"}

#: The scalar metrics of :meth:`InstanceMetrics.compute` (``train.best_metric`` choices).
METRIC_NAMES: tuple[str, ...] = tuple(
    f"{_PREFIX[t]}_{_SUFFIX[s]}" for t in ("segm", "bbox") for s in STAT_NAMES
)


class InstanceMetrics:
    """COCO AP/AR of masks and boxes; ``sync`` gathers every process's per-image records."""

    def __init__(self, num_classes: int, class_names: Sequence[str]) -> None:
        self.class_names = list(class_names)
        self.coco = CocoEvaluator(num_classes, iou_types=("segm", "bbox"))
        self._accumulated: dict[str, dict[str, np.ndarray]] | None = None

    def update(self, prediction: list[dict[str, Any]], batch: dict[str, Any]) -> None:
        self.coco.update(prediction, batch["targets"])
        self._accumulated = None

    def merge(self, other: InstanceMetrics) -> InstanceMetrics:
        self.coco.merge(other.coco)
        self._accumulated = None
        return self

    def sync(self, group: object | None = None) -> None:
        self.coco.sync(group)
        self._accumulated = None

    def accumulated(self) -> dict[str, dict[str, np.ndarray]]:
        """``precision [T, R, K, A, M]`` and ``recall`` per IoU type, computed once."""
        if self._accumulated is None:
            self._accumulated = self.coco.accumulate()
        return self._accumulated

    def compute(self) -> dict[str, Any]:
        """The 24 COCO stats (``mask_*``, ``box_*``) and ``per_class`` AP and AP50."""
        result: dict[str, Any] = {}
        per_class: dict[str, dict[str, float]] = {}
        for iou_type, arrays in self.accumulated().items():
            prefix = _PREFIX[iou_type]
            stats = summarize(arrays["precision"], arrays["recall"])
            result.update({f"{prefix}_{_SUFFIX[k]}": v for k, v in stats.items()})
            for key, value in class_ap(arrays["precision"], self.class_names).items():
                per_class[f"{prefix}_{key}"] = value
        result["per_class"] = per_class
        return result


def class_ap(precision: np.ndarray, class_names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per class: ``ap`` (IoU 0.50:0.95) and ``ap50``, area ``all``, 100 detections; NaN for a
    class without ground truth (pycocotools' -1 is left out of means, as in COCO)."""
    area, max_det = 0, MAX_DETS.index(100)
    assert AREA_RANGES[area][0] == "all"
    result: dict[str, dict[str, float]] = {"ap": {}, "ap50": {}}
    for k, name in enumerate(class_names):
        for key, rows in (("ap", slice(None)), ("ap50", slice(0, 1))):
            values = precision[rows, :, k, area, max_det]
            valid = values[values > -1]
            result[key][name] = float(valid.mean()) if valid.size else float("nan")
    return result


def match_counts(
    prediction: dict[str, Any], target: dict[str, Any], iou_threshold: float = 0.5
) -> dict[str, int]:
    """Found, missed and false objects of one image: detections (already cut at the
    report's score threshold) matched greedily by score to same-class, non-crowd ground
    truths at mask IoU >= ``iou_threshold``. Crowd regions neither count as missed nor make
    a detection on them false, as in COCO."""
    crowd = target.get("iscrowd", torch.zeros(len(target["labels"]))).bool().cpu()
    gt_labels, dt_labels = target["labels"].cpu(), prediction["labels"].cpu()
    # pycocotools' RLE IoU (crowds: intersection over the detection's area, as COCO has
    # it), not a dense [D, H*W] matmul, which at 800x1333 pixels would take gigabytes.
    dt_rles = encode_masks((prediction["masks"][:, 0] > 0.5).cpu().numpy())
    gt_rles = encode_masks(target["masks"].bool().cpu().numpy())
    if dt_rles and gt_rles:
        ious = mask_api().iou(dt_rles, gt_rles, crowd.int().tolist())
        iou = torch.as_tensor(np.asarray(ious, dtype=np.float64)).reshape(len(dt_rles), -1)
    else:
        iou = torch.zeros(len(dt_rles), len(gt_rles), dtype=torch.float64)
    iou[dt_labels[:, None] != gt_labels[None, :]] = 0.0
    taken = torch.zeros(len(gt_labels), dtype=torch.bool)
    found = false = 0
    for d in torch.argsort(prediction["scores"].cpu(), descending=True, stable=True).tolist():
        # Regular ground truths first (each matched once), then crowds (any number of times).
        regular = torch.where(taken | crowd, torch.full_like(iou[d], -1.0), iou[d])
        on_crowd = torch.where(crowd, iou[d], torch.full_like(iou[d], -1.0))
        if len(regular) and float(regular.max()) >= iou_threshold:
            taken[int(regular.argmax())] = True
            found += 1
        elif not (len(on_crowd) and float(on_crowd.max()) >= iou_threshold):
            false += 1
    regular = int((~crowd).sum())
    return {"objects": regular, "detections": len(dt_labels), "found": found,
            "missed": regular - found, "false": false}  # fmt: skip


class InstanceTask:
    """Objects as masks with boxes, classes and scores; COCO AP as the metric.

    ``class_names``: the K object classes (labels 1..K). ``category_ids``: the COCO category
    id of each label (written into COCO results; identity when None). ``score_threshold``:
    the detections drawn in overlays and counted in the report's per-image table (COCO AP
    uses every detection). Crowd annotations are left out of training targets (torchvision's
    detectors cannot learn from them) and kept for evaluation, where COCO ignores them.
    """

    name = "instance"
    metric_names = METRIC_NAMES
    default_best_metric = "mask_ap"
    best_mode = "max"
    #: What the progress line shows after each validation (metrics.json has all 24).
    progress_metrics = ("mask_ap", "mask_ap50", "box_ap", "box_ap50")

    def __init__(
        self,
        class_names: Sequence[str],
        *,
        category_ids: Sequence[int] | None = None,
        colors: Sequence[Sequence[int]] | None = None,
        score_threshold: float = 0.5,
        overlay_alpha: float = 0.5,
    ) -> None:
        if not class_names:
            raise InvalidInputError("an instance task needs at least one class")
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.category_ids = list(category_ids or range(1, self.num_classes + 1))
        if len(self.category_ids) != self.num_classes:
            raise InvalidInputError(
                f"{len(self.category_ids)} category ids for {self.num_classes} classes"
            )
        self.colors = [tuple(int(v) for v in c) for c in colors] if colors else None
        self.score_threshold = float(score_threshold)
        self.overlay_alpha = overlay_alpha

    # ------------------------------------------------------------------ batching
    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Images and targets as lists (sizes and object counts differ); crowds dropped."""
        return detection_batch(samples, drop_crowds=True)

    def collate_eval(self, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One batch: detectors take lists of images of any sizes; crowds kept (COCO
        ignores detections on them)."""
        return [detection_batch(samples, drop_crowds=False)]

    def batch_size(self, batch: dict[str, Any]) -> int:
        return len(batch["images"])

    # ------------------------------------------------------------------ model calls
    def forward_train(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        targets = [{k: t[k] for k in ("boxes", "labels", "masks")} for t in batch["targets"]]
        return model(batch["images"], targets)

    def forward_eval(self, predictor: Callable[..., Any], batch: dict[str, Any]) -> Any:
        return predictor(batch["images"])

    def loss(self, output: dict[str, torch.Tensor], batch: dict[str, Any]) -> torch.Tensor:
        """The sum of the model's loss terms."""
        if not isinstance(output, dict) or not output:
            raise InvalidInputError(
                "an instance model must return a dict of losses in training mode, got "
                f"{type(output).__name__}"
            )
        return torch.stack([value.float() for value in output.values()]).sum()

    def eval_loss(self, output: Any, batch: dict[str, Any]) -> None:
        return None  # detections carry no loss; torchvision computes losses in train mode only

    def predict(self, output: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        return output

    # ------------------------------------------------------------------ metrics and reports
    def new_metrics(self) -> InstanceMetrics:
        return InstanceMetrics(self.num_classes, self.class_names)

    def shown(self, prediction: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The detections at or above ``score_threshold`` (drawn and counted)."""
        keep = prediction["scores"] >= self.score_threshold
        return {key: value[keep] for key, value in prediction.items()}

    def sample_rows(self, prediction: list[dict], batch: dict[str, Any]) -> list[dict[str, Any]]:
        """Per image: objects, detections shown, found, missed and false; ``score`` is
        minus the errors (missed + false), so the gallery shows the images with the most."""
        rows = []
        for name, pred, target in zip(batch["name"], prediction, batch["targets"], strict=True):
            counts = match_counts(self.shown(pred), target)
            rows.append(
                {"name": name, **counts, "score": -float(counts["missed"] + counts["false"])}
            )
        return rows

    def gallery_item(self, prediction: list[dict], batch: dict[str, Any], index: int) -> dict:
        image = batch["images"][index].clamp(0, 1).mul(255).round().byte()
        target, shown = batch["targets"][index], self.shown(prediction[index])
        return {
            "image": image.permute(1, 2, 0).cpu().numpy(),
            "target": {
                "masks": target["masks"].bool().cpu().numpy(),
                "boxes": target["boxes"].cpu().numpy(),
                "labels": target["labels"].cpu().numpy(),
            },
            "prediction": {
                "masks": (shown["masks"][:, 0] > 0.5).cpu().numpy(),
                "boxes": shown["boxes"].cpu().numpy(),
                "labels": shown["labels"].cpu().numpy(),
                "scores": shown["scores"].cpu().numpy(),
            },
        }

    def write_report(self, out_dir, metrics, accumulator, rows, worst) -> dict[str, Any]:
        from pixelseg.tasks.instance_outputs import write_instance_report

        return write_instance_report(self, Path(out_dir), metrics, accumulator, rows, worst)

    @staticmethod
    def summary(metrics: dict[str, Any]) -> str:
        return (
            f"mask AP {metrics['mask_ap']:.4f}  mask AP50 {metrics['mask_ap50']:.4f}  "
            f"box AP {metrics['box_ap']:.4f}"
        )

    # ------------------------------------------------------------------ predict's files
    def list_inputs(self, inputs: Sequence[str]) -> list[Path]:
        return list_image_inputs(inputs)

    def read_input(self, path: Path) -> tuple[np.ndarray, dict[str, Any]]:
        """``(image uint8 [H, W, 3], {"images": [float [3, H, W] in 0..1]})``."""
        return read_rgb_input(path)

    def output_paths(self, out_dir: Path, name: str) -> list[Path]:
        return [Path(out_dir) / f"{name}_overlay.png", Path(out_dir) / f"{name}_results.json"]

    def write_prediction(
        self, out_dir: Path, name: str, raw: np.ndarray, prediction: list[dict]
    ) -> list[Path]:
        from pixelseg.tasks.instance_outputs import write_overlay_and_results

        return write_overlay_and_results(self, self.output_paths(out_dir, name), raw, prediction[0])

    def finish_predictions(self, out_dir: Path, names: Sequence[str]) -> list[Path]:
        """``results.json``: every image's COCO results in one file, with ``image_id`` = the
        input's position + 1 and an ``images.json`` naming the file of each id."""
        from pixelseg.tasks.instance_outputs import merge_results

        return merge_results(self, Path(out_dir), names)
