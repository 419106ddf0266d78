"""Application wiring from the validated config, through the task's plug-in.

Every function looks the task up once in :data:`pixelseg.tasks.TASKS` and calls its
builder; what a config key does is read in the plug-in's module (for semantic
segmentation, :mod:`pixelseg.tasks.semantic_data` and :mod:`pixelseg.tasks.semantic_setup`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from pixelseg.config import ExperimentConfig
from pixelseg.tasks import DataBundle, Task, get_plugin
from pixelseg.tasks.semantic_data import PAD_IGNORE, normalization
from pixelseg.tasks.semantic_setup import count_class_weights

__all__ = [
    "PAD_IGNORE",
    "DataBundle",
    "build_datasets",
    "build_model",
    "build_task",
    "checkpoint_meta",
    "count_class_weights",
    "normalization",
    "train_extras",
]


def build_datasets(config: ExperimentConfig, split: dict[str, Any] | None = None) -> DataBundle:
    """Training and validation datasets with their transforms and label metadata;
    ``split`` reuses a split an earlier run saved (``splits.json``)."""
    return get_plugin(config.task).build_data(config, split)


def build_model(config: ExperimentConfig, bundle: DataBundle) -> nn.Module:
    return get_plugin(config.task).build_model(config, bundle)


def train_extras(
    config: ExperimentConfig, bundle: DataBundle, saved: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What a run computes once from its data (class weights), or takes from ``saved``."""
    return get_plugin(config.task).train_extras(config, bundle, saved)


def build_task(
    config: ExperimentConfig,
    bundle: DataBundle,
    extras: dict[str, Any] | None = None,
    *,
    with_loss: bool = True,
) -> Task:
    return get_plugin(config.task).build_task(config, bundle, extras, with_loss=with_loss)


def checkpoint_meta(
    config: ExperimentConfig, bundle: DataBundle, extras: dict[str, Any] | None = None
) -> dict[str, Any]:
    return get_plugin(config.task).checkpoint_meta(config, bundle, extras)
