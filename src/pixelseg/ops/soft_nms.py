"""Gaussian Soft-NMS (Bodla et al., 2017), written here because torchvision has only hard NMS.

Hard NMS deletes every box that overlaps a better one by more than a threshold, so two
touching objects of one class lose one of them. Soft-NMS instead decays the scores of the
overlapping boxes, ``s_i <- s_i * exp(-IoU(M, b_i)^2 / sigma)``, after each pick ``M``, and
drops a box only when its score falls under ``score_threshold``. Boxes are
``(x1, y1, x2, y2)``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou

from pixelseg.errors import InvalidInputError

__all__ = ["batched_soft_nms", "soft_nms"]


def _check(boxes: Tensor, scores: Tensor, sigma: float) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise InvalidInputError(f"boxes must be [N, 4], got {tuple(boxes.shape)}")
    if scores.shape != boxes.shape[:1]:
        raise InvalidInputError(
            f"scores must be [N] = [{boxes.shape[0]}], got {tuple(scores.shape)}"
        )
    if not sigma > 0:
        raise InvalidInputError(f"soft-NMS sigma must be > 0, got {sigma}")


def soft_nms(
    boxes: Tensor,
    scores: Tensor,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
    max_detections: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Kept indices (highest decayed score first) and their decayed scores.

    One pass per kept box, each over the boxes still alive, with the IoU row computed on the
    fly (no ``N x N`` matrix), so memory stays linear in ``N``.
    """
    _check(boxes, scores, sigma)
    if boxes.numel() == 0:
        return boxes.new_zeros(0, dtype=torch.long), scores.new_zeros(0)
    boxes = boxes.float()
    current = scores.float().clone()
    alive = current >= score_threshold
    kept: list[int] = []
    kept_scores: list[Tensor] = []
    limit = boxes.shape[0] if max_detections is None else min(max_detections, boxes.shape[0])
    while len(kept) < limit and bool(alive.any()):
        masked = torch.where(alive, current, torch.full_like(current, float("-inf")))
        best = int(masked.argmax())
        kept.append(best)
        kept_scores.append(current[best])
        alive[best] = False
        iou = box_iou(boxes[best : best + 1], boxes)[0]
        current = torch.where(alive, current * torch.exp(-(iou * iou) / sigma), current)
        alive &= current >= score_threshold
    index = torch.tensor(kept, dtype=torch.long, device=boxes.device)
    return index, torch.stack(kept_scores).to(scores.dtype)


def batched_soft_nms(
    boxes: Tensor,
    scores: Tensor,
    classes: Tensor,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
    max_detections: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Soft-NMS within each class (boxes of different classes never decay each other).

    Returns kept indices sorted by decayed score, best first, and those scores. Uses
    torchvision's ``batched_nms`` trick: each class's boxes move by an offset larger than
    any coordinate, so boxes of two classes never overlap.
    """
    _check(boxes, scores, sigma)
    if classes.shape != scores.shape:
        raise InvalidInputError(
            f"classes must be [N] = [{scores.shape[0]}], got {tuple(classes.shape)}"
        )
    if boxes.numel() == 0:
        return boxes.new_zeros(0, dtype=torch.long), scores.new_zeros(0)
    span = boxes.float().max() - boxes.float().min() + 1
    shifted = boxes.float() + (classes.to(boxes.device).float() * span)[:, None]
    keep, decayed = soft_nms(shifted, scores, sigma, score_threshold)
    order = torch.argsort(decayed, descending=True, stable=True)
    keep, decayed = keep[order], decayed[order]
    if max_detections is not None:
        keep, decayed = keep[:max_detections], decayed[:max_detections]
    return keep, decayed
