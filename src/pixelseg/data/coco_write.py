"""Writing instance samples as a COCO dataset (``instances.json`` + an image folder).

Any instance source (:class:`~pixelseg.data.coco.CocoInstances`,
:class:`~pixelseg.data.pennfudan.PennFudan`, ...) yields the same sample dicts, so one writer
takes them all to other tools (detectron2, MMDetection, pycocotools). Masks are written as
compressed RLE, which is lossless: reading the written dataset back gives the same masks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pixelseg.coco_format import encode_masks, xyxy_to_xywh
from pixelseg.errors import DataError

__all__ = ["image_to_uint8", "instances_to_coco", "write_coco"]


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _categories(categories: Sequence[str] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """COCO category dicts in label order (label ``i`` is entry ``i - 1``)."""
    out = []
    for i, cat in enumerate(categories, start=1):
        if isinstance(cat, str):
            out.append({"id": i, "name": cat, "supercategory": cat})
        elif isinstance(cat, Mapping) and "id" in cat and "name" in cat:
            out.append(dict(cat))
        else:
            raise DataError(f"category {i} must be a name or a dict with 'id' and 'name': {cat!r}")
    ids = [c["id"] for c in out]
    if len(set(ids)) != len(ids):
        raise DataError(f"category ids must be unique, got {ids}")
    return out


def image_to_uint8(image: Any) -> np.ndarray:
    """A sample's image (float ``[3, H, W]`` in 0..1, or uint8 ``[H, W, 3]``) as uint8 HxWx3."""
    arr = _numpy(image)
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.clip(np.round(arr * 255.0), 0, 255).astype(np.uint8)
        arr = arr.transpose(1, 2, 0) if arr.ndim == 3 else arr
    return np.ascontiguousarray(arr.astype(np.uint8))


def _entries(
    n: int, sample: Mapping[str, Any], cats: list[dict[str, Any]], file_name: str, first_id: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The COCO image entry and annotations of sample ``n`` (annotation ids from ``first_id``)."""
    image_id = int(_numpy(sample.get("image_id", n + 1)).reshape(()))
    name = str(sample.get("name", f"image_{image_id}"))
    masks = _numpy(sample["masks"])
    labels = _numpy(sample["labels"]).astype(np.int64).reshape(-1)
    count = len(labels)
    if masks.ndim != 3 or len(masks) != count:
        raise DataError(f"sample {name!r}: masks {masks.shape} do not match {count} labels")
    bad = labels[(labels < 1) | (labels > len(cats))]
    if len(bad):
        raise DataError(
            f"sample {name!r}: labels {sorted(set(bad.tolist()))} not in 1..{len(cats)}"
        )
    height, width = masks.shape[1:]
    if sample.get("image") is not None:
        height, width = image_to_uint8(sample["image"]).shape[:2]
        if masks.shape[1:] != (height, width) and count:
            raise DataError(f"sample {name!r}: masks {masks.shape[1:]} but image {(height, width)}")
    image = {"id": image_id, "file_name": file_name, "height": height, "width": width}
    boxes = xyxy_to_xywh(_numpy(sample["boxes"]))
    crowd = _numpy(sample.get("iscrowd", np.zeros(count))).reshape(-1).astype(np.int64)
    if "area" in sample:
        area = _numpy(sample["area"]).astype(np.float64).reshape(-1)
    else:
        area = (masks != 0).reshape(count, -1).sum(axis=1).astype(np.float64)
    annotations = [
        {
            "id": first_id + i,
            "image_id": image_id,
            "category_id": cats[labels[i] - 1]["id"],
            "segmentation": rle,
            "area": float(area[i]),
            "bbox": [float(v) for v in boxes[i]],
            "iscrowd": int(crowd[i]),
        }
        for i, rle in enumerate(encode_masks(masks))
    ]
    return image, annotations


class _Collector:
    """Accumulates image entries and annotations; refuses a repeated image id."""

    def __init__(self, categories: Sequence[str] | Sequence[Mapping[str, Any]]) -> None:
        self.categories = _categories(categories)
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.ids: set[int] = set()

    def add(self, n: int, sample: Mapping[str, Any], file_name: str) -> None:
        first = len(self.annotations) + 1
        image, anns = _entries(n, sample, self.categories, file_name, first)
        if image["id"] in self.ids:
            raise DataError(f"sample {n} ({file_name!r}): image_id {image['id']} is used twice")
        self.ids.add(image["id"])
        self.images.append(image)
        self.annotations.extend(anns)

    def dataset(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "annotations": self.annotations,
            "categories": self.categories,
        }


def instances_to_coco(
    samples: Iterable[Mapping[str, Any]],
    categories: Sequence[str] | Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The COCO instances dict of ``samples`` (no file is written).

    Each sample: ``masks`` ``[N, H, W]``, ``boxes`` ``[N, 4]`` (x1, y1, x2, y2 pixels),
    ``labels`` ``[N]`` in 1..K, optional ``iscrowd`` and ``area`` ``[N]`` (default: the mask
    pixel count), ``image_id`` (default: position + 1) and ``name`` (the file name is
    ``<name>.png``). ``categories``: K names (ids 1..K) or K COCO category dicts in label
    order, so labels map back to their category ids. Annotation ids count from 1
    (pycocotools treats a match to an annotation with id 0 as no match).
    """
    collector = _Collector(categories)
    for n, sample in enumerate(samples):
        collector.add(n, sample, f"{sample.get('name', f'image_{n + 1}')}.png")
    return collector.dataset()


def write_coco(
    samples: Iterable[Mapping[str, Any]],
    out_dir: str | Path,
    categories: Sequence[str] | Sequence[Mapping[str, Any]],
    overwrite: bool = False,
) -> Path:
    """Write ``samples`` as ``out_dir/instances.json`` + ``out_dir/images/<name>.png``.

    Samples as for :func:`instances_to_coco`, each with its ``image`` (float ``[3, H, W]`` in
    0..1 as the datasets give it, or uint8 ``[H, W, 3]``) and a ``name`` unique in the set.
    Samples are consumed one at a time (a dataset is not held in memory). Images are written
    as PNG (lossless). Returns the path of ``instances.json``; refuses to replace an existing
    one unless ``overwrite``.
    """
    out = Path(out_dir)
    json_path = out / "instances.json"
    if json_path.exists() and not overwrite:
        raise DataError(f"{str(json_path)!r} exists; pass overwrite=True to replace it")
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    collector = _Collector(categories)
    names: set[str] = set()
    for n, sample in enumerate(samples):
        if sample.get("image") is None:
            raise DataError(f"sample {n} has no 'image' to write")
        file_name = f"{sample.get('name', f'image_{n + 1}')}.png"
        if file_name in names:
            raise DataError(f"two samples would both be written as {file_name!r}")
        names.add(file_name)
        collector.add(n, sample, file_name)
        Image.fromarray(image_to_uint8(sample["image"])).save(image_dir / file_name)
    json_path.write_text(json.dumps(collector.dataset()), encoding="utf-8")
    return json_path
