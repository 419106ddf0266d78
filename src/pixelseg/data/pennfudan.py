"""The Penn-Fudan pedestrians layout as an instance source.

``root/PNGImages/<stem>.png`` and ``root/PedMasks/<stem>_mask.png``, where the mask holds one
id per pedestrian (1..N) and 0 for background (Wang, Shi, Song, Shen: Penn-Fudan Database for
Pedestrian Detection and Segmentation). Samples have the same keys as
:class:`~pixelseg.data.coco.CocoInstances`, so the tasks and ``write_coco`` take either.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pixelseg.data.io import probe_image, read_image, read_mask
from pixelseg.data.split import random_split
from pixelseg.data.transforms import to_tensors
from pixelseg.errors import DataError, InvalidInputError

__all__ = ["PENNFUDAN_CLASSES", "PennFudan", "instances_from_id_mask"]

logger = logging.getLogger(__name__)

PENNFUDAN_CLASSES: list[str] = ["pedestrian"]
_SPLITS = ("all", "train", "val")


def instances_from_id_mask(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-instance masks and boxes of an id mask ``[H, W]`` (0 = background).

    Returns uint8 ``masks [N, H, W]`` for the ids present in increasing order, and float32
    ``boxes [N, 4]`` ``(x1, y1, x2, y2)`` in pixel-edge coordinates (``x2`` = last column + 1,
    as ``pycocotools.mask.toBbox`` measures a mask).
    """
    present = np.unique(ids)
    present = present[present != 0]
    masks = ids[None, :, :] == present[:, None, None]
    rows, cols = masks.any(axis=2), masks.any(axis=1)  # [N, H], [N, W]
    h, w = ids.shape
    boxes = np.stack(
        [
            cols.argmax(axis=1),
            rows.argmax(axis=1),
            w - cols[:, ::-1].argmax(axis=1),
            h - rows[:, ::-1].argmax(axis=1),
        ],
        axis=1,
    ).astype(np.float32)
    return masks.astype(np.uint8), boxes.reshape(-1, 4)


class PennFudan(Dataset):
    """Penn-Fudan pedestrians under ``root``; one class, ``pedestrian`` (label 1).

    ``split``: ``"all"``, or ``"train"`` / ``"val"`` of a seeded split of the image stems
    (``val_fraction`` of them, ``split_seed``; the same for every run and machine, see
    :func:`~pixelseg.data.split.random_split`). ``image_id`` is the image's position + 1 in
    the sorted list of all stems, so ids do not change with the split. Sample keys as
    :class:`~pixelseg.data.coco.CocoInstances` (``area`` = mask pixel count, no crowds).
    ``stems`` (a split drawn elsewhere, e.g. by group) names the images instead of ``split``.

    An image without its mask, or whose mask differs from it in size, is left out with a
    warning naming the files (``problems`` lists them); ``keep_empty=False`` also leaves out
    images whose mask holds no pedestrian.
    """

    classes = PENNFUDAN_CLASSES

    def __init__(
        self,
        root: str | Path,
        split: str = "all",
        val_fraction: float = 0.2,
        split_seed: int = 0,
        keep_empty: bool = True,
        stems: Sequence[str] | None = None,
    ) -> None:
        if split not in _SPLITS:
            raise InvalidInputError(f"split must be one of {_SPLITS}, got {split!r}")
        self.root = Path(root)
        stems_wanted = stems
        image_dir, mask_dir = self.root / "PNGImages", self.root / "PedMasks"
        for folder in (image_dir, mask_dir):
            if not folder.is_dir():
                raise DataError(
                    f"Penn-Fudan folder {str(folder)!r} not found (expected root/PNGImages and "
                    "root/PedMasks/<stem>_mask.png)"
                )
        stems = sorted(p.stem for p in image_dir.glob("*.png"))
        if not stems:
            raise DataError(f"no PNG images in {str(image_dir)!r}")
        self.image_ids = {stem: i + 1 for i, stem in enumerate(stems)}
        if stems_wanted is not None:
            missing = sorted(set(stems_wanted) - set(self.image_ids))
            if missing:
                raise DataError(
                    f"Penn-Fudan under {str(self.root)!r} has no image {missing[0]!r}.png "
                    f"({len(missing)} of the {len(stems_wanted)} named are missing)"
                )
            stems = sorted(stems_wanted)
        elif split != "all":
            train, val = random_split(stems, val_fraction, split_seed)
            stems = train if split == "train" else val
        self.problems: list[str] = []
        self.items: list[tuple[str, Path, Path]] = []
        for stem in stems:
            image_path, mask_path = image_dir / f"{stem}.png", mask_dir / f"{stem}_mask.png"
            problem = self._check(image_path, mask_path)
            if problem:
                self.problems.append(problem)
                logger.warning("Penn-Fudan: %s; left out", problem)
            else:
                self.items.append((stem, image_path, mask_path))
        if not keep_empty:
            self.items = [it for it in self.items if read_mask(it[2]).any()]
        if not self.items:
            raise DataError(f"no usable Penn-Fudan image under {str(self.root)!r} ({split})")

    @staticmethod
    def _check(image_path: Path, mask_path: Path) -> str | None:
        """What is wrong with an image/mask pair (headers only), or None."""
        if not mask_path.is_file():
            return f"mask {str(mask_path)!r} for {image_path.name} not found"
        try:
            image_size, mask_size = probe_image(image_path), probe_image(mask_path)
        except DataError as exc:
            return str(exc)
        if image_size != mask_size:
            return (
                f"mask {str(mask_path)!r} is {mask_size[0]}x{mask_size[1]} (HxW) but image "
                f"{image_path.name} is {image_size[0]}x{image_size[1]}"
            )
        return None

    @property
    def stems(self) -> list[str]:
        """The stems of the images this dataset serves (after leaving out bad pairs)."""
        return [stem for stem, _, _ in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        stem, image_path, mask_path = self.items[index]
        image = read_image(image_path, 3)
        masks, boxes = instances_from_id_mask(read_mask(mask_path))
        count = len(masks)
        return {
            "image": to_tensors(image)[0],
            "boxes": torch.from_numpy(boxes),
            "labels": torch.ones(count, dtype=torch.int64),
            "masks": torch.from_numpy(masks),
            "iscrowd": torch.zeros(count, dtype=torch.int64),
            "area": torch.from_numpy(masks.reshape(count, -1).sum(axis=1).astype(np.float64)),
            "image_id": self.image_ids[stem],
            "name": stem,
            "image_path": str(image_path),
        }
