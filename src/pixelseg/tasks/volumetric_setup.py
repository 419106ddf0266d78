"""Volumetric segmentation from a config or a checkpoint: model, task, checkpoint metadata
and predictor; bundled as the task's plug-in (:data:`PLUGIN`).

``model.name`` picks the volumetric model (see
:func:`pixelseg.models.volumetric.create_volumetric`): the 3D U-Net ``unet3d`` with
``model.options`` its options (depth, width, norm, deep supervision), or any 2D model
(``unet``, ``deeplabv3plus``, ...) run on the axial slices, with ``model.encoder``,
``model.encoder_weights`` and ``model.options`` as in 2D plus ``context_slices`` (2.5D).
The ``volumetric`` section holds the patch size, the preprocessing and the sliding-window
settings; the ``loss`` section the loss (Dice + cross-entropy is the usual choice). A
checkpoint keeps the preprocessing and inference settings, so ``predict`` prepares and
tiles a new volume exactly as validation did.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
from torch import nn

from pixelseg.checkpoints import package_version
from pixelseg.config import ExperimentConfig
from pixelseg.errors import CheckpointError, ConfigError, InvalidInputError
from pixelseg.models.slicewise import SliceWise
from pixelseg.tasks.base import DataBundle, TaskPlugin
from pixelseg.tasks.common import load_checkpoint_model, refuse_tiling
from pixelseg.tasks.semantic_setup import build_loss
from pixelseg.tasks.volumetric import InferenceSettings, VolumetricTask
from pixelseg.tasks.volumetric_data import Preprocessing, build_volumetric_data

__all__ = [
    "PLUGIN",
    "build_model",
    "build_task",
    "check_checkpoint",
    "checkpoint_meta",
    "inference_settings",
    "predictor_from_checkpoint",
    "task_from_checkpoint",
]

log = logging.getLogger(__name__)


def model_spec(config: ExperimentConfig, num_classes: int) -> dict[str, Any]:
    """The ``create_volumetric()`` arguments stored in checkpoints (``encoder_weights`` is
    not among them: the weights come from the checkpoint)."""
    from pixelseg.models.volumetric import is_slice_model

    model = config.model
    if not is_slice_model(model.name) and (
        model.encoder is not None or model.encoder_weights is not None
    ):
        raise ConfigError(
            f"model.name {model.name!r} is a 3D model and has no encoder: leave model.encoder "
            "and model.encoder_weights unset (2D models on slices take them)"
        )
    return {
        "name": model.name,
        "num_classes": num_classes,
        "in_channels": config.data.in_channels,
        "encoder": model.encoder,
        "options": dict(model.options),
    }


def _create(spec: dict[str, Any], **extra: Any) -> nn.Module:
    from pixelseg.models.volumetric import create_volumetric

    return create_volumetric(
        spec["name"],
        spec["num_classes"],
        in_channels=spec["in_channels"],
        encoder=spec.get("encoder"),  # checkpoints of 3D models written before 2D ones lack it
        **spec["options"],
        **extra,
    )


def build_model(config: ExperimentConfig, bundle: DataBundle) -> nn.Module:
    """The volumetric model of ``config.model`` for the bundle's classes: a 3D model, or a 2D
    one on slices (:class:`~pixelseg.models.slicewise.SliceWise`)."""
    spec = model_spec(config, bundle.num_classes)
    weights = config.model.encoder_weights
    try:
        model = _create(spec, **({"encoder_weights": weights} if weights is not None else {}))
    except InvalidInputError as error:
        raise ConfigError(f"model: {error}") from None
    if isinstance(model, SliceWise):
        _check_slice_sizes(config, model)
    return model


def _check_slice_sizes(config: ExperimentConfig, model: SliceWise) -> None:
    """A 2.5D model needs patches (and windows) deep enough for a slice to see all its
    neighbours: an error naming the key otherwise. A patch H x W that is not a multiple of
    the 2D model's ``size_multiple`` works (the model pads to it and crops back) but
    computes the padding too: a warning naming both."""
    from pixelseg.models.base import scaled_length

    k = model.context_slices
    needed = 2 * k + 1
    for key, size in (
        ("volumetric.patch_size", config.volumetric.patch_size),
        ("eval.window", config.eval.window),
    ):
        if size is not None and len(size) == 3 and size[0] < needed:
            raise ConfigError(
                f"{key} {list(size)} is {size[0]} slice(s) deep, but model.options."
                f"context_slices {k} needs at least {needed} (2k + 1) for a slice to see its "
                f"{k} neighbour(s) on each side; use [{needed}, {size[1]}, {size[2]}] or more"
            )
    multiple = int(getattr(model.model, "size_multiple", 1))
    scale = float(getattr(model.model, "input_scale", 1.0))
    _, h, w = config.volumetric.patch_size
    net = (scaled_length(h, scale), scaled_length(w, scale))
    if net[0] % multiple or net[1] % multiple:
        padded = [-(-n // multiple) * multiple for n in net]
        log.warning(
            "volumetric.patch_size %s: 2D model %r pads each slice's %dx%d to %dx%d (multiples "
            "of %d) and computes the padding too; patch H and W that are multiples of %d "
            "waste nothing",
            list(config.volumetric.patch_size),
            config.model.name,
            *net,
            *padded,
            multiple,
            multiple,
        )


def train_extras(
    config: ExperimentConfig, bundle: DataBundle, saved: dict[str, Any] | None
) -> dict[str, Any]:
    """Nothing is counted from the data before a volumetric run."""
    return {}


def inference_settings(config: ExperimentConfig) -> InferenceSettings:
    """Sliding-window settings: the patch size unless ``eval.window`` names another."""
    settings = config.volumetric
    window = tuple(config.eval.window) if config.eval.window else tuple(settings.patch_size)
    if len(window) != 3:
        raise ConfigError(f"eval.window needs three sizes (D, H, W) for volumes, got {window}")
    return InferenceSettings(
        window=window,  # type: ignore[arg-type]
        overlap=settings.overlap,
        batch_size=settings.sw_batch_size,
        tta=settings.tta or config.eval.tta,
        memory_budget_mb=settings.memory_budget_mb,
        largest_component=settings.largest_component,
    )


def build_task(
    config: ExperimentConfig,
    bundle: DataBundle,
    extras: dict[str, Any] | None = None,
    *,
    with_loss: bool = True,
) -> VolumetricTask:
    """The task of a run; ``with_loss=False`` for evaluation."""
    return VolumetricTask(
        bundle.classes,
        build_loss(config, bundle) if with_loss else None,
        inference=inference_settings(config),
        preprocessing=Preprocessing.from_config(config.volumetric),
        tolerance=config.volumetric.nsd_tolerance_mm,
        restrict_to_lung=config.volumetric.restrict_to_lung,
        deep_supervision_weights=config.loss.deep_supervision_weights,
    )


def checkpoint_meta(
    config: ExperimentConfig, bundle: DataBundle, extras: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What a checkpoint carries besides states so that eval and predict need nothing else."""
    return {
        "model_spec": model_spec(config, bundle.num_classes),
        "classes": bundle.classes,
        "in_channels": config.data.in_channels,
        "preprocessing": Preprocessing.from_config(config.volumetric).to_dict(),
        "inference": dataclasses.asdict(inference_settings(config)),
        "nsd_tolerance_mm": config.volumetric.nsd_tolerance_mm,
        "restrict_to_lung": config.volumetric.restrict_to_lung,
        "task": VolumetricTask.name,
        "pixelseg_version": package_version(),
    }


def task_from_checkpoint(
    payload: dict[str, Any], config: ExperimentConfig | None = None
) -> VolumetricTask:
    """The task a checkpoint describes (no loss); a config's inference settings win."""
    if config is not None:
        inference = inference_settings(config)
    else:
        saved = dict(payload["inference"])
        saved["window"] = tuple(saved["window"])
        inference = InferenceSettings(**saved)
    return VolumetricTask(
        list(payload["classes"]),
        None,
        inference=inference,
        preprocessing=Preprocessing.from_dict(payload["preprocessing"]),
        tolerance=float(payload.get("nsd_tolerance_mm", 1.0)),
        restrict_to_lung=bool(payload.get("restrict_to_lung", False)),
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
    """The checkpoint's model in eval mode on ``device``. The task tiles volumes with its
    own window (the patch size), so ``window``/``overlap``/``tta`` here are refused: set
    ``volumetric.overlap``/``volumetric.tta`` (or ``eval.window``) in the config."""
    refuse_tiling(
        window,
        tta,
        where,
        "is a volumetric model: it always predicts window by window over the patch size; "
        "set volumetric.tta / eval.window in a config to change that",
    )
    return load_checkpoint_model(_create, payload, device, where)


def check_checkpoint(
    payload: dict[str, Any], config: ExperimentConfig, bundle: DataBundle, where: str
) -> None:
    """Refuse to score a checkpoint on data or preprocessing it was not trained with."""
    classes = list(payload["classes"])
    if classes != bundle.classes:
        raise CheckpointError(
            f"{where} predicts classes {classes} but the config's data has {bundle.classes}"
        )
    wanted = Preprocessing.from_config(config.volumetric).to_dict()
    if payload["preprocessing"] != wanted:
        raise CheckpointError(
            f"{where} was trained on volumes prepared as {payload['preprocessing']}; the "
            f"config prepares them as {wanted} (volumetric.intensity/window/spacing)"
        )


def _model_names() -> list[str]:
    from pixelseg.models.volumetric import available_volumetric

    return list(available_volumetric())


PLUGIN = TaskPlugin(
    name=VolumetricTask.name,
    build_data=build_volumetric_data,
    build_model=build_model,
    train_extras=train_extras,
    build_task=build_task,
    checkpoint_meta=checkpoint_meta,
    task_from_checkpoint=task_from_checkpoint,
    predictor_from_checkpoint=predictor_from_checkpoint,
    check_checkpoint=check_checkpoint,
    summary=VolumetricTask.summary,
    checkpoint_keys=("classes", "model_spec", "preprocessing", "inference"),
    model_names=_model_names,
    export_keys=(
        "classes",
        "in_channels",
        "preprocessing",
        "inference",
        "nsd_tolerance_mm",
        "restrict_to_lung",
        "model_spec",
    ),
)
