"""What every semantic segmentation model shares: input checks, padding to a size multiple, init.

A model subclasses :class:`SegmentationModel` and implements ``forward_padded`` on input whose
height and width are multiples of ``size_multiple`` (the product of its downsamplings); the
base class checks the input, pads it, and crops the logits back to the input size, so every
model accepts any ``H x W``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pixelseg.errors import InvalidInputError, NonFiniteError

__all__ = [
    "TRAINING_LOGITS",
    "SegmentationModel",
    "check_choice",
    "check_image_batch",
    "check_positive_int",
    "decoder_memory_format",
    "init_weights",
    "integer_scale",
    "pad_to_multiple",
    "scaled_length",
]


# Where training-mode logits come back when a model has input_scale != 1 (see below).
TRAINING_LOGITS = ("input", "network")


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is an int >= 1, else raise InvalidInputError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_choice(kind: str, value: object, choices: tuple) -> None:
    """Raise InvalidInputError naming ``value`` and the valid ``choices`` unless it is one."""
    if value not in choices:
        raise InvalidInputError(
            f"unknown {kind} {value!r}. Valid choices: {', '.join(map(repr, choices))}"
        )


def _is_tracing() -> bool:
    """True while TorchScript, tracing, ONNX export or torch.compile capture the graph.

    Data-dependent checks (NaN/Inf) would be baked into a traced graph or break it, so they
    are skipped there; the shape checks still run.
    """
    return (
        torch.jit.is_scripting()
        or torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
        or torch.compiler.is_compiling()
    )


def check_image_batch(x: object, in_channels: int) -> None:
    """Check that ``x`` is a finite floating-point image batch ``[B, in_channels, H, W]``.

    Raises InvalidInputError naming what was expected and what came in.
    """
    expected = f"[B, {in_channels}, H, W]"
    if not isinstance(x, torch.Tensor):
        raise InvalidInputError(f"expected a torch.Tensor {expected}, got {type(x).__name__}")
    if x.ndim != 4:
        raise InvalidInputError(
            f"expected input of shape {expected} (4 dims), got {x.ndim} dims: {tuple(x.shape)}"
        )
    if x.shape[1] != in_channels:
        raise InvalidInputError(
            f"expected {in_channels} input channels (shape {expected}), got {x.shape[1]} "
            f"channels: {tuple(x.shape)}"
        )
    if min(x.shape[0], x.shape[2], x.shape[3]) == 0:
        raise InvalidInputError(f"expected a non-empty batch {expected}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InvalidInputError(f"expected a floating-point input, got dtype {x.dtype}")
    # One reduction instead of an elementwise mask: the sum is non-finite whenever an element
    # is NaN/Inf; a huge finite input may overflow it, so the exact check then decides.
    if (
        not _is_tracing()
        and not bool(torch.isfinite(x.sum(dtype=torch.float32)))
        and not bool(torch.isfinite(x).all())
    ):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise NonFiniteError(
            f"input contains non-finite values ({n_nan} NaN, {n_inf} Inf) in shape {tuple(x.shape)}"
        )


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad ``x [B, C, H, W]`` at the bottom/right so H and W become multiples of ``multiple``.

    Reflect padding keeps border statistics natural; inputs smaller than the pad fall back to
    replicate (reflect needs pad < size). Aligned input is returned as is, without a copy.
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def decoder_memory_format(model: nn.Module, x: torch.Tensor) -> torch.memory_format:
    """Layout for a decoder's activations: channels-last for CPU inference, else contiguous.

    On CPU (oneDNN) the decoders' 3x3 and depthwise convs and the bilinear/nearest
    upsampling run about 10% faster on channels-last tensors at inference (measured with
    benchmarks/models.py), while CPU training is slower in that layout; GPU keeps the
    default. Only the layout changes, not the result.
    """
    if x.device.type == "cpu" and not model.training:
        return torch.channels_last
    return torch.contiguous_format


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal (fan_out, ReLU) for (transposed) convs and linears, zero biases, norms 1/0.

    The scheme torchvision uses for ResNet/VGG/MobileNetV3, so encoders built without running
    torchvision's own init are initialised the same way in distribution. One exception:
    grouped (depthwise) convs use fan_in, because torch's fan_out ignores the groups and
    would make a depthwise kernel sqrt(channels) times too small.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            grouped = isinstance(m, nn.Conv2d) and m.groups > 1
            mode = "fan_in" if grouped else "fan_out"
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


#: Sizes up to which the integer rule of :func:`scaled_length` is checked against ``round``.
EXACT_SCALE_SIZES = 65536


@functools.lru_cache(maxsize=32)
def integer_scale(scale: float) -> tuple[int, int] | None:
    """``(n, d)`` such that rounding ``L * n / d`` half to even, in integers, gives
    ``round(L * scale)`` for every length ``L`` in ``1..EXACT_SCALE_SIZES``; None if no
    fraction with ``d <= 65536`` does.

    Exported graphs (ONNX) compute the network's input size from symbolic integer sizes,
    and exporters cannot translate Python's float ``round``; this integer rule is the same
    function over every size an image can have (exact for dyadic scales such as 0.5 or
    0.75, checked for the others).
    """
    fraction = Fraction(scale).limit_denominator(1 << 16)
    n, d = fraction.numerator, fraction.denominator
    lengths = np.arange(1, EXACT_SCALE_SIZES + 1, dtype=np.int64)
    quotient, remainder = np.divmod(lengths * n, d)
    rounded = quotient + (2 * remainder + quotient % 2) // (d + 1)
    return (n, d) if np.array_equal(rounded, np.round(lengths * scale)) else None


def scaled_length(length: int, scale: float) -> int:
    """``max(round(length * scale), 1)``: the network's size for an input side ``length``.

    While a graph is captured for export, the same value comes from integer arithmetic on
    the symbolic size (see :func:`integer_scale`), so the exported graph keeps dynamic
    height and width and resizes exactly as eager PyTorch does.
    """
    if not _is_tracing():
        return max(round(length * scale), 1)
    exact = integer_scale(scale)
    if exact is None:
        raise InvalidInputError(
            f"input_scale {scale!r} cannot be exported: no fraction n/d with d <= 65536 "
            "rounds every size like Python's round(); use a scale such as 0.5, 0.75 or 0.375"
        )
    n, d = exact
    quotient = (length * n) // d
    remainder = length * n - quotient * d
    # Round half to even: up when 2r > d, or 2r == d and the quotient is odd.
    return torch.sym_max(quotient + (2 * remainder + quotient % 2) // (d + 1), 1)


def check_input_scale(value: object) -> float:
    """Return ``value`` as a float in (0, 4], else raise InvalidInputError naming it."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 4:
        raise InvalidInputError(f"input_scale must be a number in (0, 4], got {value!r}")
    return float(value)


class SegmentationModel(nn.Module):
    """Base class: checks ``x [B, in_channels, H, W]``, pads, runs the net, crops logits back.

    Subclasses implement ``forward_padded(x) -> logits [B, num_classes, H', W']`` (or a list
    of such tensors) for inputs whose H', W' are multiples of ``size_multiple``.

    ``input_scale`` (default 1) resizes the input by that factor before the network and the
    logits back to the input size after it: a model trained on half-size images keeps
    predicting (and being scored) at full resolution in evaluation and prediction alike,
    because the resize lives in the model rather than in each caller.

    ``training_logits`` says where training-mode logits come back when ``input_scale != 1``:
    ``"input"`` (default) at input size like in eval mode, ``"network"`` at the network's
    own resolution, for a loss against the nearest-downsampled mask (DeepLab's
    ``upsample_logits=False``): the upsampling and the full-size loss with their backward
    pass cost about 15% of a CamVid training step at ``input_scale=0.5``.
    """

    def __init__(self, num_classes: int, in_channels: int, size_multiple: int) -> None:
        super().__init__()
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.size_multiple = size_multiple
        self.input_scale = 1.0
        self.training_logits = "input"

    def set_input_scale(self, scale: float, training_logits: str = "input") -> SegmentationModel:
        """Run the network on input resized by ``scale``; logits come back at input size.

        ``training_logits="network"`` keeps training-mode logits at the network's resolution.
        """
        check_choice("training_logits", training_logits, TRAINING_LOGITS)
        self.input_scale = check_input_scale(scale)
        self.training_logits = training_logits
        return self

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Logits for an input already padded to ``size_multiple``."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward_padded")

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Logits ``[B, num_classes, H, W]`` at the resolution of ``x [B, in_channels, H, W]``."""
        return self.run_padded(self.forward_padded, x)

    def run_padded(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor | list[torch.Tensor]],
        x: torch.Tensor,
    ) -> torch.Tensor | list[torch.Tensor]:
        """Check ``x``, pad it to ``size_multiple``, apply ``fn``, crop its output(s) back."""
        check_image_batch(x, self.in_channels)
        if self.input_scale != 1.0:
            return self._run_scaled(fn, x)
        return self._run_padded(fn, x)

    def _run_scaled(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor | list[torch.Tensor]],
        x: torch.Tensor,
    ) -> torch.Tensor | list[torch.Tensor]:
        h, w = x.shape[-2:]
        size = (scaled_length(h, self.input_scale), scaled_length(w, self.input_scale))
        # Antialiasing when shrinking, as image libraries (PIL, OpenCV INTER_AREA) do.
        shrink = self.input_scale < 1.0
        small = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
        out = self._run_padded(fn, small)
        if self.training and self.training_logits == "network":
            return out

        def restore(logits: torch.Tensor) -> torch.Tensor:
            return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)

        return [restore(o) for o in out] if isinstance(out, list) else restore(out)

    def _run_padded(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor | list[torch.Tensor]],
        x: torch.Tensor,
    ) -> torch.Tensor | list[torch.Tensor]:
        h, w = x.shape[-2:]
        padded = pad_to_multiple(x, self.size_multiple)
        out = fn(padded)
        if padded is x:
            return out
        # Cropped logits are copied so callers always get contiguous tensors (.view works).
        if isinstance(out, list):
            return [o[..., :h, :w].contiguous() for o in out]
        return out[..., :h, :w].contiguous()
