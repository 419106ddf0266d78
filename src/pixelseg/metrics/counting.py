"""Validated, fast counting of (ground truth, prediction) label pairs.

Every metric in this package reduces to a confusion matrix, so this is the one hot loop.
Its cost is a few passes over memory, so it is written to touch each input as few times as
possible (measured in ``benchmarks/metrics.py``):

1. one ``aminmax`` per input. The four bounds are all the validation the fast path needs:
   they prove that ``target * C + pred`` cannot overflow and give the key range.
2. one fused ``add`` writing ``key = target * C + pred`` into a reused int64 buffer (a fresh
   8 MB tensor per call costs more in page faults than the arithmetic).
3. one ``bincount`` over the keys. Ignored pixels are not removed (boolean compaction costs
   ~10x more than counting); they land in the row of their own value and that row is
   dropped. Any other row outside ``[0, C)`` that has counts names exactly the bad target
   values found, so checking the target labels costs nothing extra.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from pixelseg.errors import InvalidInputError

__all__ = ["PairCounter", "as_label_pair"]

logger = logging.getLogger(__name__)

# Beyond this many bins (target value span x C, but always room for C + 1 rows) we stop
# giving every target value its own row and remap the ignore value instead: a huge ignore
# value (e.g. 65535) would otherwise make bincount allocate and scan a huge histogram.
_MAX_BINS = 1 << 16
# Inputs larger than this many elements are counted in chunks so the key buffer stays
# bounded (32 MiB) however large a 3D volume is.
_CHUNK = 1 << 22
_SHOWN = 10  # how many offending values an error message lists


def _describe_values(values: list[int]) -> str:
    shown = ", ".join(str(v) for v in values[:_SHOWN])
    more = f" (and {len(values) - _SHOWN} more)" if len(values) > _SHOWN else ""
    return f"[{shown}]{more}"


def as_label_pair(pred: Tensor, target: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Check shapes and dtypes and turn logits into labels.

    Args:
        pred: labels ``[B, *spatial]`` (integer or bool) or logits ``[B, C, *spatial]``
            (floating point; argmax over dim 1).
        target: labels ``[B, *spatial]`` (integer or bool).
        num_classes: C, the number of classes logits must have.

    Returns:
        ``(pred_labels, target)`` with equal shapes on the same device; bool is viewed as
        uint8, uint16/32/64 become int64. Label values are not checked here
        (``PairCounter`` does that for free).
    """
    if not isinstance(pred, Tensor) or not isinstance(target, Tensor):
        raise InvalidInputError(
            f"pred and target must be torch tensors, got {type(pred).__name__} and "
            f"{type(target).__name__}"
        )
    if target.is_floating_point() or target.is_complex():
        raise InvalidInputError(
            f"target must hold integer class labels, got dtype {target.dtype}; valid dtypes: "
            "any integer dtype or bool (e.g. target.long())"
        )
    if target.dim() < 1:
        raise InvalidInputError("target must have shape [B, *spatial], got a 0-d tensor")
    if pred.device != target.device:
        raise InvalidInputError(
            f"pred is on {pred.device} but target is on {target.device}; put both on one device"
        )
    if pred.is_complex():
        raise InvalidInputError(f"pred must be integer labels or real logits, got {pred.dtype}")
    if pred.is_floating_point():
        pred = _logits_to_labels(pred, target, num_classes)
    elif pred.shape != target.shape:
        hint = (
            " (pred has an extra dim like logits [B, C, *spatial], but logits must be "
            f"floating point, got {pred.dtype})"
            if pred.dim() == target.dim() + 1
            else ""
        )
        raise InvalidInputError(
            f"pred shape {tuple(pred.shape)} does not match target shape "
            f"{tuple(target.shape)}{hint}; expected labels of the target's shape or logits "
            f"[B, {num_classes}, *spatial]"
        )
    return _countable(pred), _countable(target)


def _countable(labels: Tensor) -> Tensor:
    """Bool viewed as uint8 (free); uint16/32/64, which few torch kernels support, as int64."""
    if labels.dtype == torch.bool:
        return labels.view(torch.uint8)
    if labels.dtype in (torch.uint16, torch.uint32, torch.uint64):
        return labels.long()
    return labels


def _logits_to_labels(logits: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Argmax over the class dim of logits ``[B, C, *spatial]``, rejecting NaN."""
    expected = (target.shape[0], num_classes, *target.shape[1:])
    if logits.dim() != target.dim() + 1:
        raise InvalidInputError(
            f"pred is floating point with shape {tuple(logits.shape)}, so it must be logits "
            f"{expected} for target shape {tuple(target.shape)}; pass integer labels of the "
            "target's shape otherwise"
        )
    if tuple(logits.shape) != expected:
        what = (
            f"{logits.shape[1]} classes in dim 1, expected num_classes={num_classes}"
            if logits.shape[1] != num_classes
            else "batch/spatial dims differ from the target's"
        )
        raise InvalidInputError(
            f"logits shape {tuple(logits.shape)} does not fit target shape "
            f"{tuple(target.shape)}: {what}; expected {expected}"
        )
    # max() propagates NaN, so the max values reveal NaN logits without another full pass
    # over the (C times larger) logits.
    values, labels = logits.max(dim=1)
    nan_pixels = int(torch.isnan(values).sum())
    if nan_pixels:
        raise InvalidInputError(
            f"logits contain NaN at {nan_pixels} of {values.numel()} pixels; "
            "valid logits are finite or +-inf"
        )
    return labels


class PairCounter:
    """Counts (target, pred) label pairs into a ``[C, C]`` int64 matrix, validating labels.

    Rows are ground truth, columns prediction. Target pixels equal to ``ignore_index`` are
    not counted. Keeps one reusable int64 key buffer (8 bytes per pixel, at most 32 MiB) on
    the inputs' device; not thread safe.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._buffer: Tensor | None = None

    def __call__(self, pred: Tensor, target: Tensor) -> Tensor:
        """Count label pairs; pred and target: integer labels of equal shape, one device.

        Returns:
            int64 ``[C, C]`` on the inputs' device.

        Raises:
            InvalidInputError: a pred label outside ``[0, C)`` or a target label that is
                neither in ``[0, C)`` nor ``ignore_index`` (the message lists the values).
        """
        num_classes = self.num_classes
        if pred.numel() == 0:
            return torch.zeros(num_classes, num_classes, dtype=torch.int64, device=pred.device)
        pmin, pmax = torch.aminmax(pred)
        tmin, tmax = torch.aminmax(target)
        if pred.device.type == "cpu":
            bounds = [pmin.item(), pmax.item(), tmin.item(), tmax.item()]
        else:  # one device sync for all four bounds
            bounds = torch.stack([pmin.long(), pmax.long(), tmin.long(), tmax.long()]).tolist()
        pmin_v, pmax_v, tmin_v, tmax_v = (int(b) for b in bounds)
        if pmin_v < 0 or pmax_v >= num_classes:
            bad = pred[(pred < 0) | (pred >= num_classes)]
            raise InvalidInputError(
                f"pred holds labels outside the valid range [0, {num_classes - 1}]: found "
                f"{_describe_values(torch.unique(bad).tolist())}"
            )
        lo, hi = min(tmin_v, 0), max(tmax_v, num_classes - 1)
        if hi - lo + 1 > max(_MAX_BINS // num_classes, num_classes + 1):
            # Ignored pixels were moved to the spare row C, already validated.
            return self._bincount(pred, self._remap_wide_target(target), 0, num_classes)[:-1]
        counts = self._bincount(pred, target, lo, hi)
        return self._checked_rows(counts, lo, pred.numel())

    def _remap_wide_target(self, target: Tensor) -> Tensor:
        """Slow path for a target spanning a huge value range: check, then move the ignore
        value to the spare row C. Only a huge ignore_index (or bad labels) gets here."""
        num_classes, ignore = self.num_classes, self.ignore_index
        invalid = (target < 0) | (target >= num_classes)
        if ignore is not None:
            invalid &= target != ignore
        if bool(invalid.any()):
            raise self._bad_target_error(torch.unique(target[invalid]).tolist())
        logger.debug("remapping ignore_index %s to a spare row", ignore)
        return torch.where(target == ignore, num_classes, target.long())

    def _bincount(self, pred: Tensor, target: Tensor, lo: int, hi: int) -> Tensor:
        """Histogram of ``(target - lo) * C + pred`` as ``[hi - lo + 1, C]`` int64."""
        num_classes, span = self.num_classes, hi - lo + 1
        flat_pred, flat_target = pred.reshape(-1), target.reshape(-1)
        n = flat_pred.numel()
        size = min(n, _CHUNK)
        buffer = self._buffer
        if buffer is None or buffer.numel() < size or buffer.device != pred.device:
            buffer = self._buffer = torch.empty(size, dtype=torch.int64, device=pred.device)
        # Narrow inputs (uint8 labels) would overflow if the key were computed in their dtype.
        widen = torch.promote_types(pred.dtype, target.dtype) != torch.int64
        counts = None
        for start in range(0, n, _CHUNK):
            p, t = flat_pred[start : start + _CHUNK], flat_target[start : start + _CHUNK]
            keys = buffer[: p.numel()]
            if widen:
                keys.copy_(t)
                t = keys
            torch.add(p, t, alpha=num_classes, out=keys)
            if lo:
                keys.sub_(lo * num_classes)
            part = torch.bincount(keys, minlength=span * num_classes)
            counts = part if counts is None else counts.add_(part)
        assert counts is not None  # n > 0
        return counts.view(span, num_classes)

    def _checked_rows(self, counts: Tensor, lo: int, numel: int) -> Tensor:
        """Rows of classes ``[0, C)`` from the ``[span, C]`` histogram.

        Any pixel counted outside those rows and the ``ignore_index`` row has a bad target
        value; a pixel total tells whether there is one, without another pass over the data.
        """
        num_classes, ignore = self.num_classes, self.ignore_index
        span = counts.shape[0]
        matrix = counts[-lo : -lo + num_classes]
        ignore_in_classes = ignore is not None and 0 <= ignore < num_classes
        if span > num_classes:
            ignore_row = ignore - lo if ignore is not None and lo <= ignore < lo + span else None
            counted = matrix.sum()
            if ignore_row is not None and not ignore_in_classes:
                counted = counted + counts[ignore_row].sum()
            if int(counted) != numel:
                allowed = torch.zeros(span, dtype=torch.bool, device=counts.device)
                allowed[-lo : -lo + num_classes] = True
                if ignore_row is not None:
                    allowed[ignore_row] = True
                bad_rows = torch.nonzero((counts.sum(dim=1) > 0) & ~allowed).flatten()
                raise self._bad_target_error((bad_rows + lo).tolist())
        if ignore_in_classes:
            matrix = matrix.clone()
            matrix[ignore] = 0
        return matrix

    def _bad_target_error(self, values: list[int]) -> InvalidInputError:
        if self.ignore_index is None:
            ignore, hint = "", " (set ignore_index to skip a void label)"
        else:
            ignore, hint = f" or ignore_index={self.ignore_index}", ""
        return InvalidInputError(
            f"target holds labels outside the valid range [0, {self.num_classes - 1}]{ignore}: "
            f"found {_describe_values(values)}{hint}"
        )
