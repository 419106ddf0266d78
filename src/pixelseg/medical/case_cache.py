"""A disk cache of preprocessed volumetric cases, read back memory-mapped.

Why: a CT dataset does not fit in memory (the Decathlon lung task is 64 CTs of 512 x 512 x
100-600 voxels, tens of GB as float32). As in nnU-Net, each case is preprocessed once and
written as ``.npy`` files; training then opens them with ``np.load(mmap_mode="r")``, so a
patch reads only its own voxels from disk, and DataLoader workers (forked) share the page
cache instead of holding copies.

One entry is three files in the cache folder, named ``{name}.{key}`` plus
``.image.npy`` (float32 ``[C, D, H, W]``, exact, no precision given up), ``.label.npy``
(uint8, or int16/int32 when label values need it) and ``.json``: the caller's metadata
(spacing, affines...), the image's minimum, the label's maximum and the foreground class
locations :class:`pixelseg.medical.patches.PatchSampler` draws from
(:func:`pixelseg.medical.patches.class_locations`, at most 10 000 voxels per class), so no
volume is scanned at run time. ``key`` hashes what the entry was made from (the caller's
key fields: source files' path, size and modification time, the preprocessing settings)
with :data:`CACHE_FORMAT_VERSION`: a changed file or setting looks up another file name, so
a stale entry is never read; entries of different settings sit side by side (delete the
folder to reclaim the space). Every file is written to a temporary name and renamed into
place, the JSON last: a killed run leaves no entry that looks complete, and an entry that is
unreadable anyway (truncated, missing a file) is logged, naming the file, and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from pixelseg.errors import DataError, InvalidInputError, NonFiniteError

__all__ = ["CACHE_FORMAT_VERSION", "CachedCase", "CaseCache", "cache_key", "file_fingerprint"]

log = logging.getLogger(__name__)

#: Bump when what an entry holds, or how it is made, changes: old entries are then ignored.
CACHE_FORMAT_VERSION = 1


def cache_key(fields: Mapping[str, Any]) -> str:
    """16 hex digits of SHA-256 over ``fields`` (JSON-able) and the cache format version."""
    text = json.dumps({"format": CACHE_FORMAT_VERSION, **fields}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def file_fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What identifies a source file's content cheaply: absolute path, size in bytes and
    modification time in ns (hashing a 300 MB CT on every start would cost more than the
    cache saves)."""
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


@dataclass(frozen=True)
class CachedCase:
    """One entry read back: ``image`` float32 ``[C, D, H, W]`` and ``label`` ``[D, H, W]``
    (read-only memmaps, or in-memory arrays when read with ``mmap=False``), the caller's
    ``meta``, ``locations`` (class value -> flat voxel indices into ``label``),
    ``image_min`` and ``label_max`` (0 without a label)."""

    name: str
    image: np.ndarray
    label: np.ndarray | None
    meta: dict[str, Any]
    locations: dict[int, np.ndarray]
    image_min: float
    label_max: int


def _label_dtype(label: np.ndarray) -> np.dtype:
    low, high = (int(label.min()), int(label.max())) if label.size else (0, 0)
    for dtype in (np.uint8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return np.dtype(dtype)
    raise DataError(f"label values {low}..{high} do not fit int32")


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """``write`` into a temporary file beside ``path``, then rename it onto ``path``.

    The temporary name is unique per process and call, so ranks of a distributed run that
    build the same case at once never write into one file; the last rename wins, and every
    renamed file is complete.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class CaseCache:
    """Preprocessed cases under ``folder`` (created if missing); see the module docstring."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise InvalidInputError(f"case cache {self.folder} exists and is not a folder")
        self.folder.mkdir(parents=True, exist_ok=True)

    def paths(self, name: str, key: str) -> tuple[Path, Path, Path]:
        """The (image, label, JSON) files of one entry."""
        stem = f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.{key}"
        return tuple(self.folder / f"{stem}.{part}" for part in ("image.npy", "label.npy", "json"))  # type: ignore[return-value]

    def write(
        self,
        name: str,
        key: str,
        image: np.ndarray,
        label: np.ndarray | None,
        meta: Mapping[str, Any],
    ) -> None:
        """Store one case: ``image [C, D, H, W]`` (stored float32), ``label [D, H, W]``
        integer or None, ``meta`` JSON-able. Refuses a non-finite image (naming the case)."""
        from pixelseg.medical.patches import class_locations

        image = np.asarray(image, dtype=np.float32)
        if not np.isfinite(image).all():
            raise NonFiniteError(f"case {name!r}: image holds NaN or infinite values")
        image_path, label_path, json_path = self.paths(name, key)
        record: dict[str, Any] = {
            "format": CACHE_FORMAT_VERSION,
            "key": key,
            "name": name,
            "image": {"shape": list(image.shape), "dtype": "float32"},
            "image_min": float(image.min()),
            "label": None,
            "label_max": 0,
            "locations": {},
            "meta": dict(meta),
        }
        _atomic_write(image_path, lambda f: np.save(f, image))
        if label is not None:
            if label.dtype.kind not in "iub":
                raise DataError(f"case {name!r}: label must be integer, got {label.dtype}")
            stored = label.astype(_label_dtype(label))
            _atomic_write(label_path, lambda f: np.save(f, stored))
            record["label"] = {"shape": list(stored.shape), "dtype": stored.dtype.name}
            record["label_max"] = int(stored.max(initial=0))
            record["locations"] = {
                str(value): where.tolist() for value, where in class_locations(stored).items()
            }
        text = json.dumps(record)
        _atomic_write(json_path, lambda f: f.write(text.encode("utf-8")))

    def read(self, name: str, key: str, *, mmap: bool = True) -> CachedCase | None:
        """The entry, or None when there is none or it is unreadable (logged, naming the
        file). ``mmap``: memory-map the arrays (training) or read them into memory."""
        image_path, label_path, json_path = self.paths(name, key)
        if not json_path.is_file():
            if image_path.exists():  # arrays without their JSON: a run died mid-write
                log.warning("case cache: %s is missing; rebuilding case %r", json_path, name)
            return None
        current = json_path
        try:
            record = json.loads(json_path.read_text(encoding="utf-8"))
            if record["format"] != CACHE_FORMAT_VERSION or record["key"] != key:
                raise ValueError(f"written for key {record['key']!r}, not {key!r}")
            current = image_path
            image = _load_checked(image_path, record["image"], mmap)
            label = None
            if record["label"] is not None:
                current = label_path
                label = _load_checked(label_path, record["label"], mmap)
            locations = {
                int(value): np.asarray(where, dtype=np.intp)
                for value, where in record["locations"].items()
            }
            return CachedCase(
                name,
                image,
                label,
                record["meta"],
                locations,
                float(record["image_min"]),
                int(record["label_max"]),
            )
        except (OSError, ValueError, EOFError, KeyError, TypeError) as exc:
            log.warning("case cache: %s is unreadable (%s); rebuilding case %r", current, exc, name)
            return None

    def get_or_build(
        self,
        name: str,
        key: str,
        build: Callable[[], tuple[np.ndarray, np.ndarray | None, Mapping[str, Any]]],
        *,
        mmap: bool = True,
    ) -> tuple[CachedCase, bool]:
        """The entry, built by ``build() -> (image, label, meta)`` and written first when it
        is missing or unreadable; and whether it was built."""
        found = self.read(name, key, mmap=mmap)
        if found is not None:
            return found, False
        self.write(name, key, *build())
        found = self.read(name, key, mmap=mmap)
        if found is None:  # just written: only a full disk or a racing delete gets here
            raise DataError(f"case cache: could not read back case {name!r} in {self.folder}")
        return found, True


def _load_checked(path: Path, expected: Mapping[str, Any], mmap: bool) -> np.ndarray:
    """``np.load`` that also checks the shape and dtype recorded in the JSON."""
    array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    if list(array.shape) != list(expected["shape"]) or array.dtype.name != expected["dtype"]:
        raise ValueError(
            f"holds {array.dtype.name} {list(array.shape)}, the JSON says "
            f"{expected['dtype']} {expected['shape']}"
        )
    return array
