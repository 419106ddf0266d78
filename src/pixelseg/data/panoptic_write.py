"""Writing panoptic samples as a COCO panoptic dataset (images, PNG folder, JSON).

The layout panopticapi and :class:`~pixelseg.data.CocoPanoptic` read by default:
``out/images/<name>.png`` (lossless), ``out/panoptic.json`` and ``out/panoptic/<name>.png``
(RGB-encoded ids). The annotations go through
:func:`~pixelseg.data.coco_panoptic.write_panoptic`, which validates every record and moves
the PNGs and the JSON into place only when all of them are valid.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pixelseg.data.coco_panoptic import write_panoptic
from pixelseg.data.coco_write import image_to_uint8
from pixelseg.errors import DataError

__all__ = ["write_coco_panoptic"]


def _records(samples: Iterable[Mapping[str, Any]], image_dir: Path) -> Iterator[dict[str, Any]]:
    """Write each sample's image and yield its write_panoptic record (one pass over samples)."""
    names: set[str] = set()
    for n, sample in enumerate(samples):
        file_name = f"{sample.get('name', f'image_{n + 1}')}.png"
        if file_name in names:
            raise DataError(f"two samples would both be written as {file_name!r}")
        names.add(file_name)
        for key in ("image", "panoptic", "segments_info"):
            if sample.get(key) is None:
                raise DataError(f"sample {n} ({file_name!r}) has no {key!r}; not a panoptic sample")
        image = image_to_uint8(sample["image"])
        ids = sample["panoptic"]
        ids = ids.cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
        if ids.shape != image.shape[:2]:
            raise DataError(
                f"sample {n} ({file_name!r}): panoptic map {ids.shape} but image {image.shape[:2]}"
            )
        image_id = int(sample.get("image_id", n + 1))
        Image.fromarray(image).save(image_dir / file_name)
        segments = [
            {"id": s["id"], "category_id": s["category_id"], "iscrowd": s.get("iscrowd", 0)}
            for s in sample["segments_info"]
        ]
        yield {
            "image_id": image_id,
            "file_name": file_name,
            "image_file_name": file_name,
            "ids": ids,
            "segments_info": segments,
        }


def write_coco_panoptic(
    samples: Iterable[Mapping[str, Any]],
    out_dir: str | Path,
    categories: Sequence[Mapping[str, Any]],
    overwrite: bool = False,
) -> Path:
    """Write panoptic ``samples`` to ``out_dir`` (layout in the module docstring); returns the
    path of ``panoptic.json``.

    Each sample needs ``image`` (float ``[3, H, W]`` in 0..1 or uint8 ``[H, W, 3]``),
    ``panoptic`` (ids ``[H, W]``, 0 = VOID), ``segments_info`` (``id``, ``category_id``,
    ``iscrowd``; ``area`` and ``bbox`` are measured again), a ``name`` unique in the set and
    ``image_id`` (default: position + 1). ``categories``: COCO panoptic categories with
    ``isthing``. Samples are consumed one at a time. An existing ``panoptic.json`` is replaced
    only with ``overwrite``.
    """
    out = Path(out_dir)
    json_path = out / "panoptic.json"
    if json_path.exists() and not overwrite:
        raise DataError(f"{str(json_path)!r} exists; pass overwrite=True to replace it")
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    write_panoptic(json_path, out / "panoptic", _records(samples, image_dir), categories)
    return json_path
