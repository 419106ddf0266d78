"""COCO panoptic ground truth (a JSON, a PNG folder, an image folder) as panoptic samples.

The layout panopticapi and detectron2 use: ``panoptic_val2017.json`` lists ``images``,
``categories`` (with ``isthing``) and one annotation per image (``file_name`` of its PNG,
``segments_info``); the PNGs lie in ``panoptic_val2017/`` beside the JSON; the images in
their own folder. Unlike :class:`~pixelseg.data.coco.CocoInstances`, which leaves bad
annotations out with a warning, bad panoptic ground truth is an error: a segment cannot be
dropped without leaving its pixels wrongly labelled. What can be checked from the JSON and
the file headers is checked at construction (missing files, sizes, unknown categories);
what needs the pixels (ids in the PNG against ``segments_info``) when a sample is read.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from pixelseg.data.coco_panoptic import load_panoptic_json, read_panoptic_png
from pixelseg.data.io import probe_image, read_image
from pixelseg.data.panoptic_sample import PanopticCategories, panoptic_targets
from pixelseg.data.transforms import to_tensors
from pixelseg.errors import DataError

__all__ = ["CocoPanoptic"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Entry:
    image_id: int
    image_path: Path
    png_path: Path
    segments: list[dict[str, Any]]


class CocoPanoptic(Dataset):
    """COCO panoptic ground truth: ``images`` folder, ``annotations`` JSON, ``panoptic_dir``.

    ``panoptic_dir`` defaults to the JSON path without ``.json`` (``panoptic_val2017.json`` ->
    ``panoptic_val2017/``). ``keep_empty``: keep images whose ``segments_info`` is empty (all
    VOID); False leaves them out, as they teach nothing. Samples come in the JSON's annotation
    order; each is the dict of :mod:`pixelseg.data.panoptic_sample` (``image`` float32
    ``[3, H, W]`` in 0..1, RGB; thing instances incl. crowds with ``iscrowd`` 1; ``semantic``;
    ``panoptic`` the PNG's ids; ``segments_info``) plus ``image_id``, ``name`` (the image's
    file stem) and ``image_path``.

    Attributes: ``categories`` (the JSON's, in id order), ``thing_category_ids``,
    ``stuff_category_ids``, ``classes`` (thing names, label ``k`` = ``classes[k - 1]``),
    ``stuff_classes``. Errors (:class:`DataError`) name the JSON, the image and the segment
    id or file.
    """

    def __init__(
        self,
        images: str | Path,
        annotations: str | Path,
        panoptic_dir: str | Path | None = None,
        keep_empty: bool = True,
    ) -> None:
        self.image_dir = Path(images)
        self.annotation_file = Path(annotations)
        self.panoptic_dir = (
            self.annotation_file.with_suffix("") if panoptic_dir is None else Path(panoptic_dir)
        )
        where = f"panoptic JSON {str(self.annotation_file)!r}"
        doc = load_panoptic_json(self.annotation_file, require_categories=True)
        self._labels = PanopticCategories.from_list(doc["categories"], where)
        self.categories = self._labels.categories
        self.thing_category_ids = self._labels.thing_category_ids
        self.stuff_category_ids = self._labels.stuff_category_ids
        self.classes = self._labels.classes
        self.stuff_classes = self._labels.stuff_classes
        images_by_id = self._image_records(doc.get("images"), where)
        entries = [self._entry(ann, images_by_id, where) for ann in doc["annotations"]]
        unannotated = len(images_by_id) - len(entries)
        if unannotated:
            logger.warning("%s: %d images have no annotation; left out", where, unannotated)
        self.entries = entries if keep_empty else [e for e in entries if e.segments]
        if not self.entries:
            raise DataError(
                f"{where} has no annotated image"
                + (" with segments (keep_empty=False)" if not keep_empty else "")
            )

    @staticmethod
    def _image_records(images: Any, where: str) -> dict[int, Mapping[str, Any]]:
        if not isinstance(images, list):
            raise DataError(f"{where} has no 'images' list (the image file names are there)")
        by_id: dict[int, Mapping[str, Any]] = {}
        for record in images:
            if (
                not isinstance(record, Mapping)
                or not isinstance(record.get("id"), int)
                or not isinstance(record.get("file_name"), str)
            ):
                raise DataError(
                    f"{where}: image entry {record!r} needs an integer 'id' and a 'file_name'"[:300]
                )
            if record["id"] in by_id:
                raise DataError(f"{where}: image ID {record['id']} is listed twice in 'images'")
            by_id[record["id"]] = record
        return by_id

    def _entry(
        self, ann: Mapping[str, Any], images: Mapping[int, Mapping[str, Any]], where: str
    ) -> _Entry:
        """Check one annotation against ``images``, the files and the categories."""
        image_id = ann["image_id"]
        if image_id not in images:
            raise DataError(f"{where}: annotation of image ID {image_id} has no entry in 'images'")
        record = images[image_id]
        image_path = self.image_dir / record["file_name"]
        png_path = self.panoptic_dir / ann["file_name"]
        where = f"{where}, image {record['file_name']!r} (ID {image_id})"
        for path, what in ((image_path, "image file"), (png_path, "panoptic PNG")):
            if not path.is_file():
                raise DataError(f"{where}: {what} {str(path)!r} does not exist")
        self._labels.check_segments(ann["segments_info"], where)
        image_size, png_size = probe_image(image_path), probe_image(png_path)
        if png_size != image_size:
            raise DataError(
                f"{where}: panoptic PNG {str(png_path)!r} is {png_size[0]}x{png_size[1]} (HxW) "
                f"but the image is {image_size[0]}x{image_size[1]}"
            )
        listed = (record.get("height"), record.get("width"))
        if None not in listed and listed != image_size:
            raise DataError(
                f"{where}: the image file is {image_size[0]}x{image_size[1]} (HxW) but 'images' "
                f"says {listed[0]}x{listed[1]}"
            )
        return _Entry(image_id, image_path, png_path, list(ann["segments_info"]))

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def names(self) -> list[str]:
        """Each sample's name (its image's file stem), in sample order."""
        return [entry.image_path.stem for entry in self.entries]

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.entries[index]
        where = (
            f"panoptic PNG {str(entry.png_path)!r} of image {entry.image_path.name!r} "
            f"(ID {entry.image_id})"
        )
        image = read_image(entry.image_path, 3)
        ids = read_panoptic_png(entry.png_path, image=entry.image_id)
        if ids.shape != image.shape[:2]:
            raise DataError(
                f"{where} is {ids.shape[0]}x{ids.shape[1]} (HxW) but the image is "
                f"{image.shape[0]}x{image.shape[1]}"
            )
        sample = panoptic_targets(ids, entry.segments, self._labels, where=where)
        return {
            "image": to_tensors(image)[0],
            **sample,
            "image_id": int(entry.image_id),
            "name": entry.image_path.stem,
            "image_path": str(entry.image_path),
        }

    def __repr__(self) -> str:
        return (
            f"CocoPanoptic({len(self)} images, {len(self.thing_category_ids)} thing and "
            f"{len(self.stuff_category_ids)} stuff categories, {str(self.annotation_file)!r})"
        )
