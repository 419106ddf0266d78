"""The augmentation vocabulary: spec names and arguments -> albumentations ops.

Each builder takes the mask fill value first, then the spec's own arguments (keyword-only, so
a spec's keys are checked against the signature). Geometric ops resample masks with nearest
neighbour; pixels they invent get 0 in the image and ``fill_mask`` in the mask.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from pixelseg._optional import lazy_import
from pixelseg.errors import InvalidInputError, closest_match, unknown_choice

if TYPE_CHECKING:
    import albumentations as A
else:  # loaded when the first op is built: see pixelseg._optional
    A = lazy_import("albumentations")

__all__ = ["EVAL_KEPT", "INVENTS_PIXELS", "TRANSFORM_NAMES", "build_op", "resize_op"]

_NEAREST = cv2.INTER_NEAREST
# OpenCV's INTER_NEAREST resize samples with a half-pixel offset relative to INTER_LINEAR, which
# shifts an upscaled mask against its image; NEAREST_EXACT samples pixel centres like LINEAR.
_NEAREST_RESIZE = cv2.INTER_NEAREST_EXACT
_LINEAR = cv2.INTER_LINEAR
_CONSTANT = cv2.BORDER_CONSTANT


def _pair(value: Any, what: str) -> tuple[int, int]:
    """``256`` or ``[256, 320]`` -> ``(height, width)`` as positive ints."""
    if isinstance(value, int | np.integer):
        value = (value, value)
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} must be an int or [height, width], got {value!r}") from exc
    if h <= 0 or w <= 0:
        raise InvalidInputError(f"{what} must be positive, got {value!r}")
    return h, w


def _range(value: Any, what: str, symmetric: bool = True) -> tuple[float, float]:
    """``x`` -> ``(-x, x)`` (or ``(x, x)``) and ``[a, b]`` -> ``(a, b)`` as floats."""
    if isinstance(value, int | float):
        return (-float(value), float(value)) if symmetric else (float(value), float(value))
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} must be a number or [low, high], got {value!r}") from exc
    if lo > hi:
        raise InvalidInputError(f"{what} must have low <= high, got {value!r}")
    return lo, hi


def _warp_args(fill_mask: int) -> dict[str, Any]:
    """What every resampling warp shares: linear image, nearest mask, and the pixels it
    invents set to 0 in the image and ``fill_mask`` in the mask."""
    return {
        "interpolation": _LINEAR,
        "mask_interpolation": _NEAREST,
        "border_mode": _CONSTANT,
        "fill": 0,
        "fill_mask": fill_mask,
    }


def _hflip(fill_mask: int, *, p: float = 0.5) -> A.BasicTransform:
    return A.HorizontalFlip(p=p)


def _vflip(fill_mask: int, *, p: float = 0.5) -> A.BasicTransform:
    return A.VerticalFlip(p=p)


def _rotate90(fill_mask: int, *, p: float = 0.5) -> A.BasicTransform:
    """Random multiple of 90 degrees; changes H and W of non-square images."""
    return A.RandomRotate90(p=p)


def _rotate(fill_mask: int, *, limit: Any = 30, p: float = 0.5) -> A.BasicTransform:
    return A.Rotate(
        limit=_range(limit, "rotate.limit"),
        **_warp_args(fill_mask),
        p=p,
    )


def _affine(
    fill_mask: int,
    *,
    scale: Any = (0.9, 1.1),
    translate: Any = 0.1,
    rotate: Any = 15,
    shear: Any = 0,
    p: float = 0.5,
) -> A.BasicTransform:
    return A.Affine(
        scale=_range(scale, "affine.scale", symmetric=False),
        translate_percent=_range(translate, "affine.translate"),
        rotate=_range(rotate, "affine.rotate"),
        shear=_range(shear, "affine.shear"),
        **_warp_args(fill_mask),
        p=p,
    )


def _perspective(fill_mask: int, *, scale: Any = (0.05, 0.1), p: float = 0.5) -> A.BasicTransform:
    """Random four-point perspective warp, as a camera tilted or set at another height sees
    the same street; ``scale`` bounds how far (fraction of the side) each corner moves. The
    output keeps the input's size; corners pulled inwards invent pixels."""
    lo, hi = _range(scale, "perspective.scale", symmetric=False)
    if lo < 0:
        raise InvalidInputError(f"perspective.scale must not be negative, got {scale!r}")
    return A.Perspective(
        scale=(lo, hi),
        keep_size=True,
        **_warp_args(fill_mask),
        p=p,
    )


def _elastic(
    fill_mask: int, *, alpha: float = 40.0, sigma: float = 6.0, p: float = 0.5
) -> A.BasicTransform:
    """Smooth random displacement field: ``sigma`` (px) sets smoothness, ``alpha`` strength."""
    return A.ElasticTransform(
        alpha=float(alpha),
        sigma=float(sigma),
        **_warp_args(fill_mask),
        p=p,
    )


def _scale_crop(
    fill_mask: int, *, size: Any, scale: Any = (0.5, 2.0), p: float = 1.0
) -> A.BaseCompose:
    """Rescale by a random factor in ``scale``, pad if smaller than ``size``, random crop."""
    h, w = _pair(size, "scale_crop.size")
    lo, hi = _range(scale, "scale_crop.scale", symmetric=False)
    if lo <= 0:
        raise InvalidInputError(f"scale_crop.scale must be positive, got {scale!r}")
    return A.Sequential(
        [
            A.RandomScale(
                scale_limit=(lo - 1.0, hi - 1.0),
                interpolation=_LINEAR,
                mask_interpolation=_NEAREST_RESIZE,
                p=1.0,
            ),
            A.PadIfNeeded(
                min_height=h, min_width=w, border_mode=_CONSTANT, fill=0, fill_mask=fill_mask
            ),
            A.RandomCrop(height=h, width=w),
        ],
        p=p,
    )


def _random_resized_crop(
    fill_mask: int,
    *,
    size: Any,
    scale: Any = (0.25, 1.0),
    ratio: Any = (0.75, 4 / 3),
    p: float = 1.0,
) -> A.BasicTransform:
    return A.RandomResizedCrop(
        size=_pair(size, "random_resized_crop.size"),
        scale=_range(scale, "random_resized_crop.scale", symmetric=False),
        ratio=_range(ratio, "random_resized_crop.ratio", symmetric=False),
        interpolation=_LINEAR,
        mask_interpolation=_NEAREST_RESIZE,
        p=p,
    )


def _random_crop(fill_mask: int, *, size: Any) -> A.BasicTransform:
    """Random crop of ``size``, padding first (image 0, mask ignore) when the image is smaller."""
    h, w = _pair(size, "random_crop.size")
    return A.RandomCrop(
        height=h, width=w, pad_if_needed=True, border_mode=_CONSTANT, fill=0, fill_mask=fill_mask
    )


def _center_crop(fill_mask: int, *, size: Any) -> A.BasicTransform:
    h, w = _pair(size, "center_crop.size")
    return A.CenterCrop(
        height=h, width=w, pad_if_needed=True, border_mode=_CONSTANT, fill=0, fill_mask=fill_mask
    )


def _resize(fill_mask: int, *, size: Any) -> A.BasicTransform:
    h, w = _pair(size, "resize.size")
    return A.Resize(height=h, width=w, interpolation=_LINEAR, mask_interpolation=_NEAREST_RESIZE)


def _pad(fill_mask: int, *, size: Any = None, divisor: int | None = None) -> A.BasicTransform:
    """Pad (bottom/right) to at least ``size`` or to a multiple of ``divisor``."""
    if (size is None) == (divisor is None):
        raise InvalidInputError("pad needs exactly one of 'size' or 'divisor'")
    if size is not None:
        h, w = _pair(size, "pad.size")
        dims: dict[str, Any] = {"min_height": h, "min_width": w}
    else:
        d = int(divisor)  # type: ignore[arg-type]
        if d <= 0:
            raise InvalidInputError(f"pad.divisor must be positive, got {divisor!r}")
        dims = {
            "min_height": None,
            "min_width": None,
            "pad_height_divisor": d,
            "pad_width_divisor": d,
        }
    return A.PadIfNeeded(
        **dims, position="top_left", border_mode=_CONSTANT, fill=0, fill_mask=fill_mask
    )


def _color_jitter(
    fill_mask: int,
    *,
    brightness: float = 0.2,
    contrast: float = 0.2,
    saturation: float = 0.2,
    hue: float = 0.05,
    p: float = 0.5,
) -> A.BasicTransform:
    """torchvision semantics: factors drawn from ``[1 - x, 1 + x]``, hue shift from ``[-h, h]``."""
    return A.ColorJitter(
        brightness=brightness, contrast=contrast, saturation=saturation, hue=hue, p=p
    )


def _brightness_contrast(
    fill_mask: int, *, brightness: Any = 0.2, contrast: Any = 0.2, p: float = 0.5
) -> A.BasicTransform:
    return A.RandomBrightnessContrast(
        brightness_limit=_range(brightness, "brightness_contrast.brightness"),
        contrast_limit=_range(contrast, "brightness_contrast.contrast"),
        p=p,
    )


def _gamma(fill_mask: int, *, gamma: Any = (0.7, 1.5), p: float = 0.5) -> A.BasicTransform:
    """Power-law tone change ``out = in ** g``, ``g`` drawn from ``gamma``: it darkens or
    lifts the mid-tones while black and white stay put, as dusk or a different exposure curve
    does, which a linear brightness shift cannot."""
    lo, hi = _range(gamma, "gamma.gamma", symmetric=False)
    if lo <= 0:
        raise InvalidInputError(f"gamma.gamma must be positive, got {gamma!r}")
    # albumentations takes the exponent in percent.
    return A.RandomGamma(gamma_limit=(lo * 100.0, hi * 100.0), p=p)


def _gauss_noise(fill_mask: int, *, std: Any = (0.02, 0.08), p: float = 0.5) -> A.BasicTransform:
    """Additive Gaussian noise; ``std`` as a fraction of the 0..255 range."""
    return A.GaussNoise(std_range=_range(std, "gauss_noise.std", symmetric=False), p=p)


def _blur(fill_mask: int, *, sigma: Any = (0.5, 1.5), p: float = 0.3) -> A.BasicTransform:
    """Gaussian blur with ``sigma`` in pixels (kernel size follows from sigma)."""
    return A.GaussianBlur(
        blur_limit=0, sigma_limit=_range(sigma, "blur.sigma", symmetric=False), p=p
    )


_BUILDERS: dict[str, Callable[..., A.BasicTransform | A.BaseCompose]] = {
    "hflip": _hflip,
    "vflip": _vflip,
    "rotate90": _rotate90,
    "rotate": _rotate,
    "affine": _affine,
    "elastic": _elastic,
    "perspective": _perspective,
    "scale_crop": _scale_crop,
    "random_resized_crop": _random_resized_crop,
    "random_crop": _random_crop,
    "pad_crop": _random_crop,
    "center_crop": _center_crop,
    "resize": _resize,
    "pad": _pad,
    "color_jitter": _color_jitter,
    "brightness_contrast": _brightness_contrast,
    "gamma": _gamma,
    "gauss_noise": _gauss_noise,
    "blur": _blur,
}

#: Every name a spec entry may use.
TRANSFORM_NAMES: tuple[str, ...] = tuple(sorted(_BUILDERS))

#: Entries kept when ``train=False``: deterministic shape changes; random ones are dropped.
EVAL_KEPT = frozenset({"resize", "center_crop", "pad"})

#: Entries that can add pixels the image never had (padding, rotated-in corners), whose mask
#: value must be ignored by the loss and the metrics.
INVENTS_PIXELS = frozenset(
    {
        "scale_crop",
        "random_crop",
        "pad_crop",
        "center_crop",
        "pad",
        "rotate",
        "affine",
        "elastic",
        "perspective",
    }
)


def build_op(index: int, entry: Any, fill_mask: int) -> A.BasicTransform | A.BaseCompose:
    """Build spec entry number ``index`` (a dict with ``name``); errors name the entry."""
    where = f"transforms[{index}]"
    if not isinstance(entry, dict) or "name" not in entry:
        raise InvalidInputError(
            f"{where} must be a mapping with a 'name' key, got {entry!r}; "
            f"valid names: {', '.join(TRANSFORM_NAMES)}"
        )
    name = entry["name"]
    if name not in _BUILDERS:
        raise unknown_choice("transform", str(name), TRANSFORM_NAMES)
    builder = _BUILDERS[name]
    params = inspect.signature(builder).parameters
    allowed = [k for k, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
    args = {k: v for k, v in entry.items() if k != "name"}
    for key in args:
        if key not in allowed:
            hint = closest_match(key, allowed)
            did_you_mean = f" Did you mean {hint!r}?" if hint else ""
            raise InvalidInputError(
                f"{where} ({name!r}): unknown argument {key!r}.{did_you_mean} "
                f"Valid arguments: {', '.join(allowed)}"
            )
    missing = [k for k in allowed if params[k].default is inspect.Parameter.empty and k not in args]
    if missing:
        raise InvalidInputError(f"{where} ({name!r}): missing argument(s) {', '.join(missing)}")
    try:
        return builder(fill_mask, **args)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{where} ({name!r}): {exc}") from exc
    except (TypeError, ValueError) as exc:  # albumentations validates with pydantic
        cause = exc.__cause__ if hasattr(exc.__cause__, "errors") else exc
        errors = getattr(cause, "errors", None)
        detail = (
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors())
            if callable(errors)
            else str(exc)
        )
        raise InvalidInputError(
            f"{where} ({name!r}): invalid arguments {args!r}: {detail}"
        ) from exc


def resize_op(size: Any) -> A.BasicTransform:
    """Resize to ``size`` ``(height, width)``: linear for the image, nearest for the mask."""
    return _resize(0, size=size)
