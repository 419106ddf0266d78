"""Semantic segmentation as a task: one class label per pixel.

Batches are dicts ``image [B, C, H, W]``, ``mask [B, H, W]``, ``name``; the model maps
images to logits. The report (charts, gallery) and the written predictions (index PNG and
overlay) live in :mod:`pixelseg.tasks.semantic_outputs`; building from a config or a
checkpoint in :mod:`pixelseg.tasks.semantic_setup`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import default_collate

from pixelseg.errors import DataError, InvalidInputError
from pixelseg.metrics import ConfusionMatrix, per_image_scores

__all__ = [
    "METRIC_NAMES",
    "SemanticMetrics",
    "SemanticTask",
    "labels_from_logits",
    "mask_like",
]

#: The scalar metrics of :meth:`SemanticMetrics.compute` (``train.best_metric`` choices).
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


class SemanticMetrics:
    """The confusion matrix as the task's accumulator: counts add up, so ``sync`` sums them."""

    def __init__(self, num_classes: int, ignore_index: int | None) -> None:
        # A binary (one-logit) model still has two classes in the confusion matrix.
        self.matrix = ConfusionMatrix(max(num_classes, 2), ignore_index=ignore_index)

    def update(self, prediction: torch.Tensor, batch: dict[str, Any]) -> None:
        self.matrix.update(prediction, batch["mask"])

    def merge(self, other: SemanticMetrics) -> SemanticMetrics:
        self.matrix.merge(other.matrix)
        return self

    def sync(self, group: object | None = None) -> None:
        self.matrix.all_reduce(group)

    def compute(self) -> dict[str, Any]:
        return self.matrix.compute()


class SemanticTask:
    """Per-pixel classification with a loss over logits and a confusion-matrix accumulator.

    ``loss_fn`` takes ``(logits, mask)``; None builds a task for evaluation and prediction.
    When a model supervises deeply it returns a list of logits in training mode; the loss
    is then the weighted sum over that list, with ``deep_supervision_weights`` (default:
    equal weights summing to 1). Logits smaller than the mask (a model trained with
    ``training_logits="network"``) are compared with the mask nearest-downsampled to their
    size. ``colors``, ``mean``, ``std`` and ``in_channels`` describe the images for drawing
    reports and for reading and writing ``predict``'s files.
    """

    name = "semantic"
    metric_names = METRIC_NAMES
    default_best_metric = "miou"
    best_mode = "max"

    def __init__(
        self,
        num_classes: int,
        loss_fn: nn.Module | None,
        *,
        class_names: Sequence[str] | None = None,
        ignore_index: int | None = None,
        deep_supervision_weights: Sequence[float] | None = None,
        colors: Sequence[Sequence[int]] | None = None,
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        in_channels: int = 3,
        overlay_alpha: float = 0.5,
    ) -> None:
        self.num_classes = num_classes
        self.loss_fn = loss_fn
        self.class_names = list(class_names or [str(i) for i in range(num_classes)])
        self.ignore_index = ignore_index
        self.deep_supervision_weights = (
            list(deep_supervision_weights) if deep_supervision_weights else None
        )
        self.colors = [tuple(int(v) for v in c) for c in colors] if colors else None
        self.mean, self.std = list(mean), list(std)
        self.in_channels = in_channels
        self.overlay_alpha = overlay_alpha

    # ------------------------------------------------------------------ batching
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

    def batch_size(self, batch: dict[str, Any]) -> int:
        return int(batch["image"].shape[0])

    # ------------------------------------------------------------------ model calls
    def forward_train(self, model: nn.Module, batch: dict[str, Any]) -> Any:
        return model(batch["image"])

    def forward_eval(self, predictor: Callable[..., Any], batch: dict[str, Any]) -> Any:
        return predictor(batch["image"])

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

    def eval_loss(self, output: Any, batch: dict[str, Any]) -> torch.Tensor | None:
        return None if self.loss_fn is None else self.loss(output, batch)

    def predict(self, output: Any) -> torch.Tensor:
        logits = output[-1] if isinstance(output, list | tuple) else output
        return labels_from_logits(logits)

    # ------------------------------------------------------------------ metrics and reports
    def new_metrics(self) -> SemanticMetrics:
        return SemanticMetrics(self.num_classes, self.ignore_index)

    def sample_rows(self, prediction: torch.Tensor, batch: dict[str, Any]) -> list[dict]:
        """Per image: pixel accuracy, and IoU and Dice averaged over the classes present
        (in its ground truth or its prediction; ignored pixels left out). ``score`` is the
        IoU, which ranks the worst cases."""
        target = batch["mask"]
        scores = per_image_scores(prediction, target, max(self.num_classes, 2), self.ignore_index)
        valid = (
            torch.ones_like(target, dtype=torch.bool)
            if self.ignore_index is None
            else target != self.ignore_index
        )
        correct = ((prediction == target) & valid).flatten(1).sum(1).double()
        total = valid.flatten(1).sum(1).double()
        accuracy = (correct / total).cpu()  # NaN where every pixel is ignored
        names = batch.get("name") or [str(i) for i in range(len(accuracy))]
        return [
            {
                "name": n,
                "pixel_accuracy": float(a),
                "iou": float(i),
                "dice": float(d),
                "score": float(i),
            }
            for n, a, i, d in zip(names, accuracy, scores["iou"], scores["dice"], strict=True)
        ]

    def gallery_item(
        self, prediction: torch.Tensor, batch: dict[str, Any], index: int
    ) -> dict[str, Any]:
        from pixelseg.data.transforms import denormalize

        image = denormalize(batch["image"][index], self.mean, self.std)
        return {
            "image": image if image.shape[2] == 3 else np.repeat(image[:, :, :1], 3, axis=2),
            "target": batch["mask"][index].cpu().numpy(),
            "prediction": prediction[index].cpu().numpy(),
        }

    def write_report(self, out_dir, metrics, accumulator, rows, worst) -> dict[str, Any]:
        from pixelseg.tasks.semantic_outputs import write_semantic_report

        return write_semantic_report(self, Path(out_dir), metrics, accumulator, rows, worst)

    @staticmethod
    def summary(metrics: dict[str, Any]) -> str:
        return f"mIoU {metrics['miou']:.4f}  pixel accuracy {metrics['pixel_accuracy']:.4f}"

    # ------------------------------------------------------------------ predict's files
    def list_inputs(self, inputs: Sequence[str]) -> list[Path]:
        from pixelseg.data import list_images

        return list_images(list(inputs))

    def read_input(self, path: Path) -> tuple[np.ndarray, dict[str, Any]]:
        """``(image uint8 [H, W, C], {"image": normalised [1, C, H, W]})``."""
        from pixelseg.data import read_image
        from pixelseg.data.transforms import normalize_image

        image = read_image(path, in_channels=self.in_channels)
        if image.ndim == 2:
            image = image[:, :, None]
        if image.shape[2] != self.in_channels:
            raise InvalidInputError(
                f"{str(path)!r} has {image.shape[2]} channels but the model expects "
                f"{self.in_channels}"
            )
        tensor = normalize_image(image, self.mean, self.std)
        return image, {"image": tensor.unsqueeze(0), "name": [path.stem]}

    def output_paths(self, out_dir: Path, name: str) -> list[Path]:
        return [Path(out_dir) / f"{name}_mask.png", Path(out_dir) / f"{name}_overlay.png"]

    def write_prediction(
        self, out_dir: Path, name: str, raw: np.ndarray, prediction: torch.Tensor
    ) -> list[Path]:
        from pixelseg.tasks.semantic_outputs import write_mask_and_overlay

        return write_mask_and_overlay(self, self.output_paths(out_dir, name), raw, prediction)

    def finish_predictions(self, out_dir: Path, names: Sequence[str]) -> list[Path]:
        """Nothing to add: each image's files stand alone."""
        return []
