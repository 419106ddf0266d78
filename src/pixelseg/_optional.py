"""Import heavy optional libraries on first use, with an error that names the extra to install.

pydicom, nibabel and scipy are imported inside the functions that need them, so ``import
pixelseg`` stays light; when one is missing the user learns which extra brings it.
albumentations (a core dependency, but with scipy and OpenCV behind it about a fifth of the
import time of ``pixelseg.workflows``) is a :func:`lazy_import`, loaded when an augmentation
is first built, so processes that never augment (predict, serve, evaluation, DDP ranks on
plain data) do not pay for it.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Any

from pixelseg.errors import PixelsegError

__all__ = ["MissingDependencyError", "import_optional", "lazy_import"]


class MissingDependencyError(PixelsegError, ImportError):
    """An optional library is not installed; the message names the pixelseg extra."""


def import_optional(module: str, extra: str) -> ModuleType:
    """Import ``module`` (e.g. ``"scipy.ndimage"``) or raise naming ``pixelseg[extra]``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.split(".")[0]
        raise MissingDependencyError(
            f"{module} is needed here but {package} is not installed: "
            f"pip install 'pixelseg[{extra}]'"
        ) from exc


class _Deferred:
    """Stands for a module until an attribute is first read. Not a module in
    ``sys.modules`` (as importlib's ``LazyLoader`` would put there): libraries that scan
    ``sys.modules`` (``inspect.getmodule``, torch) would load it at once."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self._name), attribute)

    def __repr__(self) -> str:
        return f"<deferred module {self._name!r}>"


def lazy_import(name: str) -> Any:
    """Module ``name``, imported when one of its attributes is first read."""
    if importlib.util.find_spec(name) is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    return _Deferred(name)
