"""The volumetric task's cases through the disk cache (``volumetric.cache_dir``).

Each case is preprocessed once (:func:`pixelseg.tasks.volumetric_data.prepare_case`) and
stored by :class:`pixelseg.medical.case_cache.CaseCache` under a key of its source (files'
path, size and modification time, or a phantom's settings and seed), the preprocessing
settings and the cache format version. Training reads the cases memory-mapped, each patch
copying only its voxels; validation reads one whole case into memory when asked. The arrays
are the very ones the in-memory path holds (float32 images, labels that convert back to the
same int64 values) and the class locations are :func:`class_locations`' own, so the patches
drawn for a seed, and the scores, are identical with or without the cache.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pixelseg.errors import ConfigError, InvalidInputError
from pixelseg.medical.case_cache import CachedCase, CaseCache, cache_key
from pixelseg.tasks.volumetric_data import CaseRecipe, PreparedCase, Preprocessing

__all__ = ["VolumetricCaseCache"]

log = logging.getLogger(__name__)


def _arrays(case: PreparedCase) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """What :meth:`CaseCache.write` stores of a prepared case: the arrays and the geometry."""
    meta = {
        "spacing": list(case.spacing),
        "affine": np.asarray(case.affine, dtype=np.float64).tolist(),
        "source_shape": [int(n) for n in case.source_shape],
        "source_affine": np.asarray(case.source_affine, dtype=np.float64).tolist(),
    }
    return case.image, case.label, meta


def _prepared(entry: CachedCase) -> PreparedCase:
    """A cached case as :func:`prepare_case` returns it (label int64, geometry as arrays);
    JSON floats round-trip float64 exactly, so the geometry is the same to the bit."""
    meta = entry.meta
    return PreparedCase(
        entry.name,
        entry.image,
        entry.label.astype(np.int64) if entry.label is not None else None,
        tuple(float(s) for s in meta["spacing"]),  # type: ignore[arg-type]
        np.asarray(meta["affine"], dtype=np.float64),
        tuple(int(n) for n in meta["source_shape"]),  # type: ignore[arg-type]
        np.asarray(meta["source_affine"], dtype=np.float64),
    )


class VolumetricCaseCache:
    """Prepared cases in ``folder`` for one set of preprocessing ``settings``."""

    def __init__(self, folder: str | os.PathLike[str], settings: Preprocessing) -> None:
        try:
            self.cache = CaseCache(folder)
        except (InvalidInputError, OSError) as exc:
            raise ConfigError(f"volumetric.cache_dir {str(folder)!r}: {exc}") from exc
        self.settings = settings

    def key(self, recipe: CaseRecipe) -> str:
        """The entry's key: the case's name and source, and the preprocessing settings."""
        return cache_key(
            {"name": recipe.name, "source": recipe.source, "preprocessing": self.settings.to_dict()}
        )

    def get(self, recipe: CaseRecipe, *, mmap: bool) -> tuple[CachedCase, bool]:
        """The cached case (built and written first if needed), and whether it was built."""
        return self.cache.get_or_build(
            recipe.name, self.key(recipe), lambda: _arrays(recipe.build()), mmap=mmap
        )

    def training_cases(self, recipes: Sequence[CaseRecipe]) -> list[CachedCase]:
        """Every training case, memory-mapped; only one case is ever in memory while the
        missing ones are prepared."""
        entries, built = [], 0
        for recipe in recipes:
            entry, was_built = self.get(recipe, mmap=True)
            entries.append(entry)
            built += was_built
        log.info(
            "case cache %s: %d training cases read, %d prepared and written",
            self.cache.folder,
            len(recipes) - built,
            built,
        )
        return entries

    def loader(self, recipes: Sequence[CaseRecipe]) -> Callable[[int], PreparedCase]:
        """``load(i)``: case ``i`` of ``recipes`` read whole into memory (validation scores
        whole cases), prepared and cached on its first use."""
        recipes = list(recipes)

        def load(index: int) -> PreparedCase:
            entry, _ = self.get(recipes[index], mmap=False)
            return _prepared(entry)

        return load
