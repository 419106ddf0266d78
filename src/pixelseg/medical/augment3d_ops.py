"""The ops behind :mod:`pixelseg.medical.augment3d`, built from validated options.

Spatial ops (``kind = "spatial"``) only draw: a ``3x3`` matrix or a displacement field that
:class:`~pixelseg.medical.augment3d.Augment3D` folds into one sampling grid. ``flip`` draws the
axes to mirror. Intensity ops draw and apply to the image ``[C, D, H, W]``, per channel where
nnU-Net does. Every draw comes from the generator passed in, never a global one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pixelseg.medical.resample3d import rotation_matrix, smooth_field

__all__ = [
    "BrightnessOp",
    "ContrastOp",
    "ElasticOp",
    "FlipOp",
    "GammaOp",
    "NoiseOp",
    "RotateOp",
    "ScaleOp",
]

Range = tuple[float, float]
SpatialDraw = tuple[torch.Tensor | None, torch.Tensor | None]

_SPATIAL_DIMS = (1, 2, 3)


def _fires(p: float, generator: torch.Generator) -> bool:
    """True with probability ``p`` (never for 0, always for 1)."""
    return float(torch.rand((), generator=generator)) < p


def _uniform(bounds: Range, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` float64 values uniform in ``bounds``."""
    lo, hi = bounds
    return lo + torch.rand(n, generator=generator, dtype=torch.float64) * (hi - lo)


def _split_uniform(bounds: Range, n: int, generator: torch.Generator) -> torch.Tensor:
    """nnU-Net's draw of a factor around 1: half of the time from ``[low, 1]``, else from
    ``[max(low, 1), high]``, so that shrinking and growing are equally likely however
    asymmetric the range is (plain uniform when 1 is not inside it)."""
    lo, hi = bounds
    below = torch.rand(n, generator=generator) < 0.5
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    if not lo < 1.0 <= hi:
        return lo + u * (hi - lo)
    return torch.where(below, lo + u * (1.0 - lo), 1.0 + u * (hi - 1.0))


def _per_channel(values: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    return values.to(device=image.device, dtype=image.dtype).view(-1, 1, 1, 1)


@dataclass(frozen=True)
class RotateOp:
    """Rotation by angles (degrees) drawn per axis 0, 1, 2 from ``degrees``."""

    degrees: tuple[Range, Range, Range]
    p: float
    kind = "spatial"

    def draw(self, shape: tuple[int, ...], generator: torch.Generator) -> SpatialDraw:
        if not _fires(self.p, generator):
            return None, None
        u = torch.rand(3, generator=generator, dtype=torch.float64)
        angles = [
            math.radians(lo + float(t) * (hi - lo))
            for (lo, hi), t in zip(self.degrees, u, strict=True)
        ]
        return rotation_matrix(angles), None


@dataclass(frozen=True)
class ScaleOp:
    """Zoom by a factor drawn from ``factors`` (one, or one per axis): the content grows
    for factors > 1, so each output voxel reads the input at ``1 / factor`` the distance."""

    factors: Range
    per_axis: bool
    p: float
    kind = "spatial"

    def draw(self, shape: tuple[int, ...], generator: torch.Generator) -> SpatialDraw:
        if not _fires(self.p, generator):
            return None, None
        factors = _uniform(self.factors, 3 if self.per_axis else 1, generator).expand(3)
        return torch.diag(1.0 / factors), None


@dataclass(frozen=True)
class ElasticOp:
    """A smooth random displacement of peak ``alpha`` voxels over ``sigma`` voxels."""

    alpha: Range
    sigma: Range
    p: float
    kind = "spatial"

    def draw(self, shape: tuple[int, ...], generator: torch.Generator) -> SpatialDraw:
        if not _fires(self.p, generator):
            return None, None
        alpha, sigma = (float(_uniform(r, 1, generator)) for r in (self.alpha, self.sigma))
        if alpha == 0:
            return None, None
        return None, smooth_field(shape, sigma, generator) * alpha


@dataclass(frozen=True)
class FlipOp:
    """Mirror each axis in ``axes`` with probability ``p`` (three draws, always)."""

    axes: tuple[int, ...]
    p: float
    kind = "flip"

    def draw(self, generator: torch.Generator) -> tuple[int, ...]:
        u = torch.rand(3, generator=generator)
        return tuple(a for a in self.axes if float(u[a]) < self.p)


@dataclass(frozen=True)
class NoiseOp:
    """Additive Gaussian noise, standard deviation drawn from ``std``."""

    std: Range
    p: float
    kind = "intensity"

    def apply(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not _fires(self.p, generator):
            return image
        std = float(_uniform(self.std, 1, generator))
        noise = torch.randn(image.shape, generator=generator)
        return image + (noise * std).to(device=image.device, dtype=image.dtype)


@dataclass(frozen=True)
class GammaOp:
    """Per channel: ``x -> ((x - min) / span) ** gamma * span + min``, mean and std restored
    (nnU-Net's ``retain_stats``); on ``-x`` with probability ``invert_p``."""

    gammas: Range
    p: float
    invert_p: float
    kind = "intensity"

    def apply(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not _fires(self.p, generator):
            return image
        invert = _fires(self.invert_p, generator)
        gamma = _per_channel(_split_uniform(self.gammas, image.shape[0], generator), image)
        x = -image if invert else image
        mean = x.mean(_SPATIAL_DIMS, keepdim=True)
        std = x.std(_SPATIAL_DIMS, keepdim=True)
        low = x.amin(_SPATIAL_DIMS, keepdim=True)
        span = x.amax(_SPATIAL_DIMS, keepdim=True) - low
        y = ((x - low) / span.clamp_min(1e-7)).clamp(0, 1) ** gamma * span + low
        y_mean = y.mean(_SPATIAL_DIMS, keepdim=True)
        y_std = y.std(_SPATIAL_DIMS, keepdim=True)
        y = (y - y_mean) / y_std.clamp_min(1e-7) * std + mean
        return -y if invert else y


@dataclass(frozen=True)
class ContrastOp:
    """Per channel: scale around the mean by a factor drawn as nnU-Net does, then clip to
    the channel's former range (nnU-Net's ``preserve_range``)."""

    factors: Range
    p: float
    kind = "intensity"

    def apply(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not _fires(self.p, generator):
            return image
        factor = _per_channel(_split_uniform(self.factors, image.shape[0], generator), image)
        mean = image.mean(_SPATIAL_DIMS, keepdim=True)
        low = image.amin(_SPATIAL_DIMS, keepdim=True)
        high = image.amax(_SPATIAL_DIMS, keepdim=True)
        return torch.maximum(torch.minimum((image - mean) * factor + mean, high), low)


@dataclass(frozen=True)
class BrightnessOp:
    """Per channel: multiply by a factor drawn from ``factors``."""

    factors: Range
    p: float
    kind = "intensity"

    def apply(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not _fires(self.p, generator):
            return image
        return image * _per_channel(_uniform(self.factors, image.shape[0], generator), image)
