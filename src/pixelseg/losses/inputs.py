"""Input checking and target encoding shared by every loss.

Every loss takes ``logits [B, C, *spatial]`` and ``target [B, *spatial]`` (class indices). With
``C == 1`` the problem is binary: the single channel is the foreground logit (sigmoid) and the
target holds 0/1. The checks here turn every bad input into an :class:`InvalidInputError` that
names the bad shape or values, instead of a bare ``IndexError`` or a CUDA device assert, and
they cost one host-device synchronisation per call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from pixelseg.errors import InvalidInputError, NonFiniteError

__all__ = [
    "check_class_vector",
    "check_ignore_index",
    "class_vector",
    "encode_target",
    "mean_over_valid_images",
    "prepare",
]


def prepare(
    logits: Tensor, target: Tensor, ignore_index: int | None, loss: str
) -> tuple[Tensor, Tensor, Tensor]:
    """Check ``logits``/``target`` and return ``(logits, target, valid)``.

    ``logits [B, C, *spatial]`` float; half precision is upcast to float32 so that sums over
    millions of pixels neither overflow nor lose precision. ``target [B, *spatial]`` (or
    ``[B, 1, *spatial]``) of an integer, bool or integral-valued float dtype. Returns the target
    as int64 ``[B, *spatial]`` with ignored pixels set to 0 (a valid class, so one-hot and gather
    never see an out-of-range index) and ``valid [B, *spatial]`` bool, False where ignored.
    """
    if not isinstance(logits, Tensor) or not isinstance(target, Tensor):
        raise InvalidInputError(
            f"{loss}: logits and target must be torch.Tensor, got "
            f"{type(logits).__name__} and {type(target).__name__}"
        )
    if logits.ndim < 3:
        raise InvalidInputError(
            f"{loss}: logits must be [B, C, *spatial] with at least one spatial dimension, "
            f"got shape {tuple(logits.shape)}"
        )
    if not logits.is_floating_point():
        raise InvalidInputError(f"{loss}: logits must be a float tensor, got dtype {logits.dtype}")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    if target.ndim == logits.ndim and target.shape[1] == 1:
        target = target.squeeze(1)
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise InvalidInputError(
            f"{loss}: target shape {tuple(target.shape)} does not match logits shape "
            f"{tuple(logits.shape)}; expected target [B, *spatial] = {expected} "
            f"(or [B, 1, *spatial])"
        )
    if target.device != logits.device:
        raise InvalidInputError(
            f"{loss}: target is on {target.device} but logits are on {logits.device}"
        )
    target = _as_long(target, loss)
    num_classes = logits.shape[1]
    high = 1 if num_classes == 1 else num_classes - 1
    valid = (
        torch.ones_like(target, dtype=torch.bool)
        if ignore_index is None
        else target != ignore_index
    )
    out_of_range = valid & ((target < 0) | (target > high))
    has_bad, all_finite = torch.stack([out_of_range.any(), torch.isfinite(logits).all()]).tolist()
    if not all_finite:
        bad = logits[~torch.isfinite(logits)]
        raise NonFiniteError(
            f"{loss}: logits contain {bad.numel()} non-finite values (NaN/Inf), e.g. "
            f"{bad[:3].tolist()}; the model has probably diverged"
        )
    if has_bad:
        values = torch.unique(target[out_of_range])[:10].tolist()
        kind = (
            "binary (C == 1) target must be 0 or 1"
            if num_classes == 1
            else (f"target must lie in [0, {high}] for C = {num_classes} classes")
        )
        raise InvalidInputError(
            f"{loss}: target holds values {values} outside the classes: {kind} "
            f"(ignore_index={ignore_index})"
        )
    if ignore_index is not None:
        target = torch.where(valid, target, torch.zeros_like(target))
    return logits, target, valid


def _as_long(target: Tensor, loss: str) -> Tensor:
    """Convert an integer, bool or integral-valued float target to int64."""
    if target.dtype == torch.int64:
        return target
    if target.is_floating_point():
        finite = torch.isfinite(target)
        fractional = ~finite | (target != torch.round(target))
        if bool(fractional.any()):
            values = target[fractional][:5].tolist()
            raise InvalidInputError(
                f"{loss}: float target must hold whole class indices (0/1 for binary), got "
                f"values such as {values}; soft labels are not supported"
            )
        return target.long()
    if target.is_complex():
        raise InvalidInputError(f"{loss}: target dtype {target.dtype} is not supported")
    return target.long()


def encode_target(
    logits: Tensor, target: Tensor, valid: Tensor, *, binary_as_two_classes: bool = False
) -> tuple[Tensor, Tensor]:
    """Return ``(probs, onehot)``, both ``[B, K, *spatial]``, zero at ignored pixels.

    Multi-class: softmax probabilities and one-hot target, K = C. Binary (C == 1): the sigmoid
    foreground probability and the 0/1 target, K = 1, or K = 2 with background ``1 - p``
    first when ``binary_as_two_classes``. ``torch.where`` (not multiplication) masks the
    probabilities so ignored pixels pass exactly zero gradient.
    """
    mask = valid.unsqueeze(1)
    if logits.shape[1] == 1:
        probs = torch.sigmoid(logits)
        onehot = target.unsqueeze(1).to(probs.dtype)
        if binary_as_two_classes:
            probs = torch.cat([1 - probs, probs], dim=1)
            onehot = torch.cat([1 - onehot, onehot], dim=1)
    else:
        probs = torch.softmax(logits, dim=1)
        onehot = torch.zeros_like(probs).scatter_(1, target.unsqueeze(1), 1.0)
    probs = torch.where(mask, probs, torch.zeros_like(probs))
    onehot = onehot * mask
    return probs, onehot


def class_vector(value: Sequence[float] | Tensor | None, name: str, loss: str) -> Tensor | None:
    """Turn a per-class option (list or tensor of C values) into a float32 tensor, or None.

    Values must be finite and >= 0, and not all zero. The length is checked against C in
    :func:`check_class_vector`, because C is only known once logits arrive.
    """
    if value is None:
        return None
    try:
        vector = torch.as_tensor(value, dtype=torch.float32).detach().clone()
    except (TypeError, ValueError, RuntimeError) as error:
        raise InvalidInputError(
            f"{loss}: {name} must be a list of numbers (one per class), got {value!r}"
        ) from error
    if vector.ndim != 1 or vector.numel() == 0:
        raise InvalidInputError(
            f"{loss}: {name} must be a 1-D list with one value per class, got shape "
            f"{tuple(vector.shape)}"
        )
    values = vector.tolist()
    if not all(math.isfinite(v) and v >= 0 for v in values) or not any(values):
        raise InvalidInputError(
            f"{loss}: {name} values must be finite, >= 0 and not all zero, got {values}"
        )
    return vector


def check_ignore_index(value: int | None, loss: str) -> int | None:
    """Validate the ``ignore_index`` option: an int label value (e.g. 255) or None."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidInputError(
            f"{loss}: ignore_index must be an int label value (e.g. 255) or None, got {value!r}"
        )
    return value


def check_class_vector(vector: Tensor | None, channels: int, name: str, loss: str) -> None:
    """Raise unless a per-class option has one value per class.

    ``channels`` is C of the logits; binary logits (C == 1) have two classes, background and
    foreground, so per-class vectors (e.g. from :func:`class_weights`) fit every loss alike.
    """
    classes = 2 if channels == 1 else channels
    if vector is not None and vector.numel() != classes:
        binary = " (binary: background and foreground)" if channels == 1 else ""
        raise InvalidInputError(
            f"{loss}: {name} has {vector.numel()} values {vector.tolist()} but logits with "
            f"C = {channels} channels have {classes} classes{binary}; give one value per class"
        )


def mean_over_valid_images(per_image: Tensor, valid: Tensor) -> Tensor:
    """Average per-image losses ``[B]`` over images with at least one valid pixel.

    ``valid [B, *spatial]``. A fully ignored image contributes nothing; if every image is
    fully ignored the result is 0 (connected to the graph, zero gradient).
    """
    has_pixels = valid.flatten(1).any(dim=1).to(per_image.dtype)
    total = (per_image * has_pixels).sum()
    return total / has_pixels.sum().clamp_min(1.0)
