"""Fixtures shared by the data tests: writing tiny image/mask files, finding real data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
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


def _check_panoptic_sample(sample: dict, thing_ids: list[int], stuff_ids: list[int]) -> None:
    """Assert a panoptic sample agrees with itself, measured independently of the library:
    segments_info lists exactly the ids of the panoptic map with their pixel areas and tight
    boxes; semantic is 0 on things, the stuff class on stuff, 255 on VOID; instance ``k`` is
    the ``k``-th thing segment (mask, label, crowd flag, tight box, area)."""
    pan, sem = sample["panoptic"].numpy(), sample["semantic"].numpy()
    assert pan.dtype == np.int64 and sem.dtype == np.int64
    height, width = pan.shape
    assert tuple(sample["image"].shape) == (3, height, width)
    segments = sample["segments_info"]
    assert set(np.unique(pan).tolist()) - {0} == {s["id"] for s in segments}
    expected = np.full((height, width), 255, dtype=np.int64)
    things = []
    for seg in segments:
        region = pan == seg["id"]
        rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
        x, y = int(cols[0]), int(rows[0])
        assert seg["area"] == int(region.sum()), seg
        assert seg["bbox"] == [x, y, int(cols[-1]) + 1 - x, int(rows[-1]) + 1 - y], seg
        assert seg["isthing"] == int(seg["category_id"] in thing_ids), seg
        if seg["isthing"]:
            expected[region] = 0
            things.append((seg, region, [x, y, int(cols[-1]) + 1, int(rows[-1]) + 1]))
        else:
            expected[region] = stuff_ids.index(seg["category_id"]) + 1
    np.testing.assert_array_equal(sem, expected)
    n = len(things)
    assert sample["masks"].dtype == torch.uint8 and tuple(sample["masks"].shape) == (
        n,
        height,
        width,
    )
    assert sample["boxes"].dtype == torch.float32 and tuple(sample["boxes"].shape) == (n, 4)
    assert sample["labels"].dtype == torch.int64 and sample["iscrowd"].dtype == torch.int64
    assert sample["area"].dtype == torch.float64
    for k, (seg, region, box) in enumerate(things):
        np.testing.assert_array_equal(sample["masks"][k].numpy(), region.astype(np.uint8))
        assert int(sample["labels"][k]) == thing_ids.index(seg["category_id"]) + 1
        assert int(sample["iscrowd"][k]) == seg["iscrowd"]
        assert sample["boxes"][k].tolist() == box
        assert float(sample["area"][k]) == seg["area"]


@pytest.fixture
def check_panoptic_sample() -> Callable[[dict, list[int], list[int]], None]:
    return _check_panoptic_sample
