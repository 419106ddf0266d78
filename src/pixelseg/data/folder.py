"""A semantic segmentation dataset over an image folder and a mask folder matched by file stem.

Every sample is a dict: ``image`` float32 ``[C, H, W]`` (from the transform), ``mask`` int64
``[H, W]`` (class indices, ``ignore_index`` where ignored), ``name`` (the file stem) and
``image_path``, so torch's default collate batches it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from pixelseg.colormap import label_colormap
from pixelseg.data.io import IMAGE_EXTENSIONS, is_image_file, probe_image, read_image, read_mask
from pixelseg.data.transforms import to_tensors
from pixelseg.errors import DataError, InvalidInputError, unknown_choice

__all__ = ["MASK_FORMATS", "SegmentationFolder", "label_colormap"]

logger = logging.getLogger(__name__)

MASK_FORMATS: tuple[str, ...] = ("index", "palette", "rgb")

Color = tuple[int, int, int]
Transform = Callable[[np.ndarray, np.ndarray], tuple[torch.Tensor, torch.Tensor]]

_SHOWN = 5  # how many file names a warning or error lists before "..."


def _few(items: Sequence[Any]) -> str:
    shown = ", ".join(str(i) for i in list(items)[:_SHOWN])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _SHOWN else "")


def _index_files(directory: Path, suffix: str, exclude_suffix: str, what: str) -> dict[str, Path]:
    """Map stem (minus ``suffix``) -> image file in ``directory``; duplicate stems are an error."""
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if not (path.is_file() and is_image_file(path)):
            continue
        stem = path.stem
        if exclude_suffix and stem.endswith(exclude_suffix):
            continue
        if suffix:
            if not stem.endswith(suffix):
                continue
            stem = stem[: -len(suffix)]
        if stem in found:
            raise DataError(
                f"two {what} files share the stem {stem!r}: {str(found[stem])!r} and "
                f"{str(path)!r}; keep one"
            )
        found[stem] = path
    return found


def _check_colors(colors: Sequence[Sequence[int]], what: str) -> list[Color]:
    out: list[Color] = []
    for c in colors:
        if len(c) != 3 or any(not 0 <= int(v) <= 255 for v in c):
            raise InvalidInputError(f"{what}: colour {tuple(c)!r} is not an (R, G, B) in 0..255")
        out.append((int(c[0]), int(c[1]), int(c[2])))
    return out


class SegmentationFolder(Dataset):
    """Images in ``images_dir`` paired with masks in ``masks_dir`` by file stem.

    ``mask_format``: ``index`` (grey or palette PNG read as raw class indices), ``palette``
    (P-mode PNG required, its indices are the classes) or ``rgb`` (colour-coded; ``color_map``
    maps colour -> class, default ``colors[i] -> i``). ``value_map`` remaps raw index values
    (e.g. ``{0: 0, 255: 1}`` for 0/255 binary masks). ``stems`` restricts and orders samples
    (e.g. from a split file). ``mask_suffix`` is stripped from mask stems (``a_mask.png``).
    Images are returned with ``in_channels`` channels (grey repeated to 3, colour to grey by
    luminance). Unreadable files are skipped with a warning (``strict=True``: DataError);
    mismatched sizes and mask values outside the classes raise :class:`DataError`.
    ``transform(image uint8 [H, W, C], mask [H, W])`` returns tensors; without one, images are
    scaled to 0..1 and not normalised.
    """

    def __init__(
        self,
        images_dir: str | Path,
        masks_dir: str | Path,
        classes: Sequence[str],
        *,
        ignore_index: int | None = None,
        colors: Sequence[Sequence[int]] | None = None,
        mask_format: str = "index",
        color_map: Mapping[Sequence[int], int] | None = None,
        value_map: Mapping[int, int] | None = None,
        stems: Sequence[str] | None = None,
        transform: Transform | None = None,
        strict: bool = False,
        mask_suffix: str = "",
        in_channels: int = 3,
    ) -> None:
        self.images_dir = Path(images_dir)
        self.masks_dir = Path(masks_dir)
        self.classes = [str(c) for c in classes]
        self.num_classes = len(self.classes)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.mask_format = mask_format
        self.transform = transform
        self.strict = strict
        self.in_channels = in_channels
        self._check_options(color_map, value_map)

        self.value_lut = self._build_value_lut(value_map)
        self.colors = _check_colors(colors, "colors") if colors is not None else None
        if self.colors is not None and len(self.colors) != self.num_classes:
            raise InvalidInputError(
                f"colors has {len(self.colors)} entries but there are {self.num_classes} classes"
            )
        self._color_keys, self._color_values = self._build_color_lookup(color_map)

        pairs = self._match(stems, mask_suffix)
        self.skipped: list[tuple[str, str]] = []
        pairs = self._probe(pairs)
        if not pairs:
            raise DataError(
                f"no readable image/mask pairs left in {str(self.images_dir)!r} and "
                f"{str(self.masks_dir)!r}: skipped {_few([p for p, _ in self.skipped])}"
            )
        self.stems = [s for s, _, _ in pairs]
        self.image_paths = [i for _, i, _ in pairs]
        self.mask_paths = [m for _, _, m in pairs]
        if self.colors is None:
            self.colors = self._default_colors()
        logger.info(
            "SegmentationFolder %s: %d samples, %d classes",
            self.images_dir,
            len(self.stems),
            self.num_classes,
        )

    # -- construction -------------------------------------------------------------------------

    def _check_options(self, color_map: Any, value_map: Any) -> None:
        if not self.classes:
            raise InvalidInputError("classes must name at least one class")
        if self.mask_format not in MASK_FORMATS:
            raise unknown_choice("mask_format", str(self.mask_format), MASK_FORMATS)
        if self.in_channels not in (1, 3):
            raise InvalidInputError(f"in_channels must be 1 or 3, got {self.in_channels!r}")
        if self.ignore_index is not None and not 0 <= self.ignore_index <= 65535:
            raise InvalidInputError(
                f"ignore_index must be a mask value in 0..65535 (e.g. 255), got {self.ignore_index}"
            )
        if self.ignore_index is not None and self.ignore_index < self.num_classes:
            raise InvalidInputError(
                f"ignore_index {self.ignore_index} is a class index ({self.classes[self.ignore_index]!r});"
                f" use a value >= {self.num_classes}, e.g. 255"
            )
        if color_map is not None and self.mask_format != "rgb":
            raise InvalidInputError(
                f"color_map is only used with mask_format='rgb', not {self.mask_format!r}"
            )
        if value_map is not None and self.mask_format == "rgb":
            raise InvalidInputError("value_map applies to index/palette masks, not 'rgb'")
        for d, what in ((self.images_dir, "images_dir"), (self.masks_dir, "masks_dir")):
            if not d.is_dir():
                raise DataError(f"{what} {str(d)!r} does not exist or is not a folder")

    def _is_label(self, value: int) -> bool:
        return 0 <= value < self.num_classes or value == self.ignore_index

    def _build_value_lut(self, value_map: Mapping[int, int] | None) -> np.ndarray | None:
        """Raw value -> class lookup table; -1 marks raw values absent from ``value_map``."""
        if value_map is None:
            return None
        mapping = {int(k): int(v) for k, v in value_map.items()}
        bad = {k: v for k, v in mapping.items() if not self._is_label(v)}
        if bad or any(k < 0 for k in mapping):
            raise InvalidInputError(
                f"value_map {mapping!r} must map non-negative raw values to class indices "
                f"0..{self.num_classes - 1} or ignore_index {self.ignore_index}; bad: {bad!r}"
            )
        lut = np.full(max(256, max(mapping, default=0) + 1), -1, dtype=np.int64)
        lut[list(mapping)] = list(mapping.values())
        return lut

    def _build_color_lookup(
        self, color_map: Mapping[Sequence[int], int] | None
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Sorted packed colours (R << 16 | G << 8 | B) and their classes, for rgb masks."""
        if self.mask_format != "rgb":
            return None, None
        if color_map is None:
            if self.colors is None:
                raise InvalidInputError("mask_format='rgb' needs color_map or colors")
            color_map = {c: i for i, c in enumerate(self.colors)}
        colors = _check_colors(list(color_map), "color_map")
        values = [int(v) for v in color_map.values()]
        bad = [(c, v) for c, v in zip(colors, values, strict=True) if not self._is_label(v)]
        if bad:
            raise InvalidInputError(
                f"color_map maps {bad!r} outside classes 0..{self.num_classes - 1} "
                f"(ignore_index {self.ignore_index})"
            )
        keys = np.array([(r << 16) | (g << 8) | b for r, g, b in colors], dtype=np.int64)
        order = np.argsort(keys)
        return keys[order], np.asarray(values, dtype=np.int64)[order]

    def _match(self, stems: Sequence[str] | None, mask_suffix: str) -> list[tuple[str, Path, Path]]:
        same_dir = self.images_dir.resolve() == self.masks_dir.resolve()
        images = _index_files(self.images_dir, "", mask_suffix if same_dir else "", "image")
        masks = _index_files(self.masks_dir, mask_suffix, "", "mask")
        if stems is not None:
            stems = list(dict.fromkeys(str(s) for s in stems))
            missing = [s for s in stems if s not in images or s not in masks]
            if missing:
                raise DataError(
                    f"{len(missing)} listed stems have no image in {str(self.images_dir)!r} or no "
                    f"mask in {str(self.masks_dir)!r}: {_few(missing)}"
                )
            return [(s, images[s], masks[s]) for s in stems]
        paired = sorted(images.keys() & masks.keys())
        lonely_images = sorted(images.keys() - masks.keys())
        lonely_masks = sorted(masks.keys() - images.keys())
        pattern = f"*{mask_suffix}{{{','.join(IMAGE_EXTENSIONS)}}}"
        if not paired:
            found = [f"{len(images)} images and {len(masks)} masks without partners"]
            if lonely_images:
                found.append(f"images: {_few(lonely_images)}")
            if lonely_masks:
                found.append(f"masks: {_few(lonely_masks)}")
            if mask_suffix:
                unsuffixed = len(_index_files(self.masks_dir, "", "", "mask")) - len(masks)
                found.append(f"{unsuffixed} files in masks_dir lack the suffix {mask_suffix!r}")
            raise DataError(
                f"no image/mask pairs: looked for images *{{{','.join(IMAGE_EXTENSIONS)}}} in "
                f"{str(self.images_dir)!r} and masks {pattern} in {str(self.masks_dir)!r} "
                f"(case-insensitive), matched by stem; found {'; '.join(found)}"
            )
        if lonely_images:
            logger.warning(
                "%d images in %s have no mask %s in %s and are left out: %s",
                len(lonely_images),
                self.images_dir,
                pattern,
                self.masks_dir,
                _few(lonely_images),
            )
        if lonely_masks:
            logger.warning(
                "%d masks in %s have no image in %s and are left out: %s",
                len(lonely_masks),
                self.masks_dir,
                self.images_dir,
                _few(lonely_masks),
            )
        return [(s, images[s], masks[s]) for s in paired]

    def _probe(self, pairs: list[tuple[str, Path, Path]]) -> list[tuple[str, Path, Path]]:
        """Read every header once: skip unreadable files, fail on image/mask size mismatch."""
        kept = []
        for stem, image_path, mask_path in pairs:
            try:
                image_size = probe_image(image_path)
                mask_size = probe_image(mask_path)
            except DataError as exc:
                if self.strict:
                    raise
                logger.warning("skipping %r: %s", stem, exc)
                self.skipped.append((str(image_path), str(exc)))
                continue
            if image_size != mask_size:
                raise DataError(_size_message(image_path, image_size, mask_path, mask_size))
            kept.append((stem, image_path, mask_path))
        return kept

    def _default_colors(self) -> list[Color]:
        """The first mask's palette for palette masks, else the VOC colour map."""
        if self.mask_format == "palette":
            with Image.open(self.mask_paths[0]) as im:
                palette = im.getpalette() or []
            if len(palette) >= 3 * self.num_classes:
                return [tuple(palette[3 * i : 3 * i + 3]) for i in range(self.num_classes)]  # type: ignore[misc]
        return label_colormap(self.num_classes)

    # -- reading ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.stems)

    def _to_classes(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Raw mask (indices ``[H, W]`` or colours ``[H, W, 3]``) -> validated int64 classes."""
        if self.mask_format == "rgb":
            keys_sorted, values = self._color_keys, self._color_values
            assert keys_sorted is not None and values is not None
            rgb = raw.astype(np.int64)
            keys = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
            pos = np.clip(np.searchsorted(keys_sorted, keys), 0, len(keys_sorted) - 1)
            unknown = keys_sorted[pos] != keys
            if unknown.any():
                found = np.unique(keys[unknown])
                colors = [((k >> 16) & 255, (k >> 8) & 255, k & 255) for k in found.tolist()]
                raise DataError(
                    f"mask {str(path)!r} has {len(colors)} colours not in the color_map: "
                    f"{_few(colors)}; known colours: {_few(self._known_colors())}"
                )
            return values[pos]
        mask = raw.astype(np.int64)
        if self.value_lut is not None:
            lut = self.value_lut
            out_of_lut = mask >= len(lut)
            mapped = lut[np.where(out_of_lut, 0, mask)]
            unmapped = out_of_lut | (mapped < 0)
            if unmapped.any():
                raise DataError(
                    f"mask {str(path)!r} has values {np.unique(mask[unmapped]).tolist()} that "
                    f"value_map does not map (it maps {np.flatnonzero(lut >= 0).tolist()})"
                )
            mask = mapped
        bad = mask >= self.num_classes
        if self.ignore_index is not None:
            bad &= mask != self.ignore_index
        if bad.any():
            raise DataError(
                f"mask {str(path)!r} has values {np.unique(mask[bad]).tolist()} outside the "
                f"{self.num_classes} classes 0..{self.num_classes - 1}"
                + (
                    f" and ignore_index {self.ignore_index}"
                    if self.ignore_index is not None
                    else ""
                )
            )
        return mask

    def _known_colors(self) -> list[Color]:
        keys = self._color_keys.tolist() if self._color_keys is not None else []
        return [((k >> 16) & 255, (k >> 8) & 255, k & 255) for k in keys]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decode sample ``index`` without the transform: ``uint8 [H, W, C]``, ``int64 [H, W]``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        image_path, mask_path = self.image_paths[index], self.mask_paths[index]
        image = read_image(image_path, self.in_channels)
        mask = self._to_classes(read_mask(mask_path, self.mask_format), mask_path)
        if image.shape[:2] != mask.shape[:2]:
            raise DataError(_size_message(image_path, image.shape[:2], mask_path, mask.shape[:2]))
        return image, mask

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask = self.load(index)
        transform = self.transform or to_tensors
        image_t, mask_t = transform(image, mask)
        return {
            "image": image_t,
            "mask": mask_t,
            "name": self.stems[index],
            "image_path": str(self.image_paths[index]),
        }

    def __repr__(self) -> str:
        return (
            f"SegmentationFolder({str(self.images_dir)!r}, {len(self)} samples, "
            f"{self.num_classes} classes, mask_format={self.mask_format!r})"
        )


def _size_message(image_path: Path, image_size: Any, mask_path: Path, mask_size: Any) -> str:
    ih, iw = image_size
    mh, mw = mask_size
    return (
        f"image {str(image_path)!r} is {ih}x{iw} (HxW) but its mask {str(mask_path)!r} is "
        f"{mh}x{mw}; image and mask must have the same size"
    )
