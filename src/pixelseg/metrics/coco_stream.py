"""Streaming COCO evaluation: fed batch by batch with torchvision-style dicts, no JSON.

:class:`CocoEvaluator` gives the numbers :func:`pixelseg.metrics.coco_evaluate` gives on the
ground truth :func:`pixelseg.data.instances_to_coco` writes from the same targets and the
results :func:`detections_to_coco_results` writes from the same predictions. Each
``update`` encodes the masks and computes the per-(image, category) IoUs at once, so only
small IoU matrices are kept, not masks; ``compute`` matches and accumulates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from pixelseg.coco_format import encode_masks, mask_api, xyxy_to_xywh
from pixelseg.errors import InvalidInputError
from pixelseg.metrics.coco import IOU_TYPES, image_table
from pixelseg.metrics.coco_match import PairTable, accumulate, summarize

__all__ = ["CocoEvaluator", "detections_to_coco_results"]


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _binary_masks(masks: Any, threshold: float, where: str) -> np.ndarray:
    """``[N, H, W]`` or ``[N, 1, H, W]`` masks -> bool ``[N, H, W]``; floats are probabilities
    cut at ``threshold`` (torchvision's Mask R-CNN returns ``[N, 1, H, W]`` in 0..1)."""
    m = _numpy(masks)
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if m.ndim != 3:
        raise InvalidInputError(f"{where}: masks must be [N, H, W] or [N, 1, H, W], got {m.shape}")
    return m > threshold if np.issubdtype(m.dtype, np.floating) else m != 0


def _boxes(value: Any, count: int, where: str) -> np.ndarray:
    boxes = _numpy(value).astype(np.float64)
    if boxes.shape != (count, 4):
        raise InvalidInputError(
            f"{where}: boxes must be [{count}, 4] (x1, y1, x2, y2), got {boxes.shape}"
        )
    return boxes


def detections_to_coco_results(
    image_id: int,
    prediction: Mapping[str, Any],
    label_to_category_id: Mapping[int, int] | None = None,
    mask_threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """COCO result dicts of one image's detections, ready for ``json.dump``.

    ``prediction``: ``boxes`` ``[N, 4]`` (x1, y1, x2, y2) pixels, ``labels`` int ``[N]``
    (contiguous 1..K), ``scores`` ``[N]``, optional ``masks`` ``[N, (1,) H, W]``. Labels map
    back to category ids through ``label_to_category_id`` (identity when None). Each result
    carries ``bbox`` (``[x, y, w, h]``) and, with masks, a compressed-RLE ``segmentation``.
    """
    labels = _numpy(prediction["labels"]).astype(np.int64).reshape(-1)
    scores = _numpy(prediction["scores"]).astype(np.float64).reshape(-1)
    where = f"image {image_id}"
    boxes = xyxy_to_xywh(_boxes(prediction["boxes"], len(labels), where))
    rles = None
    if prediction.get("masks") is not None:
        rles = encode_masks(_binary_masks(prediction["masks"], mask_threshold, where))
    mapping = label_to_category_id or {}
    out = []
    for i, label in enumerate(labels.tolist()):
        result = {
            "image_id": int(image_id),
            "category_id": int(mapping.get(label, label)),
            "bbox": [float(v) for v in boxes[i]],
            "score": float(scores[i]),
        }
        if rles is not None:
            result["segmentation"] = rles[i]
        out.append(result)
    return out


class CocoEvaluator:
    """COCO AP/AR over a stream of images, the engine's form of ``coco_evaluate``.

    ``num_classes``: K, the labels are ``1..K`` (0 is background and never a label);
    ``iou_types``: any of ``"segm"``, ``"bbox"``. ``update(predictions, targets)`` takes one
    dict per image: targets ``image_id``, ``boxes`` ``[G, 4]``, ``labels`` ``[G]``,
    ``masks`` ``[G, H, W]`` (for segm), optional ``iscrowd`` and ``area`` (default: mask pixel
    count, else box area); predictions ``boxes`` ``[D, 4]``, ``labels``, ``scores``,
    ``masks`` ``[D, (1,) H, W]`` (floats cut at ``mask_threshold``). A detection's area is its
    box's w*h, as pycocotools gives for results that carry a bbox.
    """

    def __init__(
        self,
        num_classes: int,
        iou_types: Sequence[str] = IOU_TYPES,
        mask_threshold: float = 0.5,
    ) -> None:
        if int(num_classes) < 1:
            raise InvalidInputError(f"num_classes must be >= 1, got {num_classes!r}")
        unknown = [t for t in iou_types if t not in IOU_TYPES]
        if unknown or not iou_types:
            raise InvalidInputError(f"iou_types must be among {IOU_TYPES}, got {list(iou_types)!r}")
        self.num_classes = int(num_classes)
        self.iou_types = tuple(iou_types)
        self.mask_threshold = float(mask_threshold)
        mask_api()  # fail at construction, not at the first batch, when pycocotools is missing
        self.reset()

    def reset(self) -> None:
        """Forget every image seen."""
        self._tables: dict[str, list[PairTable]] = {t: [] for t in self.iou_types}
        self._image_ids: set[int] = set()

    def _labels(self, value: Any, where: str) -> np.ndarray:
        labels = _numpy(value).astype(np.int64).reshape(-1)
        bad = labels[(labels < 1) | (labels > self.num_classes)]
        if len(bad):
            raise InvalidInputError(
                f"{where}: labels must be in 1..{self.num_classes}, got {sorted(set(bad.tolist()))}"
            )
        return labels - 1

    def update(
        self, predictions: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]]
    ) -> None:
        """Add one batch: ``predictions[i]`` are the detections on ``targets[i]``'s image."""
        if len(predictions) != len(targets):
            raise InvalidInputError(
                f"got {len(predictions)} predictions for {len(targets)} targets"
            )
        for pred, target in zip(predictions, targets, strict=True):
            self._add_image(pred, target)

    def _add_image(self, pred: Mapping[str, Any], target: Mapping[str, Any]) -> None:
        image_id = int(_numpy(target["image_id"]).reshape(()))
        where = f"image {image_id}"
        if image_id in self._image_ids:
            raise InvalidInputError(f"{where} was already added to this evaluator")
        gt_labels = self._labels(target["labels"], f"{where} target")
        dt_labels = self._labels(pred["labels"], f"{where} prediction")
        num_g, num_d = len(gt_labels), len(dt_labels)
        gt_boxes = _boxes(target["boxes"], num_g, f"{where} target")
        dt_boxes = _boxes(pred["boxes"], num_d, f"{where} prediction")
        scores = _numpy(pred["scores"]).astype(np.float64).reshape(-1)
        if scores.shape != (num_d,) or not np.isfinite(scores).all():
            raise InvalidInputError(f"{where}: scores must be {num_d} finite numbers")
        crowd = _numpy(target.get("iscrowd", np.zeros(num_g))).reshape(-1).astype(bool)
        gt_masks = None
        needs_masks = "segm" in self.iou_types or "area" not in target
        if needs_masks and target.get("masks") is not None:
            gt_masks = _binary_masks(target["masks"], 0.5, f"{where} target")
        if "area" in target:
            gt_area = _numpy(target["area"]).astype(np.float64).reshape(-1)
        elif gt_masks is not None:
            gt_area = gt_masks.reshape(num_g, -1).sum(axis=1).astype(np.float64)
        else:
            gt_area = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
        dt_xywh = xyxy_to_xywh(dt_boxes)
        gt = {
            "category": gt_labels,
            "crowd": crowd,
            "area": gt_area,
            "id_zero": np.zeros(num_g, bool),
        }
        dt = {"category": dt_labels, "score": scores, "area": dt_xywh[:, 2] * dt_xywh[:, 3]}
        for iou_type in self.iou_types:
            if iou_type == "bbox":
                gt["regions"], dt["regions"] = xyxy_to_xywh(gt_boxes), dt_xywh
            else:
                if gt_masks is None or pred.get("masks") is None:
                    raise InvalidInputError(f"{where}: segm evaluation needs 'masks' in both")
                dt_masks = _binary_masks(pred["masks"], self.mask_threshold, f"{where} prediction")
                if dt_masks.shape[1:] != gt_masks.shape[1:] and num_d and num_g:
                    raise InvalidInputError(
                        f"{where}: prediction masks are {dt_masks.shape[1:]}, "
                        f"target masks {gt_masks.shape[1:]}"
                    )
                gt["regions"], dt["regions"] = encode_masks(gt_masks), encode_masks(dt_masks)
            self._tables[iou_type].append(image_table(image_id, gt, dt, iou_type))
        self._image_ids.add(image_id)

    def merge(self, other: CocoEvaluator) -> CocoEvaluator:
        """Add another evaluator's images (of the same classes and IoU types) to this one."""
        if (other.num_classes, other.iou_types) != (self.num_classes, self.iou_types):
            raise InvalidInputError(
                f"cannot merge a CocoEvaluator of {other.num_classes} classes {other.iou_types} "
                f"into one of {self.num_classes} classes {self.iou_types}"
            )
        shared = self._image_ids & other._image_ids
        if shared:
            raise InvalidInputError(
                f"both evaluators hold image ids {sorted(shared)[:5]}: each image is scored once"
            )
        for iou_type in self.iou_types:
            self._tables[iou_type].extend(other._tables[iou_type])
        self._image_ids |= other._image_ids
        return self

    def sync(self, group: object | None = None) -> None:
        """Make every process hold every process's images (a gather of the small per-pair
        IoU records, not of masks); a no-op outside ``torch.distributed``."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        parts: list[Any] = [None] * dist.get_world_size(group)  # type: ignore[arg-type]
        dist.all_gather_object(parts, (self._tables, self._image_ids), group=group)  # type: ignore[arg-type]
        self.reset()
        for tables, image_ids in parts:
            other = CocoEvaluator.__new__(CocoEvaluator)
            other.num_classes, other.iou_types = self.num_classes, self.iou_types
            other._tables, other._image_ids = tables, image_ids
            self.merge(other)

    @property
    def num_images(self) -> int:
        return len(self._image_ids)

    def accumulate(self) -> dict[str, dict[str, np.ndarray]]:
        """Per IoU type, ``precision [T, R, K, A, M]`` and ``recall [T, K, A, M]``."""
        return {
            t: accumulate(PairTable.concat(tables), self.num_classes)
            for t, tables in self._tables.items()
        }

    def compute(self) -> dict[str, dict[str, float]]:
        """Per IoU type, the twelve COCO stats by name (see ``coco_evaluate``)."""
        return {t: summarize(a["precision"], a["recall"]) for t, a in self.accumulate().items()}
