"""Writing a data source as a dataset other tools read (``pixelseg data export``).

A source is a name plus its own options (:data:`EXPORT_SOURCES`): ``shapes``
(:class:`~pixelseg.data.SyntheticInstances`: ``num``, ``size``, ``seed``) and ``pennfudan``
(:class:`~pixelseg.data.PennFudan`: ``root``, ``split``). Formats (:data:`EXPORT_FORMATS`):
``coco``, written by :func:`~pixelseg.data.write_coco` (``instances.json`` + ``images/``,
masks as lossless RLE), and ``coco_panoptic``, written by
:func:`~pixelseg.data.write_coco_panoptic` (``panoptic.json`` + ``panoptic/`` PNGs +
``images/``) from the source's panoptic form (``shapes``:
:class:`~pixelseg.data.SyntheticPanoptic`, the textures as stuff). The datasets are imported
when an export runs, so the CLI can read the names here without loading torch.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pixelseg.errors import InvalidInputError, unknown_choice

__all__ = [
    "EXPORT_FORMATS",
    "EXPORT_SOURCES",
    "PANOPTIC_EXPORT_SOURCES",
    "export_dataset",
    "instance_source",
    "panoptic_source",
]

logger = logging.getLogger(__name__)

#: Formats :func:`export_dataset` writes.
EXPORT_FORMATS: tuple[str, ...] = ("coco", "coco_panoptic")


def _check_num(num: Any) -> None:
    if not isinstance(num, int) or num < 1:
        raise InvalidInputError(f"num must be a positive number of images, got {num!r}")


def _shapes(*, num: int = 100, size: int = 128, seed: int = 0) -> Any:
    """``num`` synthetic images of ``size`` x ``size`` pixels, scenes fixed by ``seed``."""
    from pixelseg.data import SyntheticInstances

    _check_num(num)
    return SyntheticInstances(num, size=size, seed=seed)


def _panoptic_shapes(*, num: int = 100, size: int = 128, seed: int = 0) -> Any:
    """The scenes of :func:`_shapes` with the background textures as stuff."""
    from pixelseg.data import SyntheticPanoptic

    _check_num(num)
    return SyntheticPanoptic(num, size=size, seed=seed)


def _pennfudan(*, root: str | Path, split: str = "all") -> Any:
    """Penn-Fudan under ``root`` (``PNGImages``, ``PedMasks``); ``split`` all, train or val."""
    from pixelseg.data import PennFudan

    return PennFudan(root, split=split)


_SOURCES: dict[str, Callable[..., Any]] = {"pennfudan": _pennfudan, "shapes": _shapes}

_PANOPTIC_SOURCES: dict[str, Callable[..., Any]] = {"shapes": _panoptic_shapes}

#: Instance sources by name.
EXPORT_SOURCES: tuple[str, ...] = tuple(sorted(_SOURCES))
#: Sources with a panoptic form (``coco_panoptic`` exports).
PANOPTIC_EXPORT_SOURCES: tuple[str, ...] = tuple(sorted(_PANOPTIC_SOURCES))


def instance_source(source: str, **options: Any) -> Any:
    """The instance dataset named ``source`` built with its ``options``; an unknown name, an
    option the source does not take or a missing required one is an InvalidInputError
    naming it and the valid ones."""
    if source not in _SOURCES:
        raise unknown_choice("data source", source, EXPORT_SOURCES)
    return _build(source, _SOURCES[source], options)


def panoptic_source(source: str, **options: Any) -> Any:
    """The panoptic dataset named ``source`` (see :data:`PANOPTIC_EXPORT_SOURCES`) built with
    its ``options``; errors as :func:`instance_source`."""
    if source not in _PANOPTIC_SOURCES:
        if source in _SOURCES:
            raise InvalidInputError(
                f"data source {source!r} has no panoptic form (it labels no stuff); sources "
                f"that export as coco_panoptic: {', '.join(PANOPTIC_EXPORT_SOURCES)}"
            )
        raise unknown_choice("data source", source, EXPORT_SOURCES)
    return _build(source, _PANOPTIC_SOURCES[source], options)


def _build(source: str, builder: Callable[..., Any], options: dict[str, Any]) -> Any:
    params = inspect.signature(builder).parameters
    for key in options:
        if key not in params:
            raise InvalidInputError(
                f"option {key!r} does not apply to data source {source!r}; its options: "
                f"{', '.join(params)}"
            )
    missing = [k for k, v in params.items() if v.default is inspect.Parameter.empty]
    missing = [k for k in missing if k not in options]
    if missing:
        raise InvalidInputError(f"data source {source!r} needs {', '.join(missing)}")
    return builder(**options)


def _categories(dataset: Any) -> list[Any]:
    """COCO categories of ``dataset``: its own when it has them, else its class names."""
    categories = getattr(dataset, "categories", None)
    return list(categories) if categories else list(dataset.classes)


def export_dataset(
    source: str,
    out: str | Path,
    fmt: str = "coco",
    *,
    overwrite: bool = False,
    **options: Any,
) -> Path:
    """Write source ``source`` (built with ``options``, see :func:`instance_source` and
    :func:`panoptic_source`) to folder ``out`` in format ``fmt``; returns the annotation file
    written (``out/instances.json`` for ``coco``, ``out/panoptic.json`` with PNGs in
    ``out/panoptic`` for ``coco_panoptic``; images in ``out/images``). An existing annotation
    file is replaced only with ``overwrite``."""
    if fmt not in EXPORT_FORMATS:
        raise unknown_choice("export format", fmt, EXPORT_FORMATS)
    if fmt == "coco_panoptic":
        dataset = panoptic_source(source, **options)
    else:
        dataset = instance_source(source, **options)
    from pixelseg.data import write_coco, write_coco_panoptic

    logger.info("exporting %d %s images to %s (%s)", len(dataset), source, out, fmt)
    samples = (dataset[i] for i in range(len(dataset)))
    if fmt == "coco_panoptic":
        return write_coco_panoptic(samples, out, dataset.categories, overwrite=overwrite)
    return write_coco(samples, out, _categories(dataset), overwrite=overwrite)
