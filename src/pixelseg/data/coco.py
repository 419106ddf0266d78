"""COCO instances: an ``instances.json`` and an image folder, as torchvision detection targets.

Each sample is a dict (see :class:`CocoInstances`) that torchvision's Mask R-CNN takes
directly. Category ids (COCO's 1..90 with gaps, or any ids) are remapped to contiguous
labels 1..K in id order, 0 being background as torchvision detection models expect;
``label_to_category_id`` maps them back when writing results.

Bad input does not stop the dataset from loading: images missing on disk or whose size
differs from the JSON, annotations on unknown images or categories, polygons with fewer than
3 points, boxes outside the image (clipped) or of zero area, unusable segmentations are
each reported in one warning naming the file or the annotation id and what is wrong, then
left out (``problems`` lists them all). An empty or malformed annotation file is an error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pixelseg.coco_format import mask_api, segmentation_to_rle, xywh_to_xyxy
from pixelseg.data.io import probe_image, read_image
from pixelseg.data.transforms import to_tensors
from pixelseg.errors import DataError

__all__ = ["CocoInstances", "read_coco_json"]

logger = logging.getLogger(__name__)

_LOGGED = 20  # problems logged one by one before a summary line


def read_coco_json(path: str | Path) -> dict[str, Any]:
    """Parse a COCO instances file; DataError naming the file when it is empty or malformed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read COCO annotation file {str(path)!r}: {exc}") from exc
    if not text.strip():
        raise DataError(f"COCO annotation file {str(path)!r} is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"COCO annotation file {str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DataError(f"COCO annotation file {str(path)!r} must hold a JSON object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(
                f"COCO annotation file {str(path)!r} has no {key!r} list "
                f"(keys found: {sorted(data)})"
            )
    if not data["categories"]:
        raise DataError(f"COCO annotation file {str(path)!r} lists no categories")
    return data


@dataclass
class _Image:
    image_id: int
    path: Path
    height: int
    width: int
    annotations: list[dict[str, Any]] = field(default_factory=list)


def _check_box(ann: Mapping[str, Any], height: int, width: int) -> tuple[np.ndarray | None, str]:
    """Clipped ``(x1, y1, x2, y2)`` of the annotation's bbox, or None; plus what was wrong."""
    box = ann.get("bbox")
    if box is None:
        return None, ""
    values = np.asarray(box, dtype=np.float64) if isinstance(box, list | tuple) else None
    if values is None or values.shape != (4,) or not np.isfinite(values).all():
        return None, f"bbox {box!r} is not 4 finite numbers [x, y, w, h]; taken from its mask"
    xyxy = xywh_to_xyxy(values[None])[0]
    clipped = np.clip(xyxy, 0, [width, height, width, height])
    problem = ""
    if not np.array_equal(clipped, xyxy):
        problem = f"bbox {box!r} extends outside the {width}x{height} image; clipped"
    return clipped, problem


class CocoInstances(Dataset):
    """A COCO instances dataset: ``annotation_file`` (``instances.json``) over ``image_dir``.

    Sample ``i`` is a dict:

    - ``image``: float32 ``[3, H, W]`` in 0..1, the input torchvision detection models take
      (they normalise inside); grey images are repeated to 3 channels.
    - ``boxes``: float32 ``[N, 4]`` ``(x1, y1, x2, y2)`` in pixels, from the annotation's
      ``bbox`` clipped to the image (from the mask when the annotation has none).
    - ``labels``: int64 ``[N]`` in 1..K; ``masks``: uint8 ``[N, H, W]`` in {0, 1};
      ``iscrowd``: int64 ``[N]`` (crowds are kept: training usually drops them, evaluation
      ignores them); ``area``: float64 ``[N]`` the annotation's ``area`` (COCO's area ranges
      use it, so it is kept exact), the mask's pixel count when absent.
    - ``image_id`` (int), ``name`` (file stem), ``image_path`` (str).

    ``keep_empty``: keep images without (usable) annotations, which teach a detector what is
    not an object; False drops them. Segmentations may be polygons, uncompressed or
    compressed RLE. Every image's header is read at construction to check its size.
    """

    def __init__(
        self, image_dir: str | Path, annotation_file: str | Path, keep_empty: bool = True
    ) -> None:
        mask_api()  # a missing pycocotools fails here, naming the extra
        self.image_dir = Path(image_dir)
        self.annotation_file = Path(annotation_file)
        data = read_coco_json(self.annotation_file)
        self.problems: list[str] = []
        self.categories = self._read_categories(data["categories"])
        self.classes = [c["name"] for c in self.categories]
        self.label_to_category_id = {i + 1: c["id"] for i, c in enumerate(self.categories)}
        self.category_id_to_label = {cid: label for label, cid in self.label_to_category_id.items()}
        images = self._read_images(data["images"])
        self._read_annotations(data["annotations"], images)
        self.images = [im for im in images.values() if im is not None]
        if not keep_empty:
            self.images = [im for im in self.images if im.annotations]
        if len(self.problems) > _LOGGED:
            logger.warning(
                "%s: %d more problems not shown (see the dataset's .problems)",
                self.annotation_file,
                len(self.problems) - _LOGGED,
            )
        if not self.images:
            raise DataError(
                f"COCO dataset {str(self.annotation_file)!r} has no usable image"
                + (" with annotations (keep_empty=False)" if not keep_empty else "")
            )

    def _problem(self, message: str) -> None:
        self.problems.append(message)
        if len(self.problems) <= _LOGGED:
            logger.warning("%s: %s", self.annotation_file, message)

    def _read_categories(self, entries: list[Any]) -> list[dict[str, Any]]:
        cats: dict[int, dict[str, Any]] = {}
        for cat in entries:
            if (
                not isinstance(cat, Mapping)
                or not isinstance(cat.get("id"), int)
                or "name" not in cat
            ):
                raise DataError(
                    f"{str(self.annotation_file)!r}: category {cat!r} needs an integer 'id' "
                    "and a 'name'"
                )
            if cat["id"] in cats:
                raise DataError(f"{str(self.annotation_file)!r}: category id {cat['id']} repeats")
            cats[cat["id"]] = dict(cat)
        return [cats[i] for i in sorted(cats)]

    def _read_images(self, entries: list[Any]) -> dict[Any, _Image | None]:
        """Image id -> entry, or None for an image left out (its annotations go silently)."""
        images: dict[Any, _Image | None] = {}
        for img in entries:
            keys = ("id", "file_name", "height", "width")
            if not isinstance(img, Mapping) or any(k not in img for k in keys):
                raise DataError(
                    f"{str(self.annotation_file)!r}: image entry {img!r} needs {', '.join(keys)}"
                )
            if img["id"] in images:
                raise DataError(f"{str(self.annotation_file)!r}: image id {img['id']!r} repeats")
            path = self.image_dir / img["file_name"]
            images[img["id"]] = None
            if not path.is_file():
                self._problem(f"image {img['id']}: file {str(path)!r} not found; left out")
                continue
            try:
                size = probe_image(path)
            except DataError as exc:
                self._problem(f"image {img['id']}: {exc}; left out")
                continue
            if size != (img["height"], img["width"]):
                self._problem(
                    f"image {img['id']}: file {str(path)!r} is {size[0]}x{size[1]} (HxW) but the "
                    f"annotation file says {img['height']}x{img['width']}; left out"
                )
                continue
            images[img["id"]] = _Image(img["id"], path, img["height"], img["width"])
        return images

    def _read_annotations(self, entries: list[Any], images: dict[Any, _Image | None]) -> None:
        for ann in entries:
            aid = ann.get("id") if isinstance(ann, Mapping) else None
            where = f"annotation {aid!r}"
            if not isinstance(ann, Mapping):
                self._problem(f"annotation entry {ann!r} is not an object; left out")
            elif ann.get("image_id") not in images:
                self._problem(
                    f"{where}: image_id {ann.get('image_id')!r} not in 'images'; left out"
                )
            elif ann.get("category_id") not in self.category_id_to_label:
                self._problem(
                    f"{where}: category_id {ann.get('category_id')!r} not in 'categories' "
                    f"{sorted(self.category_id_to_label)}; left out"
                )
            elif images[ann["image_id"]] is not None:
                self._add_annotation(ann, images[ann["image_id"]], where)

    def _add_annotation(self, ann: Mapping[str, Any], image: _Image, where: str) -> None:
        rle, problems = segmentation_to_rle(ann.get("segmentation"), image.height, image.width)
        for problem in problems:
            self._problem(f"{where} ({image.path.name}): {problem}" + ("" if rle else "; left out"))
        if rle is None:
            if not problems:
                self._problem(f"{where} ({image.path.name}): no usable segmentation; left out")
            return
        box, problem = _check_box(ann, image.height, image.width)
        if problem:
            self._problem(f"{where} ({image.path.name}): {problem}")
        if box is None:
            box = xywh_to_xyxy(np.asarray(mask_api().toBbox(rle))[None])[0]
        if box[2] <= box[0] or box[3] <= box[1]:
            self._problem(
                f"{where} ({image.path.name}): box {box.tolist()} has zero area; left out"
            )
            return
        area = ann.get("area")
        valid_area = isinstance(area, int | float) and np.isfinite(area) and area >= 0
        image.annotations.append(
            {
                "rle": rle,
                "box": box,
                "label": self.category_id_to_label[ann["category_id"]],
                "iscrowd": int(bool(ann.get("iscrowd", 0))),
                "area": float(area) if valid_area else float("nan"),
            }
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.images[index]
        image = read_image(entry.path, 3)
        if image.shape[:2] != (entry.height, entry.width):
            raise DataError(f"image {str(entry.path)!r} changed size since the dataset was built")
        anns = entry.annotations
        if anns:
            masks = mask_api().decode([a["rle"] for a in anns]).transpose(2, 0, 1)
        else:
            masks = np.zeros((0, entry.height, entry.width), dtype=np.uint8)
        area = np.array([a["area"] for a in anns], dtype=np.float64)
        missing = np.isnan(area)
        area[missing] = masks[missing].sum(axis=(1, 2))
        return {
            "image": to_tensors(image)[0],
            "boxes": torch.as_tensor(
                np.array([a["box"] for a in anns]).reshape(-1, 4), dtype=torch.float32
            ),
            "labels": torch.as_tensor([a["label"] for a in anns], dtype=torch.int64),
            "masks": torch.from_numpy(np.ascontiguousarray(masks, dtype=np.uint8)),
            "iscrowd": torch.as_tensor([a["iscrowd"] for a in anns], dtype=torch.int64),
            "area": torch.as_tensor(area, dtype=torch.float64),
            "image_id": int(entry.image_id),
            "name": entry.path.stem,
            "image_path": str(entry.path),
        }
