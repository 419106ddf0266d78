"""Class weights from label counts, for weighted cross-entropy, Dice or focal loss."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pixelseg.errors import DataError, InvalidInputError, unknown_choice

__all__ = ["WEIGHT_METHODS", "class_weights", "count_labels"]

WEIGHT_METHODS: dict[str, str] = {
    "inverse": "N / (K * n_c): balanced, as sklearn's compute_class_weight('balanced')",
    "sqrt_inverse": "sqrt(N / (K * n_c)): a milder inverse",
    "enet": "1 / ln(c + n_c / N), c = 1.02 (Paszke et al., ENet 2016)",
    "median_frequency": "median(freq) / freq_c (Eigen & Fergus 2015)",
}


def count_labels(
    masks: Iterable[Any],
    num_classes: int,
    ignore_index: int | None = None,
    *,
    per_image: bool = False,
) -> Tensor:
    """Count pixels per class over ``masks`` -> int64 ``[C]``, or ``[N, C]`` with ``per_image``.

    ``masks`` yields one integer label mask per image (tensor, numpy array or PIL image, any
    shape), e.g. ``(mask for _, mask in dataset)``; a tensor ``[N, H, W]`` is read as N masks.
    Pixels equal to ``ignore_index`` are skipped; any other value outside ``[0, C)`` raises
    :class:`DataError`. Per-image counts feed the exact Eigen & Fergus median frequency.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise InvalidInputError(
            f"count_labels: num_classes must be an int >= 1, got {num_classes!r}"
        )
    rows = []
    for index, mask in enumerate(masks):
        values = (mask if isinstance(mask, Tensor) else torch.as_tensor(np.asarray(mask))).flatten()
        if values.is_floating_point() and bool((values != torch.round(values)).any()):
            raise DataError(
                f"count_labels: mask {index} holds non-integer values; masks hold class indices"
            )
        values = values.long().cpu()
        if ignore_index is not None:
            values = values[values != ignore_index]
        bad = (values < 0) | (values >= num_classes)
        if bool(bad.any()):
            raise DataError(
                f"count_labels: mask {index} holds values {torch.unique(values[bad])[:10].tolist()} "
                f"outside the classes [0, {num_classes - 1}] (ignore_index={ignore_index})"
            )
        rows.append(torch.bincount(values, minlength=num_classes))
    if not rows:
        raise InvalidInputError("count_labels: masks is empty; give at least one mask")
    counts = torch.stack(rows)
    return counts if per_image else counts.sum(dim=0)


def class_weights(counts: Tensor | Any, method: str, *, enet_c: float = 1.02) -> Tensor:
    """Per-class loss weights ``[C]`` (float32) from pixel counts.

    ``counts``: ``[C]`` totals or ``[N, C]`` per-image counts (:func:`count_labels`). With
    ``n_c`` the count of class c, ``N = sum n_c`` and ``K`` the number of classes present:

    - ``inverse``: ``N / (K n_c)`` (mean weight 1 over classes when balanced).
    - ``sqrt_inverse``: ``sqrt(N / (K n_c))``.
    - ``enet``: ``1 / ln(enet_c + n_c / N)``, ``enet_c = 1.02`` bounds weights by ~50.
    - ``median_frequency``: ``median(freq) / freq_c`` over present classes, where ``freq_c`` is
      ``n_c`` over the pixels of the images that contain class c (Eigen & Fergus). Given only
      ``[C]`` totals the image split is unknown and ``freq_c = n_c / N``. The median of an
      even number of classes is the mean of the two middle values (numpy's convention).

    A class with zero count gets weight 0: it cannot affect the loss anyway, and a finite
    number keeps the vector usable (no inf/NaN).
    """
    if method not in WEIGHT_METHODS:
        raise unknown_choice("class weight method", str(method), WEIGHT_METHODS)
    table = torch.as_tensor(counts, dtype=torch.float64).cpu()
    if table.ndim not in (1, 2) or table.shape[-1] == 0:
        raise InvalidInputError(
            f"class_weights: counts must be [C] or [N, C], got shape {tuple(table.shape)}"
        )
    if not bool(torch.isfinite(table).all()) or bool((table < 0).any()):
        raise InvalidInputError(
            f"class_weights: counts must be finite and >= 0, got {table.tolist()}"
        )
    totals = table if table.ndim == 1 else table.sum(dim=0)
    total = float(totals.sum())
    if total == 0:
        raise InvalidInputError(f"class_weights: every count is zero ({totals.tolist()})")
    if not math.isfinite(enet_c) or enet_c <= 1:
        raise InvalidInputError(
            f"class_weights: enet_c must be > 1 (weights <= 1/ln(c)), got {enet_c}"
        )
    present = totals > 0
    safe = torch.where(present, totals, torch.ones_like(totals))
    if method == "inverse":
        weights = total / (int(present.sum()) * safe)
    elif method == "sqrt_inverse":
        weights = torch.sqrt(total / (int(present.sum()) * safe))
    elif method == "enet":
        weights = 1 / torch.log(enet_c + totals / total)
    else:
        freq = _frequencies(table)
        weights = torch.from_numpy(np.median(freq[present].numpy(), keepdims=True)) / torch.where(
            present, freq, torch.ones_like(freq)
        )
    return torch.where(present, weights, torch.zeros_like(weights)).to(torch.float32)


def _frequencies(table: Tensor) -> Tensor:
    """``freq_c``: count of c over the pixels of images containing c (``[N, C]``), or over all."""
    if table.ndim == 1:
        return table / table.sum()
    image_pixels = table.sum(dim=1, keepdim=True)
    pixels_where_present = (image_pixels * (table > 0)).sum(dim=0)
    return table.sum(dim=0) / pixels_where_present.clamp_min(1)
