"""YOLACT's heads and anchors: the protonet, the shared prediction head, SSD box coding.

Bolya et al., "YOLACT: Real-time Instance Segmentation", ICCV 2019. The paper splits
instance segmentation into two parallel tasks (Sec. 3): a fully convolutional *protonet*
predicts ``k`` image-sized prototype masks, and the detection head predicts, per anchor,
``k`` coefficients besides the class and the box; an instance mask is a linear combination
of the prototypes, ``sigmoid(P C^T)``. Boxes are ``(x1, y1, x2, y2)`` pixels of the padded,
resized batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BOX_VARIANCES",
    "PredictionHead",
    "Protonet",
    "decode_boxes",
    "encode_boxes",
    "make_anchors",
]

# SSD's variances (Liu et al. 2016), kept by YOLACT: centre offsets / 0.1, log sizes / 0.2.
BOX_VARIANCES = (0.1, 0.2)
# As torchvision's BoxCoder: exp() of a wild early prediction must not overflow.
_LOG_SIZE_CLIP = math.log(1000.0 / 16)


def _init_conv(module: nn.Module) -> None:
    # The reference implementation initialises its own layers with Xavier, biases at 0.
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


class Protonet(nn.Module):
    """P3 ``[B, C, h, w]`` -> ``k`` prototypes ``[B, k, 2h, 2w]`` (stride 4), ReLU'd.

    Fig. 3 of the paper: three 3x3 convs, x2 bilinear upsampling, a 3x3 conv and a 1x1 conv
    to ``k`` channels. The final ReLU keeps prototypes unbounded above but non-negative
    (Sec. 3.2: "we choose ReLU for more interpretable prototypes").
    """

    def __init__(self, channels: int, num_prototypes: int) -> None:
        super().__init__()
        self.before = nn.Sequential(
            *[m for _ in range(3) for m in (nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())]
        )
        self.after = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, num_prototypes, 1),
        )
        _init_conv(self)

    def forward(self, p3: Tensor) -> Tensor:
        x = self.before(p3)
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return F.relu(self.after(x))


class PredictionHead(nn.Module):
    """One head shared by every pyramid level (Fig. 4): class logits, box offsets, coefficients.

    Per level ``[B, C, h, w]`` it predicts, for ``A`` anchors per location, ``num_logits``
    class logits, 4 box offsets and ``k`` mask coefficients (tanh, Sec. 3.3: coefficients
    must be able to subtract prototypes). Outputs are concatenated over levels in the
    order of :func:`make_anchors`: ``[B, sum(h*w*A), X]``.
    """

    def __init__(
        self,
        channels: int,
        num_anchors: int,
        num_logits: int,
        num_prototypes: int,
        class_prior: float | None = None,
    ) -> None:
        super().__init__()
        self.num_logits = num_logits
        self.num_prototypes = num_prototypes
        self.upfeature = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())
        self.cls = nn.Conv2d(channels, num_anchors * num_logits, 3, padding=1)
        self.box = nn.Conv2d(channels, num_anchors * 4, 3, padding=1)
        self.coef = nn.Conv2d(channels, num_anchors * num_prototypes, 3, padding=1)
        _init_conv(self)
        if class_prior is not None:
            # Sigmoid classifiers start at a low foreground probability (RetinaNet, Sec. 4.1),
            # or the many easy negatives swamp the first steps.
            nn.init.constant_(self.cls.bias, -math.log((1 - class_prior) / class_prior))

    @staticmethod
    def _flatten(x: Tensor, width: int) -> Tensor:
        # [B, A*X, h, w] -> [B, h*w*A, X]: row (y, x, a), matching make_anchors.
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, width)

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Class logits ``[B, N, num_logits]``, box offsets ``[B, N, 4]``, coefficients ``[B, N, k]``."""
        logits, boxes, coefs = [], [], []
        for feature in features:
            x = self.upfeature(feature)
            logits.append(self._flatten(self.cls(x), self.num_logits))
            boxes.append(self._flatten(self.box(x), 4))
            coefs.append(self._flatten(torch.tanh(self.coef(x)), self.num_prototypes))
        return torch.cat(logits, 1), torch.cat(boxes, 1), torch.cat(coefs, 1)


def make_anchors(
    feature_sizes: list[tuple[int, int]],
    image_size: tuple[int, int],
    sizes: tuple[float, ...],
    aspect_ratios: tuple[float, ...],
    device: torch.device | None = None,
) -> Tensor:
    """Anchors ``[sum(h*w*A), 4]`` (x1, y1, x2, y2) over the padded batch ``image_size``.

    Level ``l`` has one size ``sizes[l]`` and ``A = len(aspect_ratios)`` shapes centred on
    each cell, width ``s * sqrt(r)`` and height ``s / sqrt(r)`` (Sec. 6: one scale per level,
    ratios [1, 1/2, 2]). The reference code's ``use_square_anchors`` flag makes all three
    square; we follow the paper's text.
    """
    height, width = image_size
    ratios = torch.tensor(aspect_ratios, dtype=torch.float32, device=device)
    levels = []
    for (h, w), size in zip(feature_sizes, sizes, strict=True):
        ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) * (height / h)
        xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) * (width / w)
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        half_w = size * ratios.sqrt() / 2
        half_h = size / ratios.sqrt() / 2
        cx, cy = cx[..., None], cy[..., None]  # [h, w, 1] against [A]
        box = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1)
        levels.append(box.reshape(-1, 4))
    return torch.cat(levels, 0)


def _centre_size(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return boxes[:, 0] + w / 2, boxes[:, 1] + h / 2, w, h


def encode_boxes(boxes: Tensor, anchors: Tensor) -> Tensor:
    """SSD offsets ``[N, 4]`` of ``boxes`` ``[N, 4]`` against their ``anchors`` ``[N, 4]``."""
    bx, by, bw, bh = _centre_size(boxes)
    ax, ay, aw, ah = _centre_size(anchors)
    v_centre, v_size = BOX_VARIANCES
    return torch.stack(
        [
            (bx - ax) / (aw * v_centre),
            (by - ay) / (ah * v_centre),
            torch.log(bw.clamp(min=1e-6) / aw) / v_size,
            torch.log(bh.clamp(min=1e-6) / ah) / v_size,
        ],
        dim=1,
    )


def decode_boxes(offsets: Tensor, anchors: Tensor) -> Tensor:
    """Inverse of :func:`encode_boxes`: offsets ``[N, 4]`` -> boxes ``[N, 4]`` (x1, y1, x2, y2)."""
    ax, ay, aw, ah = _centre_size(anchors)
    v_centre, v_size = BOX_VARIANCES
    cx = ax + offsets[:, 0] * v_centre * aw
    cy = ay + offsets[:, 1] * v_centre * ah
    w = aw * torch.exp((offsets[:, 2] * v_size).clamp(max=_LOG_SIZE_CLIP))
    h = ah * torch.exp((offsets[:, 3] * v_size).clamp(max=_LOG_SIZE_CLIP))
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)
