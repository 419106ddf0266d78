"""Datasets, augmentation and the synthetic shapes generator.

Every dataset yields dicts ``{"image": float32 [C, H, W], "mask": int64 [H, W], "name": str,
"image_path": str}`` that torch's default collate batches. Nothing here imports the config,
the engine or the CLI.
"""

from __future__ import annotations

from pixelseg.data.folder import MASK_FORMATS, SegmentationFolder, label_colormap
from pixelseg.data.groups import GroupSplit, group_split, groups_of
from pixelseg.data.io import IMAGE_EXTENSIONS, list_images, read_image, read_mask
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
    "MASK_FORMATS",
    "MEMBRANE_CLASSES",
    "MEMBRANE_COLORS",
    "NORMALIZATIONS",
    "PANOPTIC_CATEGORIES",
    "PRESETS",
    "SHAPE_CLASSES",
    "SHAPE_COLORS",
    "STUFF_CLASSES",
    "TRANSFORM_NAMES",
    "VOC_CLASSES",
    "VOC_COLORS",
    "DatasetInfo",
    "GroupSplit",
    "SegmentationFolder",
    "SegmentationTransform",
    "SyntheticShapes",
    "build_transforms",
    "camvid",
    "channel_stats",
    "group_split",
    "groups_of",
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
]
