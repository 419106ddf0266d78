"""Ready-made :class:`SegmentationFolder` layouts: CamVid, Pascal VOC and the ISBI membranes.

``PRESETS`` maps a name to its builder ``builder(root, split=..., transform=None, **kw)`` and
``DATASET_INFO`` to its classes, colours, ignore index, channels and normalisation, so the
config layer needs one lookup per name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixelseg.colormap import label_colormap
from pixelseg.data.folder import Color, SegmentationFolder, Transform
from pixelseg.data.split import random_split, read_split_file
from pixelseg.data.synthetic import SHAPE_CLASSES, SHAPE_COLORS, SHAPE_MEAN, SHAPE_STD
from pixelseg.errors import DataError, unknown_choice

__all__ = [
    "CAMVID_CLASSES",
    "CAMVID_COLORS",
    "CAMVID_GROUP_PATTERN",
    "DATASET_INFO",
    "MEMBRANE_CLASSES",
    "MEMBRANE_COLORS",
    "PRESETS",
    "VOC_CLASSES",
    "VOC_COLORS",
    "DatasetInfo",
    "camvid",
    "membrane",
    "voc",
]

CAMVID_CLASSES: list[str] = [
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
    "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
]  # fmt: skip
#: The SegNet CamVid colours, in class order (void, index 11, is black).
CAMVID_COLORS: list[Color] = [
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
]  # fmt: skip
CAMVID_IGNORE = 11
#: CamVid file stems start with their video: ``0001TP_006690`` is a frame of ``0001TP``.
CAMVID_GROUP_PATTERN = r"^([^_]+)_"

VOC_CLASSES: list[str] = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip
VOC_COLORS: list[Color] = label_colormap(len(VOC_CLASSES))
VOC_IGNORE = 255

MEMBRANE_CLASSES: list[str] = ["membrane", "cell"]
MEMBRANE_COLORS: list[Color] = [(0, 0, 0), (255, 255, 255)]


@dataclass(frozen=True)
class DatasetInfo:
    """What the config and reports need to know about a named dataset.

    ``mean``/``std``: per-channel normalisation in 0..1 units, measured on the training images.
    """

    classes: list[str]
    colors: list[Color]
    ignore_index: int | None
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    splits: tuple[str, ...]


DATASET_INFO: dict[str, DatasetInfo] = {
    "camvid": DatasetInfo(
        CAMVID_CLASSES, CAMVID_COLORS, CAMVID_IGNORE, 3,
        (0.4119, 0.4251, 0.4327), (0.3071, 0.3116, 0.3072), ("train", "val", "test"),
    ),
    "voc": DatasetInfo(
        VOC_CLASSES, VOC_COLORS, VOC_IGNORE, 3,
        (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), ("train", "val", "trainval"),
    ),
    "membrane": DatasetInfo(
        MEMBRANE_CLASSES, MEMBRANE_COLORS, None, 1, (0.4912,), (0.1712,), ("all", "train", "val"),
    ),
    "shapes": DatasetInfo(
        SHAPE_CLASSES, SHAPE_COLORS, None, 3, SHAPE_MEAN, SHAPE_STD, ("train", "val"),
    ),
}  # fmt: skip


def _check_split(name: str, split: str) -> None:
    if split not in DATASET_INFO[name].splits:
        raise unknown_choice(f"{name} split", split, DATASET_INFO[name].splits)


def _need_dir(path: Path, layout: str) -> Path:
    if not path.is_dir():
        parent = path.parent
        present = sorted(p.name for p in parent.iterdir()) if parent.is_dir() else []
        raise DataError(
            f"expected folder {str(path)!r} ({layout}); {str(parent)!r} "
            + (f"holds: {', '.join(present)}" if present else "does not exist or is empty")
        )
    return path


def camvid(
    root: str | Path, split: str = "train", transform: Transform | None = None, **kw: Any
) -> SegmentationFolder:
    """CamVid as laid out by SegNet: ``{split}/`` images and ``{split}annot/`` index masks.

    11 classes (``CAMVID_CLASSES``), value 11 = void -> ``ignore_index`` 11.
    """
    _check_split("camvid", split)
    root = Path(root)
    layout = "CamVid layout: train/, trainannot/, val/, valannot/, test/, testannot/"
    kw.setdefault("colors", CAMVID_COLORS)
    return SegmentationFolder(
        _need_dir(root / split, layout),
        _need_dir(root / f"{split}annot", layout),
        CAMVID_CLASSES,
        ignore_index=CAMVID_IGNORE,
        transform=transform,
        **kw,
    )


def _voc_root(root: Path) -> Path:
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    return root


def voc(
    root: str | Path, split: str = "train", transform: Transform | None = None, **kw: Any
) -> SegmentationFolder:
    """Pascal VOC 2012 segmentation: ``JPEGImages/``, ``SegmentationClass/`` palette PNGs and
    ``ImageSets/Segmentation/{split}.txt``. 21 classes with background, 255 = ignore.

    ``root`` may be the ``VOC2012`` folder or a folder holding ``VOC2012`` or ``VOCdevkit``.
    """
    _check_split("voc", split)
    base = _voc_root(Path(root))
    layout = "VOC layout: JPEGImages/, SegmentationClass/, ImageSets/Segmentation/{split}.txt"
    split_file = _need_dir(base / "ImageSets" / "Segmentation", layout) / f"{split}.txt"
    if not split_file.is_file():
        raise DataError(f"VOC split file {str(split_file)!r} not found ({layout})")
    kw.setdefault("colors", VOC_COLORS)
    kw.setdefault("mask_format", "palette")
    return SegmentationFolder(
        _need_dir(base / "JPEGImages", layout),
        _need_dir(base / "SegmentationClass", layout),
        VOC_CLASSES,
        ignore_index=VOC_IGNORE,
        stems=read_split_file(split_file),
        transform=transform,
        **kw,
    )


def membrane(
    root: str | Path,
    split: str = "all",
    transform: Transform | None = None,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    **kw: Any,
) -> SegmentationFolder:
    """ISBI 2012 EM membranes: ``image/`` and ``label/`` grey PNGs, label 0 = membrane,
    255 = cell interior -> classes ``["membrane", "cell"]``. Grey input (``in_channels=1``).

    The set has no official validation split: ``train``/``val`` are a seeded
    :func:`random_split` with ``val_fraction``; ``all`` is every pair (or the ``stems``
    given, e.g. one side of a cross-validation fold).
    """
    _check_split("membrane", split)
    root = Path(root)
    layout = "ISBI membrane layout: image/ and label/ with matching file names"
    images, labels = _need_dir(root / "image", layout), _need_dir(root / "label", layout)
    stems = kw.pop("stems", None)
    if split != "all":
        every = SegmentationFolder(images, labels, MEMBRANE_CLASSES, value_map={0: 0, 255: 1})
        train, val = random_split(every.stems, val_fraction=val_fraction, seed=seed)
        stems = train if split == "train" else val
    kw.setdefault("colors", MEMBRANE_COLORS)
    kw.setdefault("in_channels", 1)
    return SegmentationFolder(
        images,
        labels,
        MEMBRANE_CLASSES,
        value_map={0: 0, 255: 1},
        stems=stems,
        transform=transform,
        **kw,
    )


#: Name -> builder ``(root, split=..., transform=None, **kw) -> SegmentationFolder``.
PRESETS: dict[str, Callable[..., SegmentationFolder]] = {
    "camvid": camvid,
    "voc": voc,
    "membrane": membrane,
}
