"""Import heavy optional libraries on first use, with an error that names the extra to install.

pydicom, nibabel and scipy are imported inside the functions that need them, so ``import
pixelseg`` stays light; when one is missing the user learns which extra brings it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from pixelseg.errors import PixelsegError

__all__ = ["MissingDependencyError", "import_optional"]


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
