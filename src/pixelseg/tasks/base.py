"""The task interface: what the training engine needs to know about a kind of segmentation.

The engine runs one loop for every task. A task says how samples become a batch, how the
model's output becomes a loss, a prediction and metric updates, and how a sample is drawn.
Semantic segmentation is the first; instance, panoptic and volumetric tasks plug in later
without copying the loop.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["Task"]


@runtime_checkable
class Task(Protocol):
    """What the engine calls; every method works on CPU and CUDA tensors alike."""

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Stack dataset samples into a batch dict (``image`` is always present)."""
        ...

    def inputs(self, batch: dict[str, Any]) -> torch.Tensor:
        """The model input of a batch, ``[B, C, *spatial]``."""
        ...

    def loss(self, output: Any, batch: dict[str, Any]) -> torch.Tensor:
        """Scalar training loss from the model's raw output (may be a list when supervised deeply)."""
        ...

    def predict(self, output: Any) -> torch.Tensor:
        """The prediction from an eval-mode output (labels for semantic segmentation)."""
        ...

    def new_metrics(self) -> Any:
        """A fresh streaming metric accumulator."""
        ...

    def update_metrics(self, metrics: Any, output: Any, batch: dict[str, Any]) -> None:
        """Add one batch to the accumulator."""
        ...

    def compute_metrics(self, metrics: Any) -> dict[str, Any]:
        """Final metrics dict (scalars plus per-class lists)."""
        ...
