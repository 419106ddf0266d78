"""YOLACT training targets and losses: anchor matching, OHEM, box, mask and semantic terms.

Follows Bolya et al., ICCV 2019 (Sec. 3 and 4) and the reference implementation
(dbolya/yolact, ``layers/modules/multibox_loss.py``): positives and the classification,
box and mask terms are normalised by the number of positive anchors in the batch, the
semantic term by the batch size. Boxes are ``(x1, y1, x2, y2)`` pixels of the padded batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou, sigmoid_focal_loss

from pixelseg.models.detection.yolact_head import encode_boxes

__all__ = ["YolactLoss", "crop_region", "downsample_masks", "match_anchors", "ohem_negatives"]


def match_anchors(
    gt_boxes: Tensor, gt_labels: Tensor, anchors: Tensor, pos_iou: float, neg_iou: float
) -> tuple[Tensor, Tensor]:
    """Anchor labels ``[A]`` (class if positive, 0 background, -1 ignored) and matched GT ``[A]``.

    An anchor is positive when its best IoU with a GT is ``>= pos_iou``, background when it
    is ``< neg_iou`` and ignored in between (Sec. 6). Every GT also claims its best anchor,
    as SSD and the reference do, so a small or thin object that no anchor covers at 0.5
    still trains.
    """
    num_anchors = anchors.shape[0]
    if gt_boxes.shape[0] == 0:
        zeros = torch.zeros(num_anchors, dtype=torch.long, device=anchors.device)
        return zeros, zeros.clone()
    iou = box_iou(gt_boxes, anchors)  # [N, A]
    best_iou, matched = iou.max(dim=0)
    best_anchor = iou.argmax(dim=1)
    best_iou[best_anchor] = 2.0  # above any threshold
    matched[best_anchor] = torch.arange(gt_boxes.shape[0], device=anchors.device)
    labels = gt_labels[matched].clone()
    labels[best_iou < pos_iou] = -1
    labels[best_iou < neg_iou] = 0
    return labels, matched


def ohem_negatives(background_loss: Tensor, labels: Tensor, ratio: int) -> Tensor:
    """Hard negatives ``[B, A]`` bool: per image, the ``ratio * positives`` background anchors
    with the highest background loss (Sec. 6: "OHEM ... 3:1 negative to positive ratio").

    ``background_loss [B, A]`` is each anchor's cross-entropy were it labelled background;
    ``labels [B, A]`` as from :func:`match_anchors` (positives and ignored are never picked).
    """
    loss = background_loss.masked_fill(labels != 0, float("-inf"))
    rank = loss.argsort(dim=1, descending=True).argsort(dim=1)
    num_neg = ((labels > 0).sum(dim=1) * ratio).clamp(max=labels.shape[1] - 1)
    return (rank < num_neg[:, None]) & (labels == 0)


def crop_region(boxes: Tensor, height: int, width: int) -> Tensor:
    """Bool ``[N, height, width]``: the pixels each box ``[N, 4]`` (pixel units) touches.

    YOLACT crops masks with the box (Sec. 3.4) so prototypes need not be zero far from an
    object; counting any touched pixel (the reference pads its crop by one pixel) keeps a
    box smaller than a prototype pixel from cropping everything.
    """
    xs = torch.arange(width, device=boxes.device, dtype=boxes.dtype)
    ys = torch.arange(height, device=boxes.device, dtype=boxes.dtype)
    inside_x = (xs[None] + 1 > boxes[:, 0:1]) & (xs[None] < boxes[:, 2:3])  # [N, W]
    inside_y = (ys[None] + 1 > boxes[:, 1:2]) & (ys[None] < boxes[:, 3:4])  # [N, H]
    return inside_y[:, :, None] & inside_x[:, None, :]


def downsample_masks(masks: Tensor, padded: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """Binary float ``[N, *size]`` from uint8 masks ``[N, h, w]`` of one resized image.

    Masks are first padded (bottom, right) to the batch's ``padded`` size, as the image was,
    then bilinearly resized and thresholded at 0.5 as in the reference.
    """
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size), dtype=torch.float32)
    pad = (0, padded[1] - masks.shape[-1], 0, padded[0] - masks.shape[-2])
    x = F.pad(masks.float(), pad)[None]
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)[0]
    return (x > 0.5).float()


class YolactLoss(nn.Module):
    """The four YOLACT loss terms as a dict (weights as the reference's defaults)."""

    def __init__(
        self,
        num_classes: int,
        pos_iou: float,
        neg_iou: float,
        classifier: str,
        negpos_ratio: int,
        masks_to_train: int,
        weights: dict[str, float],
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.pos_iou, self.neg_iou = pos_iou, neg_iou
        self.classifier = classifier
        self.negpos_ratio = negpos_ratio
        self.masks_to_train = masks_to_train
        self.weights = dict(weights)

    def forward(
        self,
        logits: Tensor,
        offsets: Tensor,
        coefs: Tensor,
        protos: Tensor,
        semantic: Tensor,
        anchors: Tensor,
        targets: list[dict[str, Tensor]],
        padded: tuple[int, int],
    ) -> dict[str, Tensor]:
        """Losses from head outputs ``[B, A, *]``, prototypes ``[B, k, h, w]``, semantic logits
        ``[B, K, h', w']``, anchors ``[A, 4]`` and the resized targets."""
        matches = [
            match_anchors(t["boxes"], t["labels"], anchors, self.pos_iou, self.neg_iou)
            for t in targets
        ]
        labels = torch.stack([m[0] for m in matches])  # [B, A]
        positive = labels > 0
        num_pos = positive.sum().clamp(min=1).float()

        # An image without objects has no positives: any [A, 4] placeholder will do.
        gt_boxes = torch.stack(
            [
                t["boxes"][m[1]] if len(t["boxes"]) else anchors
                for t, m in zip(targets, matches, strict=True)
            ]
        )
        box_targets = encode_boxes(gt_boxes[positive], anchors.expand_as(gt_boxes)[positive])
        loss_box = F.smooth_l1_loss(offsets[positive], box_targets, reduction="sum")
        return {
            "loss_classifier": self._class_loss(logits, labels) / num_pos * self.weights["class"],
            "loss_box_reg": loss_box / num_pos * self.weights["box"],
            "loss_mask": self._mask_loss(protos, coefs, matches, targets, padded)
            / num_pos
            * self.weights["mask"],
            "loss_semantic": self._semantic_loss(semantic, targets, padded)
            * self.weights["semantic"],
        }

    def _class_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        if self.classifier == "focal":
            # Sigmoid focal loss (Lin et al. 2017) over the K object classes, every
            # non-ignored anchor counting; background is the all-zero target.
            valid = labels >= 0
            onehot = F.one_hot(labels.clamp(min=0), self.num_classes + 1)[..., 1:]
            return sigmoid_focal_loss(
                logits[valid], onehot[valid].to(logits.dtype), reduction="sum"
            )
        # Softmax cross-entropy on the positives and 3x as many hard negatives (Sec. 6).
        background_loss = torch.logsumexp(logits, dim=-1) - logits[..., 0]
        chosen = (labels > 0) | ohem_negatives(background_loss.detach(), labels, self.negpos_ratio)
        return F.cross_entropy(logits[chosen], labels[chosen], reduction="sum")

    def _mask_loss(
        self,
        protos: Tensor,
        coefs: Tensor,
        matches: list[tuple[Tensor, Tensor]],
        targets: list[dict[str, Tensor]],
        padded: tuple[int, int],
    ) -> Tensor:
        """Sum over positives of the mean per-pixel BCE inside the GT box (Sec. 3.4; the
        reference divides by the box area, "emulating RoI pooling", so small objects count
        as much as large ones)."""
        height, width = protos.shape[-2:]
        stride = protos.new_tensor([padded[1] / width, padded[0] / height] * 2)
        total = protos.sum() * 0.0  # keeps the graph when no image has a positive
        for b, ((labels, matched), target) in enumerate(zip(matches, targets, strict=True)):
            index = (labels > 0).nonzero().squeeze(1)
            if index.numel() == 0:
                continue
            if index.numel() > self.masks_to_train:  # the reference's cap on memory and time
                index = index[
                    torch.randperm(index.numel(), device=index.device)[: self.masks_to_train]
                ]
            gt = matched[index]
            gt_masks = downsample_masks(target["masks"], padded, (height, width))[gt]
            mask_logits = torch.einsum("khw,nk->nhw", protos[b], coefs[b, index])
            inside = crop_region(target["boxes"][gt] / stride, height, width).float()
            bce = F.binary_cross_entropy_with_logits(mask_logits, gt_masks, reduction="none")
            total = total + ((bce * inside).sum((1, 2)) / inside.sum((1, 2)).clamp(min=1)).sum()
        return total

    def _semantic_loss(
        self, semantic: Tensor, targets: list[dict[str, Tensor]], padded: tuple[int, int]
    ) -> Tensor:
        """Per-class BCE with logits on P3 (Sec. 3.5 "Semantic Segmentation Loss"), the
        reference's union of each class's instance masks as target, mean over pixels and
        images."""
        size = semantic.shape[-2:]
        total = semantic.sum() * 0.0
        for b, target in enumerate(targets):
            masks = downsample_masks(target["masks"], padded, size)
            onehot = F.one_hot(target["labels"] - 1, self.num_classes).to(masks.dtype)  # [N, K]
            union = (onehot.t() @ masks.flatten(1) > 0).to(masks.dtype).view(-1, *size)
            loss = F.binary_cross_entropy_with_logits(semantic[b], union, reduction="sum")
            total = total + loss / (size[0] * size[1])
        return total / len(targets)
