"""Datasets, augmentation and the synthetic shapes generator.

Every semantic dataset yields dicts ``{"image": float32 [C, H, W], "mask": int64 [H, W],
"name": str, "image_path": str}`` that torch's default collate batches; the instance sources
(``CocoInstances``, ``PennFudan``, ``SyntheticInstances``) yield torchvision detection
targets (``boxes``, ``labels``, ``masks``, ...), ``build_instance_transforms`` augments them
and ``write_coco`` writes any of them as a COCO dataset. Nothing here imports the config, the
engine or the CLI.
"""

from __future__ import annotations

from pixelseg.data.coco import CocoInstances
from pixelseg.data.coco_write import instances_to_coco, write_coco
from pixelseg.data.folder import MASK_FORMATS, SegmentationFolder, label_colormap
from pixelseg.data.groups import GroupSplit, group_split, groups_of
from pixelseg.data.instance_transforms import (
    INSTANCE_TRANSFORM_NAMES,
    InstanceTransform,
    TransformedInstances,
    build_instance_transforms,
    fit_boxes_to_masks,
)
from pixelseg.data.io import IMAGE_EXTENSIONS, list_images, read_image, read_mask
from pixelseg.data.pennfudan import PENNFUDAN_CLASSES, PennFudan
from pixelseg.data.presets import (
    CAMVID_CLASSES,
    CAMVID_COLORS,
    CAMVID_GROUP_PATTERN,
    DATASET_INFO,
    MEMBRANE_CLASSES,
    MEMBRANE_COLORS,
    PRESETS,
    VOC_CLASSES,
    VOC_COLORS,
    DatasetInfo,
    camvid,
    membrane,
    voc,
)
from pixelseg.data.split import random_partition, random_split, read_split_file
from pixelseg.data.synthetic import (
    PANOPTIC_CATEGORIES,
    SHAPE_CLASSES,
    SHAPE_COLORS,
    STUFF_CLASSES,
    SyntheticShapes,
)
from pixelseg.data.synthetic_instances import SHAPE_CATEGORIES, SyntheticInstances
from pixelseg.data.transforms import (
    NORMALIZATIONS,
    TRANSFORM_NAMES,
    SegmentationTransform,
    build_transforms,
    channel_stats,
    resolve_normalization,
    to_tensors,
)

__all__ = [
    "CAMVID_CLASSES",
    "CAMVID_COLORS",
    "CAMVID_GROUP_PATTERN",
    "DATASET_INFO",
    "IMAGE_EXTENSIONS",
    "INSTANCE_TRANSFORM_NAMES",
    "MASK_FORMATS",
    "MEMBRANE_CLASSES",
    "MEMBRANE_COLORS",
    "NORMALIZATIONS",
    "PANOPTIC_CATEGORIES",
    "PENNFUDAN_CLASSES",
    "PRESETS",
    "SHAPE_CATEGORIES",
    "SHAPE_CLASSES",
    "SHAPE_COLORS",
    "STUFF_CLASSES",
    "TRANSFORM_NAMES",
    "VOC_CLASSES",
    "VOC_COLORS",
    "CocoInstances",
    "DatasetInfo",
    "GroupSplit",
    "InstanceTransform",
    "PennFudan",
    "SegmentationFolder",
    "SegmentationTransform",
    "SyntheticInstances",
    "SyntheticShapes",
    "TransformedInstances",
    "build_instance_transforms",
    "build_transforms",
    "camvid",
    "channel_stats",
    "fit_boxes_to_masks",
    "group_split",
    "groups_of",
    "instances_to_coco",
    "label_colormap",
    "list_images",
    "membrane",
    "random_partition",
    "random_split",
    "read_image",
    "read_mask",
    "read_split_file",
    "resolve_normalization",
    "to_tensors",
    "voc",
    "write_coco",
]
