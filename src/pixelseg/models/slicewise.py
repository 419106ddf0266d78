"""A 2D segmentation model applied to the axial slices of a volume (optionally 2.5D).

Volumes come in the model order ``[N, C, D, H, W]`` = ``[N, C, k, j, i]``: ``D`` runs along
the slice axis ``k`` of a :class:`~pixelseg.medical.volume.Volume`, so a ``[H, W]`` plane is
one acquired (axial, for CT) slice. :class:`SliceWise` folds ``D`` into the batch, runs the
2D model on the ``N * D`` slices at once and unfolds its logits back to
``[N, K, D, H, W]``: exactly the 2D model applied slice by slice, one volume contract for
the volumetric task's patches, sliding window and reports.

``context_slices=k`` makes it 2.5D: each slice is stacked with its ``k`` neighbours on each
side as extra input channels (the volume's first and last slices repeated beyond its ends),
so the 2D model sees some of the third dimension at 2D cost. Its ``in_channels`` is then
``C * (2k + 1)``, ordered channel-major: input channel ``c`` of slice ``d + j`` (``j`` in
``-k..k``) is 2D channel ``c * (2k + 1) + j + k``. Only the slices inside the given tensor
are seen, so a patch's (or window's) first and last ``k`` slices see repeated neighbours;
train on patches at least ``2k + 1`` slices deep.
"""

from __future__ import annotations

import torch
from torch import nn

from pixelseg.errors import InvalidInputError
from pixelseg.models.unet3d import check_volume_batch

__all__ = ["SliceWise", "check_context_slices", "slice_stack"]


def check_context_slices(value: object) -> int:
    """Return ``value`` if it is an integer >= 0, else raise InvalidInputError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"context_slices must be an integer >= 0, got {value!r}")
    return value


def slice_stack(volumes: torch.Tensor, context_slices: int = 0) -> torch.Tensor:
    """``volumes [N, C, D, H, W]`` -> slices ``[N * D, C * (2k + 1), H, W]`` (``k =
    context_slices``), slice ``n * D + d`` holding slices ``d - k .. d + k`` of volume ``n``
    (clamped to ``0 .. D - 1``) channel-major, as the module docstring says."""
    n, c, d, h, w = volumes.shape
    if context_slices == 0:
        return volumes.transpose(1, 2).reshape(n * d, c, h, w)
    offsets = torch.arange(-context_slices, context_slices + 1, device=volumes.device)
    index = (torch.arange(d, device=volumes.device)[:, None] + offsets).clamp(0, d - 1)
    stacked = volumes[:, :, index]  # [N, C, D, 2k + 1, H, W]
    return stacked.permute(0, 2, 1, 3, 4, 5).reshape(n * d, c * (2 * context_slices + 1), h, w)


class SliceWise(nn.Module):
    """A 2D model on every slice: volumes ``[N, in_channels, D, H, W]`` -> logits
    ``[N, num_classes, D, H, W]``.

    ``model`` maps ``[B, in_channels * (2 * context_slices + 1), H, W]`` to logits
    ``[B, num_classes, H, W]`` (any :func:`pixelseg.models.create` model; it pads H and W to
    its size multiple itself). ``context_slices`` (default 0, plain 2D) neighbours on each
    side become extra channels (2.5D; see the module docstring). A model returning several
    logits (deep supervision) is refused: the result must be one logits volume.
    """

    def __init__(self, model: nn.Module, in_channels: int = 1, context_slices: int = 0) -> None:
        super().__init__()
        check_context_slices(context_slices)
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise InvalidInputError(f"in_channels must be an integer >= 1, got {in_channels!r}")
        expected = in_channels * (2 * context_slices + 1)
        takes = getattr(model, "in_channels", expected)
        if takes != expected:
            raise InvalidInputError(
                f"the 2D model takes {takes} channels, but {in_channels} volume channel(s) with "
                f"context_slices={context_slices} give {expected} (in_channels * (2k + 1))"
            )
        self.model = model
        self.in_channels = in_channels
        self.context_slices = context_slices
        self.num_classes = getattr(model, "num_classes", None)

    @property
    def slice_channels(self) -> int:
        """Channels the 2D model reads per slice: ``in_channels * (2 * context_slices + 1)``."""
        return self.in_channels * (2 * self.context_slices + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes, D, H, W]`` for ``x [N, in_channels, D, H, W]``."""
        check_volume_batch(x, self.in_channels)
        n, _, d, h, w = x.shape
        logits = self.model(slice_stack(x, self.context_slices))
        if not isinstance(logits, torch.Tensor):
            raise InvalidInputError(
                f"SliceWise needs one logits tensor per slice batch, but the 2D model returned "
                f"{type(logits).__name__} (deep supervision?); build it without"
            )
        if logits.ndim != 4 or logits.shape[0] != n * d or tuple(logits.shape[-2:]) != (h, w):
            raise InvalidInputError(
                f"the 2D model returned logits {tuple(logits.shape)} for {n * d} slices of "
                f"{h}x{w}; SliceWise needs [{n * d}, K, {h}, {w}] (training_logits='network'?)"
            )
        k = logits.shape[1]
        # Back to [N, K, D, H, W], contiguous so that losses and callers may .view it.
        return logits.reshape(n, d, k, h, w).transpose(1, 2).contiguous()
