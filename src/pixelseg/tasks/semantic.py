"""Semantic segmentation as a task: one class label per pixel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import default_collate

from pixelseg.errors import DataError
from pixelseg.metrics import ConfusionMatrix, per_image_scores

__all__ = ["METRIC_NAMES", "SemanticTask", "labels_from_logits", "mask_like"]

#: The scalar metrics of :meth:`SemanticTask.compute_metrics` (``train.best_metric`` choices).
METRIC_NAMES: tuple[str, ...] = (
    "miou",
    "pixel_accuracy",
    "mean_pixel_accuracy",
    "fwiou",
    "mdice",
)


def labels_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """``logits [B, K, *spatial]`` -> labels ``[B, *spatial]``: argmax, or ``> 0`` for one logit."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


def mask_like(mask: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``mask [B, H, W]`` at the spatial size of ``logits [B, C, h, w]`` (nearest, no mixing).

    Labels are never interpolated: each output pixel takes one input label, so the ignore
    value and class ids survive. Returns ``mask`` itself unless the logits are smaller in
    both dimensions (anything else is a mismatch the loss reports).
    """
    size = tuple(logits.shape[-2:])
    if mask.dim() != 3 or not all(s < m for s, m in zip(size, mask.shape[-2:], strict=True)):
        return mask
    resized = F.interpolate(mask[:, None].float(), size=size, mode="nearest")
    return resized[:, 0].to(mask.dtype)


class SemanticTask:
    """Batches of ``image [B, C, H, W]`` and ``mask [B, H, W]``; the model returns logits.

    ``loss_fn`` takes ``(logits, mask)``. When a model supervises deeply it returns a list
    of logits in training mode; the loss is then the weighted sum over that list, with
    ``deep_supervision_weights`` (default: equal weights summing to 1). Logits smaller than
    the mask (a model trained with ``training_logits="network"``) are compared with the
    mask nearest-downsampled to their size.
    """

    def __init__(
        self,
        num_classes: int,
        loss_fn: nn.Module | None,
        *,
        class_names: Sequence[str] | None = None,
        ignore_index: int | None = None,
        deep_supervision_weights: Sequence[float] | None = None,
    ) -> None:
        self.num_classes = num_classes
        self.loss_fn = loss_fn
        self.class_names = list(class_names or [str(i) for i in range(num_classes)])
        self.ignore_index = ignore_index
        self.deep_supervision_weights = (
            list(deep_supervision_weights) if deep_supervision_weights else None
        )

    metric_names = METRIC_NAMES

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Stack samples into a batch; samples of different sizes are a :class:`DataError`
        that names them (training batches need one size: crop or resize in data.augment)."""
        sizes = {tuple(s["image"].shape) for s in samples}
        if len(sizes) > 1:
            shown = ", ".join(
                f"{s.get('name', '?')!r} {'x'.join(map(str, s['image'].shape))}"
                for s in samples[:4]
            )
            raise DataError(
                f"cannot batch images of different sizes ({shown}"
                f"{', ...' if len(samples) > 4 else ''}): add a crop or resize to data.augment, "
                "or set data.batch_size: 1"
            )
        return default_collate(samples)

    def collate_eval(self, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Batches for evaluation: one per image size, in order, so that every image is
        scored whole, unpadded, whatever the sizes in the validation set."""
        groups: dict[tuple[int, ...], list[dict[str, Any]]] = {}
        for sample in samples:
            groups.setdefault(tuple(sample["image"].shape), []).append(sample)
        return [default_collate(group) for group in groups.values()]

    def inputs(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["image"]

    def loss(self, output: Any, batch: dict[str, Any]) -> torch.Tensor:
        if self.loss_fn is None:
            raise RuntimeError("this SemanticTask was built for evaluation, without a loss")
        target = batch["mask"]
        if isinstance(output, list | tuple):
            weights = self.deep_supervision_weights or [1.0 / len(output)] * len(output)
            if len(weights) != len(output):
                raise ValueError(
                    f"loss.deep_supervision_weights has {len(weights)} values but the model "
                    f"returned {len(output)} outputs"
                )
            # Deep-supervision outputs share one size: downsample the mask once per size.
            targets: dict[tuple[int, ...], torch.Tensor] = {}
            for o in output:
                targets.setdefault(tuple(o.shape[-2:]), mask_like(target, o))
            return sum(
                w * self.loss_fn(o, targets[tuple(o.shape[-2:])])
                for w, o in zip(weights, output, strict=True)
            )
        return self.loss_fn(output, mask_like(target, output))

    def predict(self, output: Any) -> torch.Tensor:
        logits = output[-1] if isinstance(output, list | tuple) else output
        return labels_from_logits(logits)

    def new_metrics(self) -> ConfusionMatrix:
        # A binary (one-logit) model still has two classes in the confusion matrix.
        return ConfusionMatrix(max(self.num_classes, 2), ignore_index=self.ignore_index)

    def update_metrics(self, metrics: ConfusionMatrix, output: Any, batch: dict[str, Any]) -> None:
        metrics.update(self.predict(output), batch["mask"])

    def compute_metrics(self, metrics: ConfusionMatrix) -> dict[str, Any]:
        return metrics.compute()

    def per_image_scores(self, prediction: torch.Tensor, target: torch.Tensor) -> list[dict]:
        """Per-image pixel accuracy, and IoU and Dice averaged over the classes present.

        A class counts for an image when it is in its ground truth or its prediction;
        ignored pixels are left out. Returns one dict per image of the batch.
        """
        num_classes = max(self.num_classes, 2)
        scores = per_image_scores(prediction, target, num_classes, self.ignore_index)
        valid = (
            torch.ones_like(target, dtype=torch.bool)
            if self.ignore_index is None
            else target != self.ignore_index
        )
        correct = ((prediction == target) & valid).flatten(1).sum(1).double()
        total = valid.flatten(1).sum(1).double()
        accuracy = (correct / total).cpu()  # NaN where every pixel is ignored
        return [
            {"pixel_accuracy": float(a), "iou": float(i), "dice": float(d)}
            for a, i, d in zip(accuracy, scores["iou"], scores["dice"], strict=True)
        ]

    def denormalize(self, image: torch.Tensor, mean: Sequence[float], std: Sequence[float]):
        """``image [C, H, W]`` normalised -> ``H x W x 3`` uint8 for drawing."""
        array = image.detach().cpu().float().numpy().transpose(1, 2, 0)
        array = array * np.asarray(std, dtype=np.float32) + np.asarray(mean, dtype=np.float32)
        array = np.clip(array * 255.0 + 0.5, 0, 255).astype(np.uint8)
        if array.shape[2] == 1:
            array = np.repeat(array, 3, axis=2)
        return array[:, :, :3]
