"""Instance segmentation from a config or a checkpoint: detector, task, checkpoint metadata
and predictor; bundled as the task's plug-in (:data:`PLUGIN`).

``model.name`` picks the detector (``maskrcnn``, ``yolact``), ``model.encoder`` its backbone
and ``model.encoder_weights`` a local state dict for it, as for semantic models;
``model.options`` are the detector's own options (see
:func:`pixelseg.models.detection.create_detector`). The input normalisation of
``data.normalize`` becomes the detector's ``image_mean``/``image_std``: detectors take
images in 0..1 and normalise inside, after resizing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pixelseg.checkpoints import package_version
from pixelseg.config import ExperimentConfig
from pixelseg.errors import CheckpointError, ConfigError, InvalidInputError
from pixelseg.tasks.base import DataBundle, TaskPlugin
from pixelseg.tasks.common import load_checkpoint_model, refuse_tiling
from pixelseg.tasks.instance import InstanceTask
from pixelseg.tasks.instance_data import build_instance_data

__all__ = [
    "PLUGIN",
    "build_model",
    "build_task",
    "check_checkpoint",
    "checkpoint_meta",
    "model_spec",
    "predictor_from_checkpoint",
    "task_from_checkpoint",
]

#: ``predict.overlay_alpha`` and the score above which detections are drawn and counted.
SCORE_THRESHOLD = 0.5


def model_spec(config: ExperimentConfig, bundle: DataBundle) -> dict[str, Any]:
    """The ``create_detector()`` arguments stored in checkpoints (weights come from the
    checkpoint, so ``encoder_weights`` is not among them)."""
    options = dict(config.model.options)
    if config.model.encoder is not None:
        if "backbone" in options:
            raise ConfigError("model.encoder and model.options.backbone both name the backbone")
        options["backbone"] = config.model.encoder
    options.setdefault("image_mean", list(bundle.mean))
    options.setdefault("image_std", list(bundle.std))
    return {"name": config.model.name, "num_classes": bundle.num_classes, "options": options}


def _create(spec: dict[str, Any], **extra: Any) -> nn.Module:
    from pixelseg.models.detection import create_detector

    return create_detector(spec["name"], spec["num_classes"], **spec["options"], **extra)


def build_model(config: ExperimentConfig, bundle: DataBundle) -> nn.Module:
    """The detector of ``config.model`` for the bundle's classes."""
    extra = {}
    if config.model.encoder_weights is not None:
        extra["backbone_weights"] = config.model.encoder_weights
    try:
        return _create(model_spec(config, bundle), **extra)
    except InvalidInputError as error:
        raise ConfigError(f"model: {error}") from None


def train_extras(
    config: ExperimentConfig, bundle: DataBundle, saved: dict[str, Any] | None
) -> dict[str, Any]:
    """Nothing is counted from the data before an instance run."""
    return {}


def build_task(
    config: ExperimentConfig,
    bundle: DataBundle,
    extras: dict[str, Any] | None = None,
    *,
    with_loss: bool = True,
) -> InstanceTask:
    """The task of a run (the detector computes its own losses, so ``with_loss`` changes
    nothing)."""
    return InstanceTask(
        bundle.classes,
        category_ids=bundle.category_ids,
        colors=bundle.colors,
        score_threshold=SCORE_THRESHOLD,
        overlay_alpha=config.predict.overlay_alpha,
    )


def checkpoint_meta(
    config: ExperimentConfig, bundle: DataBundle, extras: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What a checkpoint carries besides states so that eval and predict need nothing else."""
    return {
        "model_spec": model_spec(config, bundle),
        "classes": bundle.classes,
        "category_ids": list(bundle.category_ids or range(1, bundle.num_classes + 1)),
        "colors": [list(c) for c in bundle.colors] if bundle.colors else None,
        "normalization": {"mean": bundle.mean, "std": bundle.std},
        "in_channels": 3,
        "task": InstanceTask.name,
        "pixelseg_version": package_version(),
    }


def task_from_checkpoint(
    payload: dict[str, Any], config: ExperimentConfig | None = None
) -> InstanceTask:
    """The task a checkpoint describes (for eval and predict)."""
    return InstanceTask(
        list(payload["classes"]),
        category_ids=payload.get("category_ids"),
        colors=payload.get("colors"),
        score_threshold=SCORE_THRESHOLD,
        overlay_alpha=config.predict.overlay_alpha if config is not None else 0.5,
    )


def predictor_from_checkpoint(
    payload: dict[str, Any],
    *,
    device: torch.device | str = "cpu",
    window: tuple[int, ...] | None = None,
    overlap: float = 0.25,
    tta: bool = False,
    where: str = "checkpoint",
) -> nn.Module:
    """The checkpoint's detector in eval mode on ``device``: ``list of images -> list of
    detections``. Tiling and flip TTA are semantic-only (merging detections across tiles
    or flips needs its own NMS), so asking for them is an error."""
    refuse_tiling(
        window,
        tta,
        where,
        "is an instance model: sliding windows (window) and flip TTA (tta) apply to semantic "
        "models only; detectors resize each image themselves",
    )
    return load_checkpoint_model(_create, payload, device, where)


def check_checkpoint(
    payload: dict[str, Any], config: ExperimentConfig, bundle: DataBundle, where: str
) -> None:
    """Refuse to score a checkpoint on data whose classes differ, naming them."""
    classes = list(payload["classes"])
    if classes != bundle.classes:
        raise CheckpointError(
            f"{where} detects classes {classes} but the config's data has {bundle.classes} "
            "(names and order must match)"
        )


def _model_names() -> list[str]:
    from pixelseg.models.detection import available_detectors

    return list(available_detectors())


PLUGIN = TaskPlugin(
    name=InstanceTask.name,
    build_data=build_instance_data,
    build_model=build_model,
    train_extras=train_extras,
    build_task=build_task,
    checkpoint_meta=checkpoint_meta,
    task_from_checkpoint=task_from_checkpoint,
    predictor_from_checkpoint=predictor_from_checkpoint,
    check_checkpoint=check_checkpoint,
    summary=InstanceTask.summary,
    checkpoint_keys=("classes", "model_spec"),
    model_names=_model_names,
    export_keys=(
        "classes",
        "category_ids",
        "colors",
        "normalization",
        "in_channels",
        "model_spec",
    ),
)
