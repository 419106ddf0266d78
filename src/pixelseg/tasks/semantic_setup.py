"""Semantic segmentation from a config or a checkpoint: model, loss, class weights, task,
checkpoint metadata and the predictor; bundled as the task's plug-in (:data:`PLUGIN`)."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from pixelseg import losses, models
from pixelseg.checkpoints import package_version
from pixelseg.config import ExperimentConfig
from pixelseg.errors import CheckpointError, ConfigError
from pixelseg.tasks.base import DataBundle, TaskPlugin
from pixelseg.tasks.semantic import SemanticTask
from pixelseg.tasks.semantic_data import build_datasets

__all__ = [
    "PLUGIN",
    "build_loss",
    "build_model",
    "build_task",
    "check_checkpoint",
    "checkpoint_meta",
    "count_class_weights",
    "model_spec",
    "predictor_from_checkpoint",
    "task_from_checkpoint",
    "train_extras",
]

log = logging.getLogger(__name__)


def build_model(config: ExperimentConfig, bundle: DataBundle) -> nn.Module:
    """The model named in ``config.model`` for the bundle's classes."""
    spec = model_spec(config, bundle.num_classes)
    if spec["name"] not in models.available():
        from pixelseg.models.detection import DETECTOR_NAMES

        if spec["name"] in DETECTOR_NAMES:
            raise ConfigError(
                f"model.name {spec['name']!r} is an instance segmentation model; set "
                "task: instance (the config's task is 'semantic')"
            )
    return models.create(
        spec["name"],
        spec["num_classes"],
        in_channels=spec["in_channels"],
        encoder=spec["encoder"],
        encoder_weights=config.model.encoder_weights,
        **spec["options"],
    )


def model_spec(config: ExperimentConfig, num_classes: int) -> dict[str, Any]:
    """The ``create()`` arguments stored in checkpoints (weights come from the checkpoint)."""
    return {
        "name": config.model.name,
        "num_classes": num_classes,
        "in_channels": config.data.in_channels,
        "encoder": config.model.encoder,
        "options": dict(config.model.options),
    }


def build_loss(
    config: ExperimentConfig, bundle: DataBundle, class_weights: list[float] | None = None
) -> nn.Module:
    """The weighted loss sum; ``class_weights`` (from :func:`count_class_weights` or a
    checkpoint) weight the cross-entropy, Dice and focal terms."""
    terms = []
    for term in config.loss.terms:
        options = dict(term.options)
        if bundle.ignore_index is not None:
            options.setdefault("ignore_index", bundle.ignore_index)
        if class_weights is not None and term.name in ("ce", "dice", "focal"):
            key = "alpha" if term.name == "focal" else "weight"
            options.setdefault(key, list(class_weights))
        terms.append((term.name, term.weight, options))
    return losses.combine(terms)


def count_class_weights(config: ExperimentConfig, bundle: DataBundle) -> list[float] | None:
    """``loss.class_weights`` computed from the training masks as stored, or None.

    Counted once, without augmentation, so two runs and a run and its resume get the same
    weights; the trainer keeps them in the checkpoint.
    """
    if not config.loss.class_weights:
        return None
    stored = bundle.train_stored if bundle.train_stored is not None else bundle.train
    masks = (stored[i]["mask"] for i in range(len(stored)))  # type: ignore[arg-type]
    counts = losses.count_labels(masks, bundle.num_classes, ignore_index=bundle.ignore_index)
    weights = losses.class_weights(counts, config.loss.class_weights).tolist()
    log.info("class weights (%s): %s", config.loss.class_weights, weights)
    return weights


def train_extras(
    config: ExperimentConfig, bundle: DataBundle, saved: dict[str, Any] | None
) -> dict[str, Any]:
    """The class weights of a run: the resumed checkpoint's (exact resume), else counted."""
    if not config.loss.class_weights:
        return {"class_weights": None}
    if saved is not None and saved.get("class_weights") is not None:
        return {"class_weights": list(saved["class_weights"])}
    return {"class_weights": count_class_weights(config, bundle)}


def build_task(
    config: ExperimentConfig,
    bundle: DataBundle,
    extras: dict[str, Any] | None = None,
    *,
    with_loss: bool = True,
) -> SemanticTask:
    """The task of a run; ``with_loss=False`` for evaluation, which needs no loss (and so
    no class weights)."""
    weights = (extras or {}).get("class_weights")
    return SemanticTask(
        bundle.num_classes,
        build_loss(config, bundle, weights) if with_loss else None,
        class_names=bundle.classes,
        ignore_index=bundle.ignore_index,
        deep_supervision_weights=config.loss.deep_supervision_weights,
        colors=bundle.colors,
        mean=bundle.mean,
        std=bundle.std,
        in_channels=config.data.in_channels,
        overlay_alpha=config.predict.overlay_alpha,
    )


def checkpoint_meta(
    config: ExperimentConfig, bundle: DataBundle, extras: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What a checkpoint carries besides states so that predict needs nothing else."""
    sample = bundle.train[0]  # type: ignore[index]
    return {
        "class_weights": (extras or {}).get("class_weights"),
        "model_spec": model_spec(config, bundle.num_classes),
        "classes": bundle.classes,
        "colors": [list(c) for c in bundle.colors] if bundle.colors else None,
        "ignore_index": bundle.ignore_index,
        "normalization": {"mean": bundle.mean, "std": bundle.std},
        "in_channels": config.data.in_channels,
        "input_size": list(sample["image"].shape[-2:]),
        "task": SemanticTask.name,
        "pixelseg_version": package_version(),
    }


def task_from_checkpoint(
    payload: dict[str, Any], config: ExperimentConfig | None = None
) -> SemanticTask:
    """The task a checkpoint describes (no loss: for eval and predict)."""
    classes = list(payload["classes"])
    return SemanticTask(
        len(classes),
        None,
        class_names=classes,
        ignore_index=payload.get("ignore_index"),
        colors=payload.get("colors"),
        mean=payload["normalization"]["mean"],
        std=payload["normalization"]["std"],
        in_channels=int(payload["in_channels"]),
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
):
    """``normalised images [B, C, H, W] -> float32 logits [B, K, H, W]`` from a checkpoint's
    model, with flip TTA and a sliding window over images larger than ``window``."""
    from pixelseg.inference import compose_predictor, model_from_checkpoint

    model = model_from_checkpoint(payload, device=device, where=where)
    return compose_predictor(model, device=device, window=window, overlap=overlap, tta=tta)


def check_checkpoint(
    payload: dict[str, Any], config: ExperimentConfig, bundle: DataBundle, where: str
) -> None:
    """Refuse to score a checkpoint on data it does not describe, naming the mismatch."""
    classes = list(payload["classes"])
    if classes != bundle.classes:
        raise CheckpointError(
            f"{where} predicts classes {classes} but the config's data has {bundle.classes} "
            "(names and order must match)"
        )
    if int(payload["in_channels"]) != config.data.in_channels:
        raise CheckpointError(
            f"{where} takes {payload['in_channels']}-channel images; data.in_channels is "
            f"{config.data.in_channels}"
        )
    saved = payload["normalization"]
    for what, wanted in (("mean", bundle.mean), ("std", bundle.std)):
        got = list(saved[what])
        if len(got) != len(wanted) or any(
            abs(a - b) > 1e-6 for a, b in zip(got, wanted, strict=True)
        ):
            raise CheckpointError(
                f"{where} was trained with normalisation {what} {got}; the config gives "
                f"{wanted} (data.normalize, data.mean, data.std)"
            )


PLUGIN = TaskPlugin(
    name=SemanticTask.name,
    build_data=build_datasets,
    build_model=build_model,
    train_extras=train_extras,
    build_task=build_task,
    checkpoint_meta=checkpoint_meta,
    task_from_checkpoint=task_from_checkpoint,
    predictor_from_checkpoint=predictor_from_checkpoint,
    check_checkpoint=check_checkpoint,
    summary=SemanticTask.summary,
    checkpoint_keys=("classes", "normalization", "in_channels"),
    model_names=lambda: list(models.available()),
    export_keys=(
        "classes",
        "colors",
        "ignore_index",
        "normalization",
        "in_channels",
        "input_size",
        "model_spec",
    ),
)
