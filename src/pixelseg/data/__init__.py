"""Datasets, augmentation and the synthetic shapes generator.

Every semantic dataset yields dicts ``{"image": float32 [C, H, W], "mask": int64 [H, W],
"name": str, "image_path": str}`` that torch's default collate batches; the instance sources
(``CocoInstances``, ``PennFudan``, ``SyntheticInstances``) yield torchvision detection
targets (``boxes``, ``labels``, ``masks``, ...), ``build_instance_transforms`` augments them
and ``write_coco`` writes any of them as a COCO dataset. The panoptic sources
(``CocoPanoptic``, ``SyntheticPanoptic``) add ``semantic``, ``panoptic`` and
``segments_info`` to those targets (:mod:`pixelseg.data.panoptic_sample`),
``build_panoptic_transforms`` augments them and ``write_coco_panoptic`` writes them. Nothing
here imports the config, the engine or the CLI.
"""

from __future__ import annotations

from pixelseg.data.coco import CocoInstances
from pixelseg.data.coco_panoptic_dataset import CocoPanoptic
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
from pixelseg.data.panoptic_sample import SEMANTIC_THINGS, SEMANTIC_VOID, PanopticCategories
from pixelseg.data.panoptic_transforms import (
    PANOPTIC_TRANSFORM_NAMES,
    PanopticTransform,
    TransformedPanoptic,
    build_panoptic_transforms,
)
from pixelseg.data.panoptic_write import write_coco_panoptic
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
from pixelseg.data.synthetic_panoptic import SyntheticPanoptic
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
    "PANOPTIC_TRANSFORM_NAMES",
    "PENNFUDAN_CLASSES",
    "PRESETS",
    "SEMANTIC_THINGS",
    "SEMANTIC_VOID",
    "SHAPE_CATEGORIES",
    "SHAPE_CLASSES",
    "SHAPE_COLORS",
    "STUFF_CLASSES",
    "TRANSFORM_NAMES",
    "VOC_CLASSES",
    "VOC_COLORS",
    "CocoInstances",
    "CocoPanoptic",
    "DatasetInfo",
    "GroupSplit",
    "InstanceTransform",
    "PanopticCategories",
    "PanopticTransform",
    "PennFudan",
    "SegmentationFolder",
    "SegmentationTransform",
    "SyntheticInstances",
    "SyntheticPanoptic",
    "SyntheticShapes",
    "TransformedInstances",
    "TransformedPanoptic",
    "build_instance_transforms",
    "build_panoptic_transforms",
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
    "write_coco_panoptic",
]
