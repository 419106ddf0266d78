"""Synthetic shapes as a panoptic source: the embedded default for the panoptic task.

The same scenes as :class:`~pixelseg.data.synthetic_instances.SyntheticInstances` (sample
``i`` depends only on ``(seed, i)``, no files) with the background textures as stuff: things
are the shapes (circle, square, triangle: category ids 1-3), stuff the two textures (stripes,
blotches: ids 4-5), as :data:`~pixelseg.data.synthetic.PANOPTIC_CATEGORIES` lists them. The
panoptic map and segments are :meth:`~pixelseg.data.synthetic.SyntheticShapes.instance_target`'s;
the sample is built from them by :func:`~pixelseg.data.panoptic_sample.panoptic_targets`
like every panoptic source's.
"""

from __future__ import annotations

from typing import Any

from pixelseg.data.panoptic_sample import PanopticCategories, panoptic_targets
from pixelseg.data.synthetic import PANOPTIC_CATEGORIES
from pixelseg.data.synthetic_instances import SyntheticInstances
from pixelseg.data.transforms import to_tensors

__all__ = ["SyntheticPanoptic"]

_CATEGORIES = PanopticCategories.from_list(PANOPTIC_CATEGORIES, "PANOPTIC_CATEGORIES")


class SyntheticPanoptic(SyntheticInstances):
    """Circles, squares and triangles (things) on stripes and blotches (stuff).

    Constructor options as :class:`~pixelseg.data.synthetic_instances.SyntheticInstances`;
    augment with :class:`~pixelseg.data.panoptic_transforms.TransformedPanoptic`. Sample ``i``
    is the panoptic sample of :mod:`pixelseg.data.panoptic_sample`: the instance keys equal
    ``SyntheticInstances``' sample ``i`` (labels 1..3 = category ids), ``semantic`` is 0 on
    shapes, 1 stripes, 2 blotches (never VOID: every pixel is labelled), ``panoptic`` numbers
    the shapes ``1..N`` then the textures present, ``image_id`` ``i + 1``, ``name``
    ``shape_00042``, ``image_path`` ``""``.
    """

    categories: list[dict[str, Any]] = _CATEGORIES.categories
    thing_category_ids: list[int] = _CATEGORIES.thing_category_ids
    stuff_category_ids: list[int] = _CATEGORIES.stuff_category_ids
    classes: list[str] = _CATEGORIES.classes
    stuff_classes: list[str] = _CATEGORIES.stuff_classes

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene = self._render(index)  # one render for the image and the targets
        target = self._targets(scene)
        name = f"shape_{index:05d}"
        sample = panoptic_targets(
            target["panoptic"].numpy(), target["segments_info"], _CATEGORIES, where=name
        )
        return {
            "image": to_tensors(scene.image)[0],
            **sample,
            "image_id": index + 1,
            "name": name,
            "image_path": "",
        }

    def __repr__(self) -> str:
        return f"SyntheticPanoptic({self.num_samples} samples, size={self.size}, seed={self.seed})"
