"""Task plug-ins: one per kind of segmentation, named in one registry.

``TASKS`` is the only place a task name is looked up: by config validation (the names
are mirrored in :data:`pixelseg.config.TASK_NAMES`, which a test keeps equal), ``train``,
``eval``, ``predict`` and checkpoint loading. Adding a task means adding a plug-in here;
the engine, the evaluator and the CLI do not change.
"""

from __future__ import annotations

from pixelseg.errors import unknown_choice
from pixelseg.tasks.base import DataBundle, MetricAccumulator, Task, TaskPlugin
from pixelseg.tasks.instance import InstanceTask
from pixelseg.tasks.instance_setup import PLUGIN as INSTANCE
from pixelseg.tasks.panoptic import PanopticTask
from pixelseg.tasks.panoptic_setup import PLUGIN as PANOPTIC
from pixelseg.tasks.semantic import SemanticTask
from pixelseg.tasks.semantic_setup import PLUGIN as SEMANTIC
from pixelseg.tasks.volumetric import VolumetricTask
from pixelseg.tasks.volumetric_setup import PLUGIN as VOLUMETRIC

__all__ = [
    "TASKS",
    "DataBundle",
    "InstanceTask",
    "MetricAccumulator",
    "PanopticTask",
    "SemanticTask",
    "Task",
    "TaskPlugin",
    "VolumetricTask",
    "get_plugin",
]

#: Task name -> plug-in.
TASKS: dict[str, TaskPlugin] = {
    "semantic": SEMANTIC,
    "instance": INSTANCE,
    "panoptic": PANOPTIC,
    "volumetric": VOLUMETRIC,
}


def get_plugin(name: str) -> TaskPlugin:
    """The plug-in called ``name``; an unknown name is an error with the closest match."""
    if name not in TASKS:
        raise unknown_choice("task", name, TASKS)
    return TASKS[name]
