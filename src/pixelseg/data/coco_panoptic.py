"""The COCO panoptic format: RGB-encoded segment-id PNGs and the JSON of ``segments_info``.

A panoptic annotation is an id map ``[H, W]`` (one segment id per pixel, ``0`` = VOID, i.e.
unlabelled) plus a list of segment records ``{"id", "category_id", "iscrowd", "area",
"bbox"}``; the JSON also lists ``categories`` with ``isthing``. On disk the id map is an RGB
PNG with ``id = R + 256 G + 256^2 B`` (so ids lie in ``[0, 256^3)``), as panopticapi writes.

The checks here follow the reference evaluation (panopticapi ``pq_compute``) and go one
step further where it stays silent: every id in a PNG must be listed in its
``segments_info`` and the reverse, ids are unique per image, image ids unique per file, and
every error names the file, the image and the segment id. :func:`write_panoptic` stages
everything in a temporary folder and moves it into place only once all of it is valid, so a
failure leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pixelseg.errors import DataError, InvalidInputError

__all__ = [
    "MAX_SEGMENT_ID",
    "VOID_ID",
    "check_categories",
    "check_segments",
    "id_to_rgb",
    "load_panoptic_json",
    "read_panoptic_png",
    "rgb_to_id",
    "segment_index",
    "segment_stats",
    "write_panoptic",
]

#: Id of unlabelled pixels (panopticapi's ``VOID``); never a segment id.
VOID_ID = 0
#: Largest id an RGB PNG can hold (``256^3 - 1``).
MAX_SEGMENT_ID = 256**3 - 1
# Id maps whose largest id is below this are indexed through a lookup table (one gather);
# larger ids (COCO's are up to 2^24) go through a binary search over the sorted segment ids.
_LOOKUP_LIMIT = 1 << 20


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """Decode an RGB-encoded panoptic image ``uint8 [..., 3]`` into ids ``int64 [...]``."""
    rgb = np.asarray(rgb)
    if rgb.ndim < 1 or rgb.shape[-1] != 3:
        raise InvalidInputError(f"rgb_to_id expects [..., 3] colours, got shape {rgb.shape}")
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Encode ids ``int [...]`` in ``[0, 256^3)`` as ``uint8 [..., 3]`` (R low byte, B high)."""
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise InvalidInputError(f"segment ids must be integers, got dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() > MAX_SEGMENT_ID):
        raise InvalidInputError(
            f"segment ids must lie in [0, {MAX_SEGMENT_ID}] to fit an RGB PNG, got "
            f"[{ids.min()}, {ids.max()}]"
        )
    out = np.empty((*ids.shape, 3), dtype=np.uint8)
    out[..., 0] = ids & 255
    out[..., 1] = (ids >> 8) & 255
    out[..., 2] = ids >> 16
    return out


def read_panoptic_png(path: str | Path, image: object = None) -> np.ndarray:
    """Read an RGB-encoded panoptic PNG into ids ``int64 [H, W]`` (0 = VOID).

    ``image`` (an image id) only improves the error message. A missing or unreadable file or
    a mode other than RGB raises :class:`DataError` naming the file and the image.
    """
    where = f" of the image with ID {image!r}" if image is not None else ""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode != "RGB":
                raise DataError(
                    f"panoptic PNG {str(path)!r}{where} has mode {im.mode!r}; the COCO panoptic "
                    "format needs RGB with id = R + 256 G + 256^2 B"
                )
            rgb = np.asarray(im)
    except FileNotFoundError as exc:
        raise DataError(f"panoptic PNG {str(path)!r}{where} does not exist") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"cannot decode panoptic PNG {str(path)!r}{where}: {exc}") from exc
    return rgb_to_id(rgb)


def segment_index(
    ids: np.ndarray, segment_ids: np.ndarray, *, image: object = None, source: str = ""
) -> np.ndarray:
    """Map an id map to segment rows: ``0`` for VOID pixels, ``k + 1`` for ``segment_ids[k]``.

    ``ids`` integer ``[H, W]``; ``segment_ids`` int64 ``[S]``, unique and > 0. Returns intp
    ``[H, W]`` in ``[0, S]``, ready for one ``bincount`` over paired rows. Ids present in the
    map but not in ``segment_ids`` raise :class:`DataError` naming the image, ``source``
    ("prediction", "ground truth") and the ids, as the reference does.
    """
    ids = np.asarray(ids)
    segment_ids = np.asarray(segment_ids, dtype=np.int64)
    where = f"in the image with ID {image!r} " if image is not None else ""
    if ids.size == 0:
        return np.zeros(ids.shape, dtype=np.intp)
    low, top = int(ids.min()), int(ids.max())
    if low < 0:
        raise DataError(f"{where}the {source} id map holds negative id {low}")
    rows = np.arange(1, len(segment_ids) + 1, dtype=np.intp)
    if top < _LOOKUP_LIMIT:
        lookup = np.full(top + 1, -1, dtype=np.intp)
        lookup[VOID_ID] = 0
        fits = segment_ids <= top
        lookup[segment_ids[fits]] = rows[fits]
        index = lookup[ids]
    else:
        order = np.argsort(segment_ids)
        ordered = np.concatenate([[VOID_ID], segment_ids[order]])
        row_of = np.concatenate([[0], rows[order]])
        pos = np.searchsorted(ordered, ids)
        np.minimum(pos, len(ordered) - 1, out=pos)
        index = np.where(ordered[pos] == ids, row_of[pos], -1)
    unknown = index < 0
    if unknown.any():
        extra = np.unique(ids[unknown])
        more = f" (and {len(extra) - 1} more: {extra[1:6].tolist()})" if len(extra) > 1 else ""
        raise DataError(
            f"{where}{source} segment with ID {int(extra[0])} is "
            f"present in the PNG but not in segments_info{more}"
        )
    return index


def segment_stats(index: np.ndarray, num_segments: int) -> tuple[np.ndarray, np.ndarray]:
    """Area and tight COCO box of each segment row of :func:`segment_index`'s output.

    Returns ``area`` int64 ``[S]`` (pixels) and ``bbox`` int64 ``[S, 4]`` ``[x, y, w, h]`` in
    pixels (zeros for an absent segment). One bincount per axis, no loop over segments.
    """
    h, w = index.shape
    s = num_segments + 1
    area = np.bincount(index.ravel(), minlength=s)[1:]
    in_row = np.bincount((index * h + np.arange(h)[:, None]).ravel(), minlength=s * h)
    in_col = np.bincount((index * w + np.arange(w)[None, :]).ravel(), minlength=s * w)
    in_row = in_row.reshape(s, h)[1:] > 0
    in_col = in_col.reshape(s, w)[1:] > 0
    y0 = in_row.argmax(1)
    y1 = h - in_row[:, ::-1].argmax(1)
    x0 = in_col.argmax(1)
    x1 = w - in_col[:, ::-1].argmax(1)
    bbox = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1).astype(np.int64)
    bbox[area == 0] = 0
    return area.astype(np.int64), bbox


def _load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as exc:
        raise DataError(f"panoptic JSON {str(path)!r} does not exist") from exc
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read panoptic JSON {str(path)!r}: {exc}") from exc


def _int_field(record: Any, key: str, where: str) -> int:
    if not isinstance(record, Mapping) or key not in record:
        raise DataError(f"{where} has no {key!r}: {record!r}"[:300])
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise DataError(f"{where} has {key}={value!r}; it must be an integer")
    return int(value)


def check_categories(categories: Any, where: str) -> list[dict[str, Any]]:
    """Validate COCO ``categories`` (``id`` unique ints, ``isthing`` 0 or 1) and return them."""
    if not isinstance(categories, Sequence) or isinstance(categories, str) or not categories:
        raise DataError(f"{where}: 'categories' must be a non-empty list, got {categories!r}"[:300])
    seen: set[int] = set()
    for cat in categories:
        cid = _int_field(cat, "id", f"{where}: category")
        if _int_field(cat, "isthing", f"{where}: category {cid}") not in (0, 1):
            raise DataError(f"{where}: category {cid} has isthing={cat['isthing']!r}; use 0 or 1")
        if cid in seen:
            raise DataError(f"{where}: category id {cid} is listed twice")
        seen.add(cid)
    return list(categories)


def check_segments(segments: Any, where: str) -> None:
    """Validate one ``segments_info`` list: dicts with ``id`` in ``[1, 256^3)`` (unique) and
    ``category_id``; ``iscrowd`` when present is 0 or 1. ``where`` names file and image."""
    if not isinstance(segments, Sequence) or isinstance(segments, str):
        raise DataError(f"{where}: 'segments_info' must be a list, got {segments!r}"[:300])
    seen: set[int] = set()
    for seg in segments:
        sid = _int_field(seg, "id", f"{where}: segment")
        if not 0 < sid <= MAX_SEGMENT_ID:
            raise DataError(f"{where}: segment ID {sid} is outside [1, {MAX_SEGMENT_ID}]")
        if sid in seen:
            raise DataError(f"{where}: segment ID {sid} is repeated in segments_info")
        seen.add(sid)
        _int_field(seg, "category_id", f"{where}: segment {sid}")
        if seg.get("iscrowd", 0) not in (0, 1):
            raise DataError(f"{where}: segment {sid} has iscrowd={seg['iscrowd']!r}; use 0 or 1")


def load_panoptic_json(path: str | Path, *, require_categories: bool = False) -> dict[str, Any]:
    """Read and validate a COCO panoptic JSON (ground truth or prediction).

    Every annotation needs ``image_id`` (unique in the file), ``file_name`` and a valid
    ``segments_info`` (see :func:`check_segments`); ``categories`` are checked when present
    and required when ``require_categories``. Errors name the file, the image and the key.
    """
    path = Path(path)
    doc = _load_json(path)
    if not isinstance(doc, Mapping) or not isinstance(doc.get("annotations"), list):
        raise DataError(f"panoptic JSON {str(path)!r} has no 'annotations' list")
    if require_categories or "categories" in doc:
        check_categories(doc.get("categories"), f"panoptic JSON {str(path)!r}")
    images: set[int] = set()
    for ann in doc["annotations"]:
        image_id = _int_field(ann, "image_id", f"panoptic JSON {str(path)!r}: annotation")
        where = f"panoptic JSON {str(path)!r}, image with ID {image_id}"
        if image_id in images:
            raise DataError(f"{where}: the image is annotated twice")
        images.add(image_id)
        if not isinstance(ann.get("file_name"), str):
            raise DataError(f"{where}: 'file_name' must be a string, got {ann.get('file_name')!r}")
        check_segments(ann.get("segments_info"), where)
    return dict(doc)


def _annotation_record(
    record: Mapping[str, Any], categories: Mapping[int, Mapping[str, Any]]
) -> tuple[dict[str, Any], np.ndarray]:
    """Validate one record for :func:`write_panoptic`; returns its JSON entry and id map."""
    image_id = _int_field(record, "image_id", "panoptic record")
    where = f"image with ID {image_id}"
    name = record.get("file_name")
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(".png"):
        raise DataError(f"{where}: file_name must be a bare '<name>.png', got {name!r}")
    segments = record.get("segments_info")
    check_segments(segments, where)
    if "ids" not in record:
        raise DataError(f"{where}: the record has no 'ids' id map")
    ids = np.asarray(record["ids"])
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise DataError(
            f"{where}: 'ids' must be an integer [H, W] map, got {ids.dtype} {ids.shape}"
        )
    for seg in segments:
        if seg["category_id"] not in categories:
            raise DataError(
                f"in the {where} segment with ID {seg['id']} has unknown category_id "
                f"{seg['category_id']}; categories: {sorted(categories)}"
            )
    segment_ids = np.array([seg["id"] for seg in segments], dtype=np.int64)
    index = segment_index(ids, segment_ids, image=image_id, source="the")
    area, bbox = segment_stats(index, len(segments))
    if (area == 0).any():
        absent = segment_ids[area == 0].tolist()
        raise DataError(
            f"in the {where} segments {absent} are listed in segments_info but absent from "
            "the id map"
        )
    infos = [
        {**seg, "iscrowd": int(seg.get("iscrowd", 0)), "area": int(a), "bbox": b.tolist()}
        for seg, a, b in zip(segments, area, bbox, strict=True)
    ]
    entry = {"image_id": image_id, "file_name": name, "segments_info": infos}
    return entry, ids


def write_panoptic(
    json_path: str | Path,
    png_folder: str | Path,
    records: Iterable[Mapping[str, Any]],
    categories: Sequence[Mapping[str, Any]],
    *,
    images: Sequence[Mapping[str, Any]] | None = None,
    info: Mapping[str, Any] | None = None,
) -> int:
    """Write COCO panoptic annotations: one RGB PNG per record plus the JSON.

    Each record holds ``image_id``, ``file_name`` (``<name>.png``), ``ids`` (integer
    ``[H, W]`` id map, 0 = VOID) and ``segments_info`` (``id``, ``category_id``, optional
    ``iscrowd`` and other keys, kept). ``area`` and ``bbox`` are computed from the map.
    ``images`` defaults to ``{"id", "height", "width"}`` per record, plus ``file_name`` when
    the record holds ``image_file_name`` (the image's, not the PNG's). Records may come from a
    generator: each PNG is staged as it comes, so only one id map is held at a time.

    All records are validated (see the module docstring) before anything reaches
    ``png_folder`` or ``json_path``: PNGs are staged in a temporary sibling folder and moved
    into place at the end, the JSON is written to a temporary file and renamed. On any error
    the staging is removed and the outputs are left as they were. Returns the record count.
    """
    json_path, folder = Path(json_path), Path(png_folder)
    by_id = {int(c["id"]): c for c in check_categories(list(categories), "write_panoptic")}
    folder.parent.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent)
    )
    json_tmp = json_path.with_name(f".{json_path.name}.partial")
    try:
        annotations: list[dict[str, Any]] = []
        sizes: dict[int, tuple[int, int]] = {}
        image_files: dict[int, str] = {}
        for record in records:
            entry, ids = _annotation_record(record, by_id)
            if entry["image_id"] in sizes:
                raise DataError(f"image with ID {entry['image_id']} is given twice")
            if (staging / entry["file_name"]).exists():
                raise DataError(f"file_name {entry['file_name']!r} is used by two images")
            sizes[entry["image_id"]] = ids.shape
            if "image_file_name" in record:
                image_files[entry["image_id"]] = str(record["image_file_name"])
            Image.fromarray(id_to_rgb(ids)).save(staging / entry["file_name"])
            annotations.append(entry)
        if images is None:
            images = [
                {"id": i, "height": h, "width": w}
                | ({"file_name": image_files[i]} if i in image_files else {})
                for i, (h, w) in sizes.items()
            ]
        doc = {
            "info": dict(info or {}),
            "images": [dict(im) for im in images],
            "annotations": annotations,
            "categories": [dict(c) for c in categories],
        }
        json_tmp.write_text(json.dumps(doc), encoding="utf-8")
        folder.mkdir(exist_ok=True)
        for entry in annotations:
            os.replace(staging / entry["file_name"], folder / entry["file_name"])
        os.replace(json_tmp, json_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        json_tmp.unlink(missing_ok=True)
    return len(annotations)
