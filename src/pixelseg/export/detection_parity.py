"""How far apart two detectors' outputs on one image are: detections paired by box IoU,
then the differences of each pair.

A detector's output is a set, not a tensor: a score a hair above the threshold in one
backend and below it in the other drops a detection and shifts every index after it, so
comparing the output tensors element by element says nothing. Detections are paired
instead (same label, box IoU at least ``match_iou``, the pairing of highest total IoU via
``scipy.optimize.linear_sum_assignment``) and each pair is compared: box corners in pixels,
scores, and the masks binarised at 0.5. A detection left without a partner is *borderline*
when its score lies within the score tolerance of where the other backend cut (the score
threshold, or its lowest kept score when it kept the maximum number of detections);
other unmatched detections fail the check.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

__all__ = ["DetectionDiff", "DetectionTolerance", "compare_detections"]


@dataclass(frozen=True)
class DetectionTolerance:
    """What a pair of backends may differ by: ``score`` (absolute, scores in 0..1),
    ``box_px`` (largest box-corner difference in pixels), ``mask_iou`` (smallest IoU of
    the paired masks binarised at 0.5, pooled: shared pixels of all pairs over pixels in
    either mask of all pairs); ``match_iou`` is the box IoU at which two detections of one
    label are taken to be the same object.

    The mask IoU is pooled rather than per pair because a pair's IoU says little for masks
    of a few pixels: a box a fraction of a pixel high at the image's edge is pasted by
    torchvision's traced branch as 108 pixels where eager pastes 68 (measured), while a
    graph whose masks are off by one pixel loses several per cent of the pooled IoU."""

    score: float = 1e-3
    box_px: float = 0.1
    mask_iou: float = 0.99
    match_iou: float = 0.5


@dataclass
class DetectionDiff:
    """Counts and worst differences of one image's (or several images') paired detections.

    ``expected``/``got``: detections of the reference and of the candidate; ``matched``:
    pairs; ``borderline``: unmatched detections scoring within tolerance of a cut-off;
    ``unexplained``: the other unmatched ones. Differences are over the pairs (0 and IoU 1
    when there are none); ``mask_inter``/``mask_union`` count the pixels in both and in
    either of each pair's binarised masks, summed over the pairs; ``mask_pixels``/
    ``mask_pixels_equal`` the pixels of the pairs' masks and those on which both agree.
    """

    expected: int = 0
    got: int = 0
    matched: int = 0
    borderline: int = 0
    unexplained: int = 0
    max_box_px: float = 0.0
    max_score: float = 0.0
    max_mask_prob: float = 0.0
    min_mask_iou: float = 1.0
    mask_inter: int = 0
    mask_union: int = 0
    mask_pixels: int = 0
    mask_pixels_equal: int = 0

    @property
    def mask_iou(self) -> float:
        """IoU of the binarised masks pooled over the pairs (1 when no mask has a pixel)."""
        return self.mask_inter / self.mask_union if self.mask_union else 1.0

    @property
    def mask_agreement(self) -> float:
        """Fraction of the paired masks' pixels on which both binarised masks agree."""
        return self.mask_pixels_equal / self.mask_pixels if self.mask_pixels else 1.0

    def merge(self, other: DetectionDiff) -> DetectionDiff:
        """The diff of both images together (counts add up, worst values are kept)."""
        return DetectionDiff(
            self.expected + other.expected,
            self.got + other.got,
            self.matched + other.matched,
            self.borderline + other.borderline,
            self.unexplained + other.unexplained,
            max(self.max_box_px, other.max_box_px),
            max(self.max_score, other.max_score),
            max(self.max_mask_prob, other.max_mask_prob),
            min(self.min_mask_iou, other.min_mask_iou),
            self.mask_inter + other.mask_inter,
            self.mask_union + other.mask_union,
            self.mask_pixels + other.mask_pixels,
            self.mask_pixels_equal + other.mask_pixels_equal,
        )

    def failures(self, tolerance: DetectionTolerance) -> list[str]:
        """What exceeds ``tolerance``, in words (empty when the pair of outputs agrees)."""
        problems = []
        if self.unexplained:
            problems.append(
                f"{self.unexplained} detection(s) without a partner (PyTorch {self.expected}, "
                f"onnxruntime {self.got}, {self.matched} paired)"
            )
        # "not <=" so that a NaN difference fails too.
        if not self.max_box_px <= tolerance.box_px:
            problems.append(
                f"max box difference {self.max_box_px:.3g} px > {tolerance.box_px:g} px"
            )
        if not self.max_score <= tolerance.score:
            problems.append(f"max score difference {self.max_score:.3g} > {tolerance.score:g}")
        if not self.mask_iou >= tolerance.mask_iou:
            problems.append(
                f"mask IoU {self.mask_iou:.4f} < {tolerance.mask_iou:g} (pooled over pairs; "
                f"smallest pair {self.min_mask_iou:.4f})"
            )
        return problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mask_iou": self.mask_iou, "mask_agreement": self.mask_agreement}


def _pairs(expected: dict[str, Tensor], got: dict[str, Tensor], match_iou: float):
    """Index pairs ``(i, j)`` of same-label detections with box IoU >= ``match_iou``,
    chosen for the largest total IoU."""
    from scipy.optimize import linear_sum_assignment

    if len(expected["boxes"]) == 0 or len(got["boxes"]) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    iou = box_iou(expected["boxes"].double(), got["boxes"].double())
    iou[expected["labels"][:, None] != got["labels"][None, :]] = 0.0
    rows, cols = linear_sum_assignment(iou.numpy(), maximize=True)
    keep = iou.numpy()[rows, cols] >= match_iou
    return rows[keep], cols[keep]


def _unmatched_over_cutoff(
    scores: Tensor, other: Tensor, threshold: float, limit: int | None, slack: float
) -> tuple[int, int]:
    """``(borderline, unexplained)`` counts of unmatched ``scores``: borderline ones lie
    within ``slack`` of the cut-off the other backend applied."""
    cutoff = threshold
    if limit is not None and len(other) >= limit > 0:
        cutoff = max(cutoff, float(other.min()))
    unexplained = int((scores > cutoff + slack).sum())
    return len(scores) - unexplained, unexplained


def compare_detections(
    expected: dict[str, Tensor],
    got: dict[str, Tensor],
    tolerance: DetectionTolerance,
    *,
    score_threshold: float = 0.0,
    max_detections: int | None = None,
) -> DetectionDiff:
    """Pair ``got``'s detections (one image: ``boxes [D, 4]``, ``labels [D]``,
    ``scores [D]``, ``masks [D, 1, H, W]`` probabilities) with ``expected``'s and measure
    how far the pairs are apart. ``score_threshold`` and ``max_detections`` are the
    detector's own cut-offs, which decide whether an unmatched detection is borderline."""
    expected = {key: value.detach().cpu() for key, value in expected.items()}
    got = {key: value.detach().cpu() for key, value in got.items()}
    rows, cols = _pairs(expected, got, tolerance.match_iou)
    diff = DetectionDiff(len(expected["scores"]), len(got["scores"]), len(rows))
    for scores, other, paired in (
        (expected["scores"], got["scores"], rows),
        (got["scores"], expected["scores"], cols),
    ):
        alone = torch.ones(len(scores), dtype=torch.bool)
        alone[torch.as_tensor(paired, dtype=torch.long)] = False
        borderline, unexplained = _unmatched_over_cutoff(
            scores[alone].float(), other.float(), score_threshold, max_detections, tolerance.score
        )
        diff.borderline += borderline
        diff.unexplained += unexplained
    if not len(rows):
        return diff
    i, j = torch.as_tensor(rows), torch.as_tensor(cols)
    diff.max_box_px = float((expected["boxes"][i] - got["boxes"][j]).abs().max())
    diff.max_score = float((expected["scores"][i].float() - got["scores"][j].float()).abs().max())
    masks_e, masks_g = expected["masks"][i].float(), got["masks"][j].float()
    diff.max_mask_prob = float((masks_e - masks_g).abs().max())
    binary_e, binary_g = (masks_e > 0.5).flatten(1), (masks_g > 0.5).flatten(1)
    inter = (binary_e & binary_g).sum(1).double()
    union = (binary_e | binary_g).sum(1).double()
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    diff.min_mask_iou = float(iou.min())
    diff.mask_inter, diff.mask_union = int(inter.sum()), int(union.sum())
    diff.mask_pixels = binary_e.numel()
    diff.mask_pixels_equal = int((binary_e == binary_g).sum())
    return diff
