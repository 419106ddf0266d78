"""Panoptic segmentation from a config or a checkpoint: model, task, checkpoint metadata and
predictor; bundled as the task's plug-in (:data:`PLUGIN`).

``model.name`` picks the panoptic model (``panoptic_fpn``), ``model.encoder`` its backbone
and ``model.encoder_weights`` a local state dict for it, as for the other tasks;
``model.options`` are the model's own options (see
:func:`pixelseg.models.detection.create_panoptic_model`: the Mask R-CNN options plus
``semantic_channels``, ``semantic_loss_weight`` and ``instance_loss_weight``). The
``panoptic`` section holds the fusion thresholds; a checkpoint keeps them, so ``predict``
fuses as the run validated, and ``eval`` with a config uses the config's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from pixelseg.checkpoints import package_version
from pixelseg.config import ExperimentConfig
from pixelseg.errors import CheckpointError, ConfigError, InvalidInputError
from pixelseg.inference.panoptic_fusion import FusionSettings
from pixelseg.tasks.base import DataBundle, TaskPlugin
from pixelseg.tasks.common import load_checkpoint_model, refuse_tiling
from pixelseg.tasks.panoptic import PanopticTask
from pixelseg.tasks.panoptic_data import build_panoptic_data

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


def _categories(bundle: DataBundle) -> list[dict[str, Any]]:
    if not bundle.categories:
        raise ConfigError("the panoptic task needs data with categories (things and stuff)")
    return bundle.categories


def model_spec(config: ExperimentConfig, bundle: DataBundle) -> dict[str, Any]:
    """The ``create_panoptic_model()`` arguments stored in checkpoints (weights come from the
    checkpoint, so ``encoder_weights`` is not among them)."""
    categories = _categories(bundle)
    options = dict(config.model.options)
    if config.model.encoder is not None:
        if "backbone" in options:
            raise ConfigError("model.encoder and model.options.backbone both name the backbone")
        options["backbone"] = config.model.encoder
    options.setdefault("image_mean", list(bundle.mean))
    options.setdefault("image_std", list(bundle.std))
    return {
        "name": config.model.name,
        "num_things": sum(1 for c in categories if c["isthing"]),
        "num_stuff": sum(1 for c in categories if not c["isthing"]),
        "options": options,
    }


def _create(spec: dict[str, Any], **extra: Any) -> nn.Module:
    from pixelseg.models.detection import create_panoptic_model

    return create_panoptic_model(
        spec["name"], spec["num_things"], spec["num_stuff"], **spec["options"], **extra
    )


def build_model(config: ExperimentConfig, bundle: DataBundle) -> nn.Module:
    """The panoptic model of ``config.model`` for the bundle's categories."""
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
    """Nothing is counted from the data before a panoptic run."""
    return {}


def _fusion(config: ExperimentConfig) -> FusionSettings:
    return FusionSettings(**config.panoptic.model_dump())


def build_task(
    config: ExperimentConfig,
    bundle: DataBundle,
    extras: dict[str, Any] | None = None,
    *,
    with_loss: bool = True,
) -> PanopticTask:
    """The task of a run (the model computes its own losses: ``with_loss`` changes nothing)."""
    return PanopticTask(
        _categories(bundle), fusion=_fusion(config), overlay_alpha=config.predict.overlay_alpha
    )


def checkpoint_meta(
    config: ExperimentConfig, bundle: DataBundle, extras: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What a checkpoint carries besides states so that eval and predict need nothing else."""
    return {
        "model_spec": model_spec(config, bundle),
        "classes": bundle.classes,
        "categories": _categories(bundle),
        "category_ids": list(bundle.category_ids or []),
        "fusion": dataclasses.asdict(_fusion(config)),
        "normalization": {"mean": bundle.mean, "std": bundle.std},
        "in_channels": 3,
        "task": PanopticTask.name,
        "pixelseg_version": package_version(),
    }


def task_from_checkpoint(
    payload: dict[str, Any], config: ExperimentConfig | None = None
) -> PanopticTask:
    """The task a checkpoint describes; the config's fusion thresholds when one is given
    (``eval``), else the checkpoint's (``predict``)."""
    fusion = _fusion(config) if config is not None else FusionSettings(**payload["fusion"])
    return PanopticTask(
        payload["categories"],
        fusion=fusion,
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
    """The checkpoint's model in eval mode on ``device``: ``list of images -> list of
    detections + semantic logits``. Tiling and flip TTA are semantic-only, so asking for
    them is an error."""
    refuse_tiling(
        window,
        tta,
        where,
        "is a panoptic model: sliding windows (window) and flip TTA (tta) apply to semantic "
        "models only; panoptic models resize each image themselves",
    )
    return load_checkpoint_model(_create, payload, device, where)


def check_checkpoint(
    payload: dict[str, Any], config: ExperimentConfig, bundle: DataBundle, where: str
) -> None:
    """Refuse to score a checkpoint on data whose categories differ, naming them."""

    def key(categories: Any) -> list[tuple[int, str, bool]]:
        return [(int(c["id"]), str(c["name"]), bool(c["isthing"])) for c in categories]

    if key(payload["categories"]) != key(_categories(bundle)):
        raise CheckpointError(
            f"{where} segments categories {key(payload['categories'])} (id, name, isthing) but "
            f"the config's data has {key(_categories(bundle))}"
        )


def _model_names() -> list[str]:
    from pixelseg.models.detection import available_panoptic_models

    return list(available_panoptic_models())


PLUGIN = TaskPlugin(
    name=PanopticTask.name,
    build_data=build_panoptic_data,
    build_model=build_model,
    train_extras=train_extras,
    build_task=build_task,
    checkpoint_meta=checkpoint_meta,
    task_from_checkpoint=task_from_checkpoint,
    predictor_from_checkpoint=predictor_from_checkpoint,
    check_checkpoint=check_checkpoint,
    summary=PanopticTask.summary,
    checkpoint_keys=("categories", "model_spec", "fusion"),
    model_names=_model_names,
)
