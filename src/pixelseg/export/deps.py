"""The optional deploy libraries (onnx, onnxruntime, onnxscript), imported when first needed.

``import pixelseg`` never loads them; a missing one is an error naming the extra that
installs it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from pixelseg.errors import PixelsegError

__all__ = ["import_deploy"]


def import_deploy(name: str) -> ModuleType:
    """``import name`` for one of the deploy extra's libraries, or a one-line error."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise PixelsegError(
            f"{name} is not installed ({error}); install the deploy extra: "
            "pip install 'pixelseg[deploy]'"
        ) from None
