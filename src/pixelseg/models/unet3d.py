"""3D U-Net (Çiçek et al., 2016) in nnU-Net's plain form (Isensee et al., 2021).

Volumes come in the model order ``[B, C, D, H, W]`` = ``[B, C, k, j, i]``: ``D`` runs along
the slice axis ``k`` of a :class:`~pixelseg.medical.volume.Volume`, ``H`` along ``j``, ``W``
along ``i``. Per level two ``3x3x3`` conv + norm + LeakyReLU(0.01); downsampling is the first
conv of a level with stride 2 (nnU-Net's choice over Çiçek's max-pool: learnt, and the
low-resolution grid then sits on the even voxels of the level above, which
:func:`deep_supervision_loss` relies on); upsampling is a ``2x2x2`` transposed conv; skips
are concatenated; a ``1x1x1`` conv is the head.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pixelseg.errors import InvalidInputError, NonFiniteError
from pixelseg.models.base import check_choice, check_positive_int
from pixelseg.models.blocks import group_norm

__all__ = [
    "NORMS_3D",
    "UNet3D",
    "check_volume_batch",
    "deep_supervision_loss",
    "deep_supervision_weights",
    "pad_volume_to_multiple",
]

#: Normalisations a :class:`UNet3D` can use (nnU-Net's default is instance norm).
NORMS_3D = ("instance", "batch", "group")

_NORM_LAYERS: dict[str, Callable[[int], nn.Module]] = {
    "instance": lambda c: nn.InstanceNorm3d(c, eps=1e-5, affine=True),
    "batch": nn.BatchNorm3d,
    "group": group_norm,
}


def check_volume_batch(x: object, in_channels: int) -> None:
    """Check that ``x`` is a finite floating-point volume batch ``[B, in_channels, D, H, W]``.

    Raises InvalidInputError (NonFiniteError for NaN/Inf) naming what was expected and what
    came in. The NaN/Inf check is skipped while a graph is traced or exported.
    """
    expected = f"[B, {in_channels}, D, H, W]"
    if not isinstance(x, torch.Tensor):
        raise InvalidInputError(f"expected a torch.Tensor {expected}, got {type(x).__name__}")
    if x.ndim != 5:
        raise InvalidInputError(
            f"expected a volume batch {expected} (5 dims), got {x.ndim} dims: {tuple(x.shape)}"
        )
    if x.shape[1] != in_channels:
        raise InvalidInputError(
            f"expected {in_channels} input channels (shape {expected}), got {x.shape[1]} "
            f"channels: {tuple(x.shape)}"
        )
    if x.numel() == 0:
        raise InvalidInputError(f"expected a non-empty batch {expected}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InvalidInputError(f"expected a floating-point input, got dtype {x.dtype}")
    tracing = torch.jit.is_tracing() or torch.compiler.is_compiling()
    if not tracing and not bool(torch.isfinite(x.sum(dtype=torch.float32))):
        n_nan, n_inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
        if n_nan or n_inf:
            raise NonFiniteError(
                f"input contains non-finite values ({n_nan} NaN, {n_inf} Inf) in shape "
                f"{tuple(x.shape)}"
            )


def pad_volume_to_multiple(x: torch.Tensor, multiple: Sequence[int]) -> torch.Tensor:
    """Pad ``x [B, C, D, H, W]`` at the far end of each axis to a multiple of ``multiple``
    ``(d, h, w)``; reflect padding, or replicate where an axis is too short to reflect.
    Aligned input is returned as is."""
    sizes = x.shape[-3:]
    pads = [(-n) % m for n, m in zip(sizes, multiple, strict=True)]
    if not any(pads):
        return x
    mode = "reflect" if all(p < n for p, n in zip(pads, sizes, strict=True)) else "replicate"
    pd, ph, pw = pads
    return F.pad(x, (0, pw, 0, ph, 0, pd), mode=mode)


class ConvNormAct3d(nn.Module):
    """Conv (no bias: a norm follows), optional channel dropout, norm, LeakyReLU(0.01)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int],
        stride: tuple[int, int, int],
        norm: str,
        dropout: float,
    ) -> None:
        super().__init__()
        padding = tuple(k // 2 for k in kernel)
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride, padding, bias=False)
        self.dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        self.norm = _NORM_LAYERS[norm](out_channels)
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.dropout(self.conv(x))))


def _stage(
    in_channels: int,
    out_channels: int,
    kernel: tuple[int, int, int],
    stride: tuple[int, int, int],
    norm: str,
    dropout: float,
) -> nn.Sequential:
    return nn.Sequential(
        ConvNormAct3d(in_channels, out_channels, kernel, stride, norm, dropout),
        ConvNormAct3d(out_channels, out_channels, kernel, (1, 1, 1), norm, dropout),
    )


class UNet3D(nn.Module):
    """3D U-Net (Çiçek et al. 2016) in nnU-Net's plain layout, for volumes ``[B, C, D, H, W]``.

    Volumes ``[B, in_channels, D, H, W]`` -> logits ``[B, num_classes, D, H, W]``.

    ``depth`` resolution levels (``depth - 1`` downsamplings) with ``width`` channels at the
    first, doubled per level up to ``max_width`` (nnU-Net caps 3D nets at 320). ``norm``: one
    of :data:`NORMS_3D`. ``dropout``: channel dropout after each conv (nnU-Net: 0).
    ``anisotropic_levels``: the first that many levels use ``1x3x3`` kernels and downsample
    only ``H`` and ``W`` (nnU-Net's plan for thick slices, e.g. 3-5 mm slices of 0.7 mm
    pixels); 0 is isotropic. Any input size works: the input is padded to
    :attr:`size_multiple` internally and the logits are cropped back.

    ``deep_supervision=True`` adds a ``1x1x1`` head to every decoder level but the deepest;
    in training mode ``forward`` then returns ``[full-res logits, 1/2 res, 1/4 res, ...]``
    (``depth - 1`` tensors, nnU-Net's order: full resolution first; level ``l`` has
    ``ceil(n / 2**l)`` voxels along an axis of ``n``), for :func:`deep_supervision_loss`.
    In eval mode it returns the full-resolution logits only and the side heads are skipped.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        *,
        depth: int = 4,
        width: int = 16,
        max_width: int = 320,
        norm: str = "instance",
        deep_supervision: bool = False,
        dropout: float = 0.0,
        anisotropic_levels: int = 0,
    ) -> None:
        super().__init__()
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.depth = check_positive_int("depth", depth)
        check_positive_int("width", width)
        check_positive_int("max_width", max_width)
        check_choice("norm", norm, NORMS_3D)
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, int | float)
            or not 0 <= dropout < 1
        ):
            raise InvalidInputError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        if (
            isinstance(anisotropic_levels, bool)
            or not isinstance(anisotropic_levels, int)
            or not 0 <= anisotropic_levels < depth
        ):
            raise InvalidInputError(
                f"anisotropic_levels must be an integer in 0..depth-1 = 0..{depth - 1}, got "
                f"{anisotropic_levels!r}"
            )
        self.norm = norm
        self.deep_supervision = bool(deep_supervision)
        self.anisotropic_levels = anisotropic_levels
        self.channels = [min(width * 2**level, max_width) for level in range(depth)]
        # Downsampling from level l to l + 1; in-plane only for the anisotropic levels.
        self.strides = [
            (1, 2, 2) if lvl < anisotropic_levels else (2, 2, 2) for lvl in range(depth - 1)
        ]
        kernels = [(1, 3, 3) if lvl < anisotropic_levels else (3, 3, 3) for lvl in range(depth)]
        #: Input sizes the network runs on without padding, per axis ``(D, H, W)``.
        self.size_multiple = tuple(math.prod(s[a] for s in self.strides) for a in range(3))

        stride_into = [(1, 1, 1), *self.strides]
        c_in = [in_channels, *self.channels[:-1]]
        self.encoder = nn.ModuleList(
            _stage(c_in[lvl], self.channels[lvl], kernels[lvl], stride_into[lvl], norm, dropout)
            for lvl in range(depth)
        )
        # upsample[l] takes level l + 1 to level l; decoder[l] merges it with the skip of l.
        self.upsample = nn.ModuleList(
            nn.ConvTranspose3d(self.channels[lvl + 1], self.channels[lvl], s, s, bias=False)
            for lvl, s in enumerate(self.strides)
        )
        self.decoder = nn.ModuleList(
            _stage(
                2 * self.channels[lvl], self.channels[lvl], kernels[lvl], (1, 1, 1), norm, dropout
            )
            for lvl in range(depth - 1)
        )
        self.head = nn.Conv3d(self.channels[0], num_classes, 1)
        side_levels = range(1, depth - 1) if self.deep_supervision else range(0)
        self.side_heads = nn.ModuleList(
            nn.Conv3d(self.channels[lvl], num_classes, 1) for lvl in side_levels
        )
        _init_weights(self)

    def level_strides(self) -> list[tuple[int, int, int]]:
        """Stride ``(d, h, w)`` of each level's grid relative to the input, level 0 first."""
        out = [(1, 1, 1)]
        for s in self.strides:
            out.append(tuple(a * b for a, b in zip(out[-1], s, strict=True)))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Logits ``[B, num_classes, D, H, W]`` for ``x [B, in_channels, D, H, W]`` (a list,
        full resolution first, in training mode with deep supervision)."""
        check_volume_batch(x, self.in_channels)
        size = tuple(x.shape[-3:])
        self._check_deepest_level(size)
        outputs = self._forward_padded(pad_volume_to_multiple(x, self.size_multiple))
        cropped = [
            logits[..., : -(-size[0] // s[0]), : -(-size[1] // s[1]), : -(-size[2] // s[2])]
            for logits, s in zip(outputs, self.level_strides(), strict=False)
        ]
        # Cropped logits are copied so callers always get contiguous tensors (.view works).
        cropped = [
            c if c.shape == o.shape else c.contiguous()
            for c, o in zip(cropped, outputs, strict=True)
        ]
        return cropped if self._supervises_deeply() else cropped[0]

    def _supervises_deeply(self) -> bool:
        return self.deep_supervision and self.training

    def _forward_padded(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        side: list[torch.Tensor] = []
        for lvl in reversed(range(self.depth - 1)):
            x = self.decoder[lvl](torch.cat([skips[lvl], self.upsample[lvl](x)], dim=1))
            if lvl >= 1 and self._supervises_deeply():
                side.append(self.side_heads[lvl - 1](x))
        return [self.head(x), *reversed(side)]

    def _check_deepest_level(self, size: tuple[int, ...]) -> None:
        """Instance norm needs more than one voxel per channel at the deepest level."""
        deepest = self.level_strides()[-1]
        if self.norm == "instance" and all(
            -(-n // s) == 1 for n, s in zip(size, deepest, strict=True)
        ):
            raise InvalidInputError(
                f"input of {'x'.join(map(str, size))} voxels is too small for UNet3D(depth="
                f"{self.depth}) with instance norm: its deepest level would be 1x1x1 voxels. "
                f"Use more than {deepest} voxels (D, H, W) along some axis, or a smaller depth"
            )


def _init_weights(module: nn.Module) -> None:
    """He init for LeakyReLU(0.01) on convs (nnU-Net's InitWeights_He), zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d | nn.ConvTranspose3d):
            nn.init.kaiming_normal_(m.weight, a=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def deep_supervision_weights(n: int) -> list[float]:
    """nnU-Net's weights for ``n`` outputs (full resolution first): ``1 / 2**i``, the lowest
    resolution set to 0 (when ``n > 1``), normalised to sum to 1. ``n=3`` -> ``[2/3, 1/3, 0]``."""
    weights = [1.0 / 2**i for i in range(n)]
    if n > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


def _downsample_target(target: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``target [B, (C,) *spatial]`` at ``size``: every ``s``-th voxel where some power of two
    ``s`` gives ``ceil(n / s) == m`` along each axis (the voxels the network's stride-``s``
    grid is centred on), else nearest-exact interpolation. Labels are never mixed."""
    spatial = target.shape[-len(size) :]
    steps = []
    for n, m in zip(spatial, size, strict=True):
        fits = [2**k for k in range(n.bit_length() + 1) if -(-n // 2**k) == m]
        steps.append(fits[0] if fits else None)
    if all(s is not None for s in steps):
        index = (..., *(slice(None, None, s) for s in steps))
        return target[index]
    has_channels = target.ndim == len(size) + 2
    x = target if has_channels else target.unsqueeze(1)
    resized = F.interpolate(x.float(), size=tuple(size), mode="nearest-exact").to(target.dtype)
    return resized if has_channels else resized.squeeze(1)


def deep_supervision_loss(
    outputs: torch.Tensor | Sequence[torch.Tensor],
    target: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """``sum_i weights[i] * loss_fn(outputs[i], target at outputs[i]'s size)``.

    ``outputs``: a :class:`UNet3D` training output (full resolution first) or one logits
    tensor (then plainly ``loss_fn(outputs, target)``). ``target [B, D, H, W]`` class
    indices (or ``[B, C, D, H, W]``) is reduced to each output's size by taking the voxels
    the output's grid is centred on (every 2nd, 4th, ... voxel; nearest-exact interpolation
    for other sizes), so labels and the ignore value are never interpolated.
    ``weights``: default :func:`deep_supervision_weights` (nnU-Net); given weights are used as
    they are, not normalised. Every output's loss is computed, zero-weighted ones too, so that
    every side head takes part in the backward pass (DistributedDataParallel requires it
    unless ``find_unused_parameters``).
    """
    if isinstance(outputs, torch.Tensor):
        return loss_fn(outputs, target)
    outputs = list(outputs)
    if not outputs:
        raise InvalidInputError("deep_supervision_loss needs at least one output, got none")
    if weights is None:
        weights = deep_supervision_weights(len(outputs))
    weights = [float(w) for w in weights]
    if len(weights) != len(outputs) or any(not math.isfinite(w) or w < 0 for w in weights):
        raise InvalidInputError(
            f"deep supervision weights must be {len(outputs)} finite values >= 0 (one per "
            f"output), got {weights!r}"
        )
    total = outputs[0].new_zeros(())
    for w, logits in zip(weights, outputs, strict=True):
        total = total + w * loss_fn(logits, _downsample_target(target, logits.shape[2:]))
    return total
