"""Flip test-time augmentation: a predictor in, a predictor out.

The wrapped predictor runs on the identity and on flipped copies of its input, flips each
output back, and averages. Because it is itself a predictor it composes with
:func:`pixelseg.inference.sliding_window_predict` in either order (TTA per window is the usual
choice: ``sliding_window_predict(flip_tta(model), image, window)``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor

from pixelseg.errors import InvalidInputError, unknown_choice
from pixelseg.inference.sliding_window import Predictor

__all__ = ["AVERAGE_MODES", "flip_tta", "resolve_flips"]

AVERAGE_MODES = ("softmax", "sigmoid", "logits")
_AXIS_NAMES = {"w": -1, "h": -2, "d": -3}

Axis = int | str


def _axis_index(axis: Axis, ndim: int) -> int:
    """Map ``"h"``/``"w"``/``"d"`` or a tensor dim (>= 2, or negative) to a positive dim."""
    spatial = ndim - 2
    if isinstance(axis, str):
        if axis not in _AXIS_NAMES:
            raise unknown_choice("flip axis", axis, _AXIS_NAMES)
        index = _AXIS_NAMES[axis]
    else:
        index = int(axis)
    positive = index + ndim if index < 0 else index
    if not 2 <= positive < ndim:
        valid = ", ".join(f"{n!r}" for n, i in _AXIS_NAMES.items() if -i <= spatial)
        raise InvalidInputError(
            f"flip axis {axis!r} is not a spatial dim of a {ndim}-d input [B, C, *spatial]; "
            f"valid: {valid} or dims 2..{ndim - 1}"
        )
    return positive


def resolve_flips(flips: Sequence[Sequence[Axis]], ndim: int) -> list[tuple[int, ...]]:
    """Turn flip specs (``[("w",), ("h", "w")]``) into sorted positive dims for an ``ndim`` input."""
    resolved = []
    for flip in flips:
        dims = tuple(sorted({_axis_index(a, ndim) for a in flip}))
        if dims and dims not in resolved:
            resolved.append(dims)
    return resolved


def flip_tta(
    predictor: Predictor,
    dims: Sequence[Axis] = ("h", "w"),
    *,
    flips: Sequence[Sequence[Axis]] | None = None,
    average: str = "softmax",
) -> Predictor:
    """Wrap ``predictor`` so it averages over the identity plus flipped inputs.

    Args:
        predictor: ``Tensor [N, C_in, *spatial] -> logits [N, K, *spatial]``.
        dims: axes to mirror (``"h"``, ``"w"``, ``"d"`` or tensor dims); every non-empty
            combination is used, as nnU-Net mirroring does: ``("h", "w")`` gives identity,
            h, w, and h+w (4 passes); ``("d", "h", "w")`` gives 8.
        flips: explicit list of flips instead of all combinations, e.g. ``[("w",)]`` for the
            identity plus a horizontal flip only. The identity is always included.
        average: what to average:

            * ``"softmax"`` (default): mean of softmax probabilities over the class dim; returns
              their log (log-probabilities are valid logits: ``softmax`` and ``argmax`` of the
              output give the averaged probabilities and their argmax).
            * ``"sigmoid"``: mean of per-channel sigmoid probabilities (binary / multi-label);
              returns ``logit`` of the mean.
            * ``"logits"``: plain mean of the raw outputs.

    Returns:
        A predictor with the same contract: ``[N, C_in, *spatial] -> [N, K, *spatial]``.
        Probabilities are clamped to ``[tiny, 1 - eps]`` before ``log``/``logit`` so outputs
        stay finite.
    """
    if average not in AVERAGE_MODES:
        raise unknown_choice("TTA average mode", average, AVERAGE_MODES)
    if flips is None:
        dims_t = tuple(dims)
        flips = [c for r in range(1, len(dims_t) + 1) for c in itertools.combinations(dims_t, r)]
    flips_spec = [tuple(f) for f in flips]
    # Validate names now, not at the first call deep inside an evaluation loop.
    for flip in flips_spec:
        for axis in flip:
            if isinstance(axis, str) and axis not in _AXIS_NAMES:
                raise unknown_choice("flip axis", axis, _AXIS_NAMES)

    def _to_average(out: Tensor) -> Tensor:
        out = out.float() if out.dtype in (torch.float16, torch.bfloat16) else out
        if average == "softmax":
            return out.softmax(dim=1)
        if average == "sigmoid":
            return out.sigmoid()
        return out

    def predict(images: Tensor) -> Tensor:
        passes = [(), *resolve_flips(flips_spec, images.ndim)]
        total: Tensor | None = None
        for flip in passes:
            x = images.flip(flip) if flip else images
            out = predictor(x)
            if not isinstance(out, Tensor) or out.ndim != images.ndim:
                raise InvalidInputError(
                    f"predictor must return a Tensor [N, K, *spatial] for input "
                    f"{tuple(images.shape)}, got "
                    f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}"
                )
            out = _to_average(out.flip(flip) if flip else out)
            total = out if total is None else total + out
        assert total is not None
        mean = total / len(passes)
        if average == "logits":
            return mean
        tiny = torch.finfo(mean.dtype).tiny
        if average == "softmax":
            return mean.clamp_min(tiny).log()
        eps = torch.finfo(mean.dtype).eps
        return torch.logit(mean.clamp(tiny, 1.0 - eps))

    predict.__name__ = f"flip_tta({getattr(predictor, '__name__', type(predictor).__name__)})"
    return predict
