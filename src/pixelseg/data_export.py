"""Writing an instance source as a dataset other tools read (``pixelseg data export``).

A source is a name plus its own options (:data:`EXPORT_SOURCES`): ``shapes``
(:class:`~pixelseg.data.SyntheticInstances`: ``num``, ``size``, ``seed``) and ``pennfudan``
(:class:`~pixelseg.data.PennFudan`: ``root``, ``split``). Formats (:data:`EXPORT_FORMATS`):
``coco``, written by :func:`~pixelseg.data.write_coco` (``instances.json`` + ``images/``,
masks as lossless RLE). The datasets are imported when an export runs, so the CLI can read
the names here without loading torch.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pixelseg.errors import InvalidInputError, unknown_choice

__all__ = ["EXPORT_FORMATS", "EXPORT_SOURCES", "export_dataset", "instance_source"]

logger = logging.getLogger(__name__)

#: Formats :func:`export_dataset` writes.
EXPORT_FORMATS: tuple[str, ...] = ("coco",)


def _shapes(*, num: int = 100, size: int = 128, seed: int = 0) -> Any:
    """``num`` synthetic images of ``size`` x ``size`` pixels, scenes fixed by ``seed``."""
    from pixelseg.data import SyntheticInstances

    if not isinstance(num, int) or num < 1:
        raise InvalidInputError(f"num must be a positive number of images, got {num!r}")
    return SyntheticInstances(num, size=size, seed=seed)


def _pennfudan(*, root: str | Path, split: str = "all") -> Any:
    """Penn-Fudan under ``root`` (``PNGImages``, ``PedMasks``); ``split`` all, train or val."""
    from pixelseg.data import PennFudan

    return PennFudan(root, split=split)


_SOURCES: dict[str, Callable[..., Any]] = {"pennfudan": _pennfudan, "shapes": _shapes}

#: Instance sources by name.
EXPORT_SOURCES: tuple[str, ...] = tuple(sorted(_SOURCES))


def instance_source(source: str, **options: Any) -> Any:
    """The instance dataset named ``source`` built with its ``options``; an unknown name, an
    option the source does not take or a missing required one is an InvalidInputError
    naming it and the valid ones."""
    if source not in _SOURCES:
        raise unknown_choice("data source", source, EXPORT_SOURCES)
    builder = _SOURCES[source]
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
    """Write instance source ``source`` (built with ``options``, see :func:`instance_source`)
    to folder ``out`` in format ``fmt``; returns the annotation file written
    (``out/instances.json`` for COCO, images in ``out/images``). An existing annotation file
    is replaced only with ``overwrite``."""
    if fmt not in EXPORT_FORMATS:
        raise unknown_choice("export format", fmt, EXPORT_FORMATS)
    dataset = instance_source(source, **options)
    from pixelseg.data import write_coco

    logger.info("exporting %d %s images to %s (%s)", len(dataset), source, out, fmt)
    samples = (dataset[i] for i in range(len(dataset)))
    return write_coco(samples, out, _categories(dataset), overwrite=overwrite)
