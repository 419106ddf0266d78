"""Fixtures shared by the data tests: writing tiny image/mask files, finding real data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _save(path: Path, array: np.ndarray, palette: list[int] | None = None) -> Path:
    """Write ``array`` (uint8 HxW, HxWx3, or uint16 HxW) to ``path``; a P-mode PNG if
    ``palette`` (flat RGB list) is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if palette is not None:
        h, w = array.shape
        im = Image.frombytes("P", (w, h), np.ascontiguousarray(array, dtype=np.uint8).tobytes())
        im.putpalette(palette)
    else:
        im = Image.fromarray(array)
    im.save(path)
    return path


@pytest.fixture
def save_image() -> Callable[..., Path]:
    return _save


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def shared_dir() -> Callable[[str], Path]:
    """Return a lookup of a real data set under ../shared/data that skips when it is absent."""

    def find(name: str) -> Path:
        path = SHARED_DATA / name
        if not path.is_dir():
            pytest.skip(f"real data {path} not present (see ../shared/data/README.md)")
        return path

    return find
