"""The disk cache of preprocessed cases: exact round trip read back memory-mapped, keys that
never serve a stale entry, atomic writes, and damaged entries detected (naming the file) and
rebuilt."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from pixelseg.errors import NonFiniteError
from pixelseg.medical.case_cache import (
    CACHE_FORMAT_VERSION,
    CaseCache,
    _atomic_write,
    cache_key,
    file_fingerprint,
)
from pixelseg.medical.patches import class_locations


def _case(seed: int = 0, high: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(1, 6, 7, 8)).astype(np.float32)
    label = rng.integers(0, high + 1, size=(6, 7, 8)).astype(np.int64)
    return image, label


def test_a_case_round_trips_exactly_as_read_only_memmaps(tmp_path):
    cache = CaseCache(tmp_path / "cache")
    image, label = _case()
    cache.write("lung_001", "k1", image, label, {"spacing": [2.5, 0.5, 0.5]})
    entry = cache.read("lung_001", "k1")
    assert entry is not None
    assert isinstance(entry.image, np.memmap) and isinstance(entry.label, np.memmap)
    assert not entry.image.flags.writeable
    assert entry.image.dtype == np.float32 and np.array_equal(entry.image, image)
    assert entry.label.dtype == np.uint8 and np.array_equal(entry.label, label)
    assert entry.meta == {"spacing": [2.5, 0.5, 0.5]}
    assert entry.image_min == float(image.min()) and entry.label_max == 2
    expected = class_locations(label)
    assert sorted(entry.locations) == sorted(expected) == [1, 2]
    for value in expected:
        assert np.array_equal(entry.locations[value], expected[value])
    in_memory = cache.read("lung_001", "k1", mmap=False)
    assert not isinstance(in_memory.image, np.memmap) and in_memory.image.flags.writeable
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "lung_001.k1.image.npy", "lung_001.k1.json", "lung_001.k1.label.npy"]  # fmt: skip


def test_label_dtype_widens_only_when_the_values_need_it(tmp_path):
    cache = CaseCache(tmp_path)
    image, label = _case()
    label[0, 0, 0] = 300
    cache.write("wide", "k", image, label, {})
    entry = cache.read("wide", "k")
    assert entry.label.dtype == np.int16 and np.array_equal(entry.label, label)
    cache.write("none", "k", image, None, {})
    assert cache.read("none", "k").label is None


def test_the_key_hashes_fields_and_format_and_fingerprints_see_a_rewrite(tmp_path):
    a = cache_key({"source": {"path": "/x", "size": 1}, "preprocessing": {"window": "lung"}})
    assert a == cache_key(
        {"preprocessing": {"window": "lung"}, "source": {"path": "/x", "size": 1}}
    )
    assert a != cache_key(
        {"source": {"path": "/x", "size": 1}, "preprocessing": {"window": "soft"}}
    )
    assert len(a) == 16 and CACHE_FORMAT_VERSION >= 1
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(b"one")
    before = file_fingerprint(path)
    path.write_bytes(b"other")
    os.utime(path, ns=(before["mtime_ns"] + 10**9, before["mtime_ns"] + 10**9))
    after = file_fingerprint(path)
    assert before["path"] == after["path"] == str(path.resolve())
    assert (before["size"], after["size"]) == (3, 5) and after["mtime_ns"] != before["mtime_ns"]


def test_another_key_never_reads_an_entry(tmp_path):
    cache = CaseCache(tmp_path)
    image, label = _case()
    cache.write("c", "old", image, label, {})
    assert cache.read("c", "new") is None
    # A JSON whose recorded key disagrees with its name (copied by hand) is refused too.
    (tmp_path / "c.old.json").rename(tmp_path / "c.new.json")
    assert cache.read("c", "new") is None


def test_a_truncated_array_is_logged_by_name_and_rebuilt(tmp_path, caplog):
    cache = CaseCache(tmp_path)
    image, label = _case()
    cache.write("c", "k", image, label, {})
    image_path = cache.paths("c", "k")[0]
    with open(image_path, "r+b") as handle:
        handle.truncate(image_path.stat().st_size // 2)
    calls = []

    def build():
        calls.append(1)
        return image, label, {}

    with caplog.at_level(logging.WARNING, logger="pixelseg.medical.case_cache"):
        entry, built = cache.get_or_build("c", "k", build)
    assert built and calls == [1]
    assert str(image_path) in caplog.text and "rebuilding case 'c'" in caplog.text
    assert np.array_equal(entry.image, image)
    _, built_again = cache.get_or_build("c", "k", build)
    assert not built_again and calls == [1]


def test_arrays_without_their_json_are_logged_and_rebuilt(tmp_path, caplog):
    cache = CaseCache(tmp_path)
    image, label = _case()
    cache.write("c", "k", image, label, {})
    json_path = cache.paths("c", "k")[2]
    json_path.unlink()  # what a run killed between the arrays and the JSON leaves
    with caplog.at_level(logging.WARNING, logger="pixelseg.medical.case_cache"):
        entry, built = cache.get_or_build("c", "k", lambda: (image, label, {"n": 1}))
    assert built and entry.meta == {"n": 1} and str(json_path) in caplog.text


def test_a_write_that_dies_leaves_neither_the_file_nor_a_temporary(tmp_path):
    target = tmp_path / "c.k.image.npy"

    def dies_half_way(handle):
        handle.write(b"\x93NUMPY half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _atomic_write(target, dies_half_way)
    assert list(tmp_path.iterdir()) == []


def test_a_non_finite_image_is_refused_naming_the_case(tmp_path):
    image, label = _case()
    image[0, 1, 2, 3] = np.nan
    with pytest.raises(NonFiniteError, match="'bad'"):
        CaseCache(tmp_path).write("bad", "k", image, label, {})
    assert list(tmp_path.iterdir()) == []
