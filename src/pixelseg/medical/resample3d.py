"""One sampling grid for a volume's geometric augmentation, and its application to image and label.

Coordinates are voxel indices in the model order ``(d, h, w)`` = ``(k, j, i)``, centred on
the volume's centre. An output voxel ``p`` reads the input at ``c + M (p - c + u(p))``: ``u``
a displacement field (elastic deformation) and ``M`` a ``3x3`` matrix (rotation, scaling),
so any number of geometric ops cost one ``grid_sample`` per tensor. Grids use
``align_corners=True``: index 0 and ``n - 1`` are -1 and 1, so a rotation by 90 degrees or a
flip maps voxel centres onto voxel centres.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from pixelseg.errors import DataError

__all__ = ["resample_pair", "rotation_matrix", "sampling_grid", "smooth_field"]

# Labels go through grid_sample as float32, which holds every integer up to 2**24 exactly.
_MAX_EXACT_LABEL = 2**24


def rotation_matrix(angles: Sequence[float]) -> torch.Tensor:
    """``[3, 3]`` float64 rotation by ``angles`` (radians) about axes 0, 1, 2 (``d, h, w``),
    composed in that order; about axis 0 turns the ``(h, w)`` plane, i.e. within a slice."""
    out = torch.eye(3, dtype=torch.float64)
    for axis, angle in enumerate(angles):
        a, b = [i for i in range(3) if i != axis]
        r = torch.eye(3, dtype=torch.float64)
        c, s = math.cos(angle), math.sin(angle)
        r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
        out = out @ r
    return out


def _gaussian_blur(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``field [C, D, H, W]`` along its three spatial axes."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=field.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = field.shape[0]
    out = field[None]
    for axis in range(3):
        shape = [1, 1, 1]
        shape[axis] = kernel.numel()
        pad = [0] * 6
        pad[4 - 2 * axis], pad[5 - 2 * axis] = radius, radius
        weight = kernel.view(1, 1, *shape).expand(channels, 1, *shape)
        out = F.conv3d(F.pad(out, pad, mode="replicate"), weight, groups=channels)
    return out[0]


def smooth_field(shape: Sequence[int], sigma: float, generator: torch.Generator) -> torch.Tensor:
    """A random displacement field ``[3, D, H, W]``, smooth over ``sigma`` voxels, peak 1.

    Uniform noise in [-1, 1] is blurred with a Gaussian of ``sigma`` voxels (batchgenerators'
    elastic deformation) on a grid ``sigma / 2`` times coarser than the volume, then
    interpolated trilinearly to full size: the same smooth field at a fraction of the cost of
    blurring full-size noise. Scaled so that its largest component is 1 in absolute value.
    """
    step = max(1, int(sigma // 2))
    coarse = [max(2, math.ceil((n - 1) / step) + 1) for n in shape]
    noise = torch.rand(3, *coarse, generator=generator) * 2 - 1
    noise = _gaussian_blur(noise, sigma / step)
    field = F.interpolate(noise[None], size=tuple(shape), mode="trilinear", align_corners=True)[0]
    return field / field.abs().amax().clamp_min(1e-12)


def sampling_grid(
    shape: Sequence[int], matrix: torch.Tensor, displacement: torch.Tensor | None = None
) -> torch.Tensor:
    """``grid [1, D, H, W, 3]`` for ``grid_sample(..., align_corners=True)`` reading each
    output voxel ``p`` from ``c + matrix @ (p - c + displacement[:, p])`` (voxel units)."""
    centre = [(n - 1) / 2 for n in shape]
    axes = [torch.arange(n, dtype=torch.float32) - c for n, c in zip(shape, centre, strict=True)]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij"))
    if displacement is not None:
        coords = coords + displacement
    source = (matrix.to(torch.float32) @ coords.reshape(3, -1)).reshape(3, *shape)
    # Index c + x is normalised to x / c; an axis of one voxel (c = 0) reads index 0.
    scale = torch.tensor([1 / c if c > 0 else 0.0 for c in centre]).view(3, 1, 1, 1)
    normalised = source * scale
    return normalised.flip(0).permute(1, 2, 3, 0)[None]  # (d, h, w) -> grid's (x, y, z)


def resample_pair(
    image: torch.Tensor,
    label: torch.Tensor | None,
    grid: torch.Tensor,
    image_fill: float | str,
    label_fill: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``image [C, D, H, W]`` trilinearly and ``label [D, H, W]`` by nearest neighbour on
    ``grid``. Outside the volume the image reads its border voxels (``image_fill="border"``)
    or ``image_fill``, the label ``label_fill``; labels are never interpolated."""
    work = image if image.dtype in (torch.float32, torch.float64) else image.float()
    grid_t = grid.to(device=image.device, dtype=work.dtype)
    if image_fill == "border":
        out = F.grid_sample(work[None], grid_t, "bilinear", "border", align_corners=True)[0]
    else:
        # Sampling (x - fill) with zeros outside, plus fill, reads `fill` outside exactly.
        shifted = work[None] - float(image_fill)
        out = F.grid_sample(shifted, grid_t, "bilinear", "zeros", align_corners=True)[0]
        out = out + float(image_fill)
    if label is None:
        return out.to(image.dtype), None
    low, high = (int(v) - label_fill for v in torch.aminmax(label))
    if max(abs(low), abs(high)) >= _MAX_EXACT_LABEL:
        raise DataError(
            f"label values in [{low + label_fill}, {high + label_fill}] with label_fill "
            f"{label_fill} are too far apart to resample exactly (limit 2**24)"
        )
    shifted_label = (label - label_fill).to(torch.float32)[None, None]
    moved = F.grid_sample(
        shifted_label, grid.to(label.device), "nearest", "zeros", align_corners=True
    )
    return out.to(image.dtype), moved[0, 0].round().to(torch.int64) + label_fill
