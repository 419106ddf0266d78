"""Worst-case selection, the streaming WorstK keeper, error maps, and the gallery PNG."""

from __future__ import annotations

import gc
import math
import random
import weakref

import numpy as np
import pytest
from PIL import Image

from pixelseg.errors import InvalidInputError
from pixelseg.inference import IGNORE_COLOR
from pixelseg.reports import (
    WorstK,
    error_map,
    select_worst_samples,
    worst_cases_gallery,
    worst_k_indices,
)
from pixelseg.reports.gallery import CORRECT_COLOR, ERROR_COLOR

NAN = float("nan")


def test_worst_k_indices_nan_last_and_stable():
    scores = [0.5, NAN, 0.1, 0.9, 0.1, NAN]
    assert worst_k_indices(scores, 3) == [2, 4, 0]
    assert worst_k_indices(scores, 10) == [2, 4, 0, 3, 1, 5]
    assert worst_k_indices(scores, 0) == []


class Sample:
    """Weak-referenceable stand-in for a big sample dict."""

    def __init__(self, name: str) -> None:
        self.name = name


def test_worstk_matches_sorting_and_bounds_memory():
    rng = random.Random(0)
    scores = [rng.choice([rng.random(), round(rng.random(), 1), NAN]) for _ in range(500)]
    keeper = WorstK(7)
    refs = []
    for i, score in enumerate(scores):
        sample = Sample(f"img{i}")
        refs.append(weakref.ref(sample))
        keeper.add(score, sample)
        assert len(keeper) <= 7
        del sample
    gc.collect()
    alive = [r for r in refs if r() is not None]
    assert len(alive) == 7  # evicted samples are released
    expected = worst_k_indices(scores, 7)
    kept = keeper.items()
    assert [s.name for _, s in kept] == [f"img{i}" for i in expected]
    assert [v for v, _ in kept] == [scores[i] for i in expected]


def test_worstk_nan_fills_only_when_needed():
    keeper = WorstK(3)
    keeper.add(NAN, "a")
    keeper.add(0.4, "b")
    assert [s for _, s in keeper.items()] == ["b", "a"]
    keeper.add(0.9, "c")
    keeper.add(0.2, "d")  # evicts the NaN
    assert [s for _, s in keeper.items()] == ["d", "b", "c"]
    assert keeper.would_keep(0.5) and not keeper.would_keep(0.95) and not keeper.would_keep(NAN)
    assert not keeper.add(0.9, "tie")  # ties keep the earlier sample
    with pytest.raises(InvalidInputError, match="k >= 1"):
        WorstK(0)


def test_error_map_colours():
    target = np.array([[0, 1, 2], [255, 1, 0]])
    prediction = np.array([[0, 2, 2], [1, 1, 1]])
    out = error_map(target, prediction, ignore_index=255)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    assert tuple(out[0, 0]) == CORRECT_COLOR
    assert tuple(out[0, 1]) == ERROR_COLOR == (255, 0, 0)
    assert tuple(out[1, 0]) == IGNORE_COLOR  # ignored wins over "wrong"
    assert tuple(out[1, 2]) == ERROR_COLOR
    without_ignore = error_map(target, prediction)
    assert tuple(without_ignore[1, 0]) == ERROR_COLOR
    with pytest.raises(InvalidInputError, match="same shape"):
        error_map(target, prediction[:, :2])


def make_samples(count: int, size=(24, 32)):
    rng = np.random.default_rng(0)
    samples = []
    for i in range(count):
        target = rng.integers(0, 4, size)
        prediction = np.where(rng.random(size) < 0.8, target, rng.integers(0, 4, size))
        target[:2] = 255
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        score = NAN if i == 1 else float((prediction == target).mean())
        samples.append(
            {
                "image": image,
                "target": target,
                "prediction": prediction,
                "name": f"s{i}",
                "score": score,
            }
        )
    return samples


def test_select_worst_samples_order():
    samples = make_samples(6)
    scores = [s["score"] for s in samples]
    finite = sorted(
        (v, s["name"]) for v, s in zip(scores, samples, strict=True) if not math.isnan(v)
    )
    chosen = [s["name"] for s in select_worst_samples(samples, 6)]
    assert chosen == [name for _, name in finite] + ["s1"]
    assert [s["name"] for s in select_worst_samples(samples, 2)] == [n for _, n in finite[:2]]


def test_gallery_png(tmp_path):
    samples = make_samples(5)
    path = worst_cases_gallery(
        samples,
        None,
        tmp_path / "gallery.png",
        k=3,
        ignore_index=255,
        class_names=["a", "b", "c", "d"],
    )
    with Image.open(path) as img:
        assert img.format == "PNG"
        width, height = img.size
    assert width == 1200  # 4 panels of 3 inches at 100 dpi
    assert height == 3 * 225 + 60  # 3 rows of 3 * (24 / 32) inches plus the legend strip
    with pytest.raises(InvalidInputError, match="lacks keys"):
        worst_cases_gallery([{"image": samples[0]["image"]}], None, tmp_path / "x.png")
    with pytest.raises(InvalidInputError, match="no samples"):
        worst_cases_gallery([], None, tmp_path / "x.png")
