"""Synthetic shapes as an instance source: the embedded default for the instance task.

The same scenes as :class:`~pixelseg.data.synthetic.SyntheticShapes` (no files, sample ``i``
depends only on ``(seed, i)``), as torchvision detection targets with the keys of
:class:`~pixelseg.data.coco.CocoInstances`, so the instance task, the augmentations in
:mod:`pixelseg.data.instance_transforms` and ``write_coco`` take it like any real source.
Each visible shape is one instance (things only; the background textures are not objects).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pixelseg.data.pennfudan import instances_from_id_mask
from pixelseg.data.synthetic import SHAPE_CLASSES, SyntheticShapes
from pixelseg.data.transforms import to_tensors

__all__ = ["SHAPE_CATEGORIES", "SyntheticInstances"]

#: COCO categories of the shapes: id = label = the shape's semantic class index.
SHAPE_CATEGORIES: list[dict[str, Any]] = [
    {"id": i, "name": name, "supercategory": "shape"}
    for i, name in enumerate(SHAPE_CLASSES[1:], start=1)
]


class SyntheticInstances(SyntheticShapes):
    """Circles, squares and triangles as instances; labels 1..3 (circle, square, triangle).

    Constructor options as :class:`~pixelseg.data.synthetic.SyntheticShapes` except
    ``transform``: augment with
    :class:`~pixelseg.data.instance_transforms.TransformedInstances`, which moves boxes and
    masks with the image. Sample ``i`` is a dict:

    - ``image`` float32 ``[3, H, W]`` in 0..1;
    - ``boxes`` float32 ``[N, 4]`` ``(x1, y1, x2, y2)`` tight around each visible mask
      (``x2`` = last column + 1); ``labels`` int64 ``[N]`` in 1..3;
    - ``masks`` uint8 ``[N, H, W]``: the part of each shape left visible after occlusion
      (a fully hidden shape is no instance); ``iscrowd`` int64 zeros; ``area`` float64 the
      mask's pixel count;
    - ``image_id`` ``i + 1`` (COCO ids start at 1), ``name`` ``shape_00042``, ``image_path``
      ``""``.

    Instances come in the order of :meth:`instance_target`. ``classes`` holds the foreground
    names only, as for the other instance sources; ``num_classes`` counts the background too,
    as torchvision detection models do.
    """

    classes: list[str] = SHAPE_CLASSES[1:]
    categories: list[dict[str, Any]] = SHAPE_CATEGORIES

    def __init__(
        self,
        num_samples: int,
        size: int | tuple[int, int] = 128,
        seed: int = 0,
        min_shapes: int = 1,
        max_shapes: int = 4,
        min_radius: float = 0.12,
        max_radius: float = 0.22,
        noise_std: float = 8.0,
        rotation: float = 0.0,
    ) -> None:
        super().__init__(
            num_samples,
            size=size,
            seed=seed,
            transform=None,
            min_shapes=min_shapes,
            max_shapes=max_shapes,
            min_radius=min_radius,
            max_radius=max_radius,
            noise_std=noise_std,
            rotation=rotation,
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        # One render gives both the image and the owner map (generate + instance_target would
        # draw the scene twice).
        scene = self._render(index)
        # owner is -1 on the background and the drawing index of the visible shape elsewhere;
        # +1 makes it an id mask whose ids come out in increasing order, as instance_target's.
        masks, boxes = instances_from_id_mask(scene.owner.astype(np.int64) + 1)
        present = np.unique(scene.owner)
        labels = np.asarray(scene.labels, dtype=np.int64)[present[present >= 0]]
        count = len(masks)
        return {
            "image": to_tensors(scene.image)[0],
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(labels),
            "masks": torch.from_numpy(masks),
            "iscrowd": torch.zeros(count, dtype=torch.int64),
            "area": torch.from_numpy(masks.reshape(count, -1).sum(axis=1).astype(np.float64)),
            "image_id": index + 1,
            "name": f"shape_{index:05d}",
            "image_path": "",
        }

    def __repr__(self) -> str:
        return f"SyntheticInstances({self.num_samples} samples, size={self.size}, seed={self.seed})"
