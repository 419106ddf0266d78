"""YOLACT inference: per-class candidates, Fast NMS (or hard / soft NMS), mask assembly.

Bolya et al., ICCV 2019, Sec. 3.5 ("Fast NMS") and Sec. 3.4 (assembly: ``sigmoid(P C^T)``
cropped to the predicted box). Boxes are ``(x1, y1, x2, y2)`` pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms

from pixelseg.models.detection.yolact_loss import crop_region
from pixelseg.ops import batched_soft_nms

__all__ = ["DetectionSettings", "batched_box_iou", "fast_nms", "paste_masks", "select_detections"]


@dataclass(frozen=True)
class DetectionSettings:
    """How raw per-anchor predictions become detections (the builder's inference options)."""

    nms: str = "fast"
    nms_thresh: float = 0.5
    soft_nms_sigma: float = 0.5
    score_thresh: float = 0.05
    top_k: int = 200
    detections_per_img: int = 100


def batched_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU ``[C, n, m]`` between boxes ``a [C, n, 4]`` and ``b [C, m, 4]`` of each group ``C``."""
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    top_left = torch.maximum(a[:, :, None, :2], b[:, None, :, :2])
    bottom_right = torch.minimum(a[:, :, None, 2:], b[:, None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    union = area_a[:, :, None] + area_b[:, None, :] - inter
    return inter / union.clamp(min=1e-9)  # zero-area padding boxes get IoU 0, not NaN


def fast_nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Keep mask ``[C, n]`` for boxes ``[C, n, 4]`` sorted by ``scores [C, n]``, best first.

    Sec. 3.5 of the paper: compute the ``n x n`` IoU matrix per class, keep its upper
    triangle (``X_ij`` for ``i < j``: box ``j`` against each higher-scored ``i``), take the
    column-wise max, and keep box ``j`` when that max is at most the threshold. Unlike hard
    NMS, a box that was itself suppressed still suppresses the boxes below it, so Fast NMS
    may remove slightly more; in exchange it is a few matrix ops with no sequential loop.
    """
    iou = batched_box_iou(boxes, boxes).triu(diagonal=1)
    max_iou = iou.max(dim=1).values if iou.shape[1] else scores.new_zeros(scores.shape)
    return max_iou <= iou_threshold


def select_detections(
    class_scores: Tensor, boxes: Tensor, settings: DetectionSettings
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Detections of one image from per-anchor ``class_scores [A, K]`` and ``boxes [A, 4]``.

    Returns anchor indices ``[D]``, labels ``[D]`` (1..K), scores ``[D]`` (best first) and
    boxes ``[D, 4]``. As the reference: anchors whose best class beats ``score_thresh`` are
    candidates, each class keeps its ``top_k`` best, and an anchor may yield a detection in
    more than one class.
    """
    device = boxes.device
    candidates = (class_scores.max(dim=1).values > settings.score_thresh).nonzero().squeeze(1)
    if candidates.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty.clone(), class_scores.new_zeros(0), boxes.new_zeros(0, 4)
    scores, order = class_scores[candidates].t().sort(dim=1, descending=True)  # [K, n]
    scores, order = scores[:, : settings.top_k], order[:, : settings.top_k]
    index = candidates[order]  # [K, t]
    cand_boxes = boxes[index]  # [K, t, 4]
    labels = torch.arange(1, class_scores.shape[1] + 1, device=device)[:, None].expand_as(index)
    if settings.nms == "fast":
        keep = fast_nms(cand_boxes, scores, settings.nms_thresh) & (scores > settings.score_thresh)
        index, labels, scores, cand_boxes = (
            index[keep],
            labels[keep],
            scores[keep],
            cand_boxes[keep],
        )
    else:
        valid = scores > settings.score_thresh
        index, labels, scores, cand_boxes = (
            index[valid],
            labels[valid],
            scores[valid],
            cand_boxes[valid],
        )
        if settings.nms == "hard":
            keep = batched_nms(cand_boxes, scores, labels, settings.nms_thresh)
        else:
            keep, scores_kept = batched_soft_nms(
                cand_boxes, scores, labels, settings.soft_nms_sigma, settings.score_thresh
            )
            scores = scores.clone()
            scores[keep] = scores_kept
        index, labels, scores, cand_boxes = (
            index[keep],
            labels[keep],
            scores[keep],
            cand_boxes[keep],
        )
    best = scores.argsort(descending=True, stable=True)[: settings.detections_per_img]
    return index[best], labels[best], scores[best], cand_boxes[best]


def paste_masks(
    protos: Tensor,
    coefs: Tensor,
    boxes: Tensor,
    resized: tuple[int, int],
    padded: tuple[int, int],
    original: tuple[int, int],
) -> Tensor:
    """Mask probabilities ``[D, 1, H, W]`` at the ``original`` image size.

    ``protos [k, h, w]`` cover the padded batch ``padded``, in which this image occupies the
    top-left ``resized`` region; ``coefs [D, k]``; ``boxes [D, 4]`` in original pixels. One
    bilinear ``grid_sample`` maps each original pixel centre to prototype coordinates, and
    the crop (Sec. 3.4) is applied at full resolution, so mask edges at the box are not
    blocky as when cropping at prototype resolution and then upsampling (the reference).
    """
    height, width = original
    masks = torch.sigmoid(torch.einsum("khw,dk->dhw", protos, coefs))
    device, dtype = protos.device, protos.dtype
    # grid_sample with align_corners=False: -1 and +1 are the outer edges of the padded batch.
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) * (resized[1] / width)
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) * (resized[0] / height)
    gy, gx = torch.meshgrid(ys / padded[0] * 2 - 1, xs / padded[1] * 2 - 1, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1)[None]  # [1, H, W, 2]: one grid, masks as channels
    full = F.grid_sample(
        masks[None], grid, mode="bilinear", padding_mode="border", align_corners=False
    )[0]
    return (full * crop_region(boxes, height, width).to(dtype))[:, None]
